//! The file as a whole: magic, version and counts, then the metadata, the alignment it sets, the
//! tensor table and the data section's start, each checked as it is read ([`parse`]).
//!
//! ```text
//! "GGUF"  u32 version  u64 tensor_count  u64 metadata_count
//! metadata_count key/value entries
//! tensor_count tensor table entries
//! zero padding to a multiple of the alignment
//! data section: each tensor at its (aligned) offset from here
//! ```

use std::collections::HashMap;
use std::path::Path;

use super::error::GgufError;
use super::metadata::{read_metadata, MetaValue};
use super::reader::Reader;
use super::tensors::{read_table, TensorInfo};

/// The first four bytes of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The versions this reader reads (version 1 counted items in 32 bits; 2 and 3 share a layout,
/// 3 only allowing big-endian files, which this reader rejects by their version bytes).
pub const SUPPORTED_VERSIONS: [u32; 2] = [2, 3];
/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The alignment when the file does not set one.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Everything [`parse`] reads and checks.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub data_start: u64,
    pub metadata: Vec<(String, MetaValue)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
}

/// Parses and checks the whole layout of `data` (the file at `path`, named in errors).
pub(crate) fn parse(data: &[u8], path: &Path) -> Result<Parsed, GgufError> {
    let mut r = Reader::new(data, path);
    // A short file that starts like the magic is truncated; anything else is not a GGUF file.
    let magic = data.get(..MAGIC.len()).unwrap_or(data);
    if !MAGIC.starts_with(magic) {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: magic.escape_ascii().to_string(),
        });
    }
    r.take(MAGIC.len() as u64, || "the magic bytes".into())?;
    let version = r.u32(|| "the version".into())?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let tensor_count = r.u64(|| "the tensor count".into())?;
    let metadata_count = r.u64(|| "the metadata entry count".into())?;

    let metadata = read_metadata(&mut r, metadata_count)?;
    let key_index = index(metadata.iter().map(|(k, _)| k), |key| {
        GgufError::DuplicateKey {
            path: path.to_path_buf(),
            key: key.to_owned(),
        }
    })?;
    let alignment = alignment(key_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1), path)?;

    let table = read_table(&mut r, tensor_count)?;
    let tensor_index = index(table.iter().map(|t| &t.name), |name| {
        GgufError::DuplicateTensor {
            path: path.to_path_buf(),
            name: name.to_owned(),
        }
    })?;
    // The table ends inside the file and the alignment is at most 2^31, so this cannot overflow.
    let data_start = r.pos().div_ceil(alignment) * alignment;
    let tensors = table
        .into_iter()
        .map(|t| t.check(&r, alignment, data_start))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Parsed {
        version,
        alignment,
        data_start,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Name -> position, or the error `duplicate` makes for the first name seen twice.
fn index<'a>(
    names: impl ExactSizeIterator<Item = &'a String>,
    duplicate: impl FnOnce(&str) -> GgufError,
) -> Result<HashMap<String, usize>, GgufError> {
    let mut index = HashMap::with_capacity(names.len());
    for (i, name) in names.enumerate() {
        if index.insert(name.clone(), i).is_some() {
            return Err(duplicate(name));
        }
    }
    Ok(index)
}

/// The alignment the file sets (any integer type is accepted; the spec says u32), or the default.
fn alignment(value: Option<&MetaValue>, path: &Path) -> Result<u64, GgufError> {
    let Some(value) = value else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_u64() {
        Some(a) if a.is_power_of_two() && a <= 1 << 31 => Ok(a),
        found => Err(GgufError::BadAlignment {
            path: path.to_path_buf(),
            found: found.map_or_else(
                || match value.as_i64() {
                    Some(v) => v.to_string(),
                    None => format!("a {} value", value.value_type().name()),
                },
                |a| a.to_string(),
            ),
        }),
    }
}
