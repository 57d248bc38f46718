//! A GGUF file reader: [`GgufFile::open`] memory-maps a file, parses and checks its metadata and
//! tensor table, and hands out its tensors in place: [`GgufFile::matrix`] views a weight
//! matrix in its quantized blocks over the mapping (no copy), [`GgufFile::tensor_bytes`] gives
//! a tensor's raw data, [`GgufFile::tensor_f32`] the values of a dense (F32/F16/BF16) tensor
//! (converted exactly, by the dequantizer).
//!
//! Everything a file states is checked before it is used: reads stop at the end of the file,
//! counts are checked against the bytes left before anything is allocated for them, and every
//! tensor of a supported type is checked to lie inside the file when the file is opened. Tensors
//! of types hierdraft does not compute with do not stop a file from opening; asking for one
//! fails with an error naming it and its type. No input makes the reader panic.
//!
//! Keys, tensor names and string values must be UTF-8, as the GGUF spec says. A mapped file must
//! not be truncated or rewritten in place while it is open (as with any memory map).
//!
//! Layout: `cursor` (bounded reads) -> `reader` (reads with errors that name the field) ->
//! `metadata` and `tensors` (the two sections) -> `header` (the whole file) -> this module
//! (the public API).

mod cursor;
mod error;
mod header;
mod metadata;
mod reader;
mod tensors;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::dequant::dequantize_row;
use crate::ggml_type::GgmlType;
use crate::quant_matrix::{QuantMatrix, SharedBytes};

pub use error::GgufError;
pub use header::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, SUPPORTED_VERSIONS};
pub use metadata::{MetaArray, MetaType, MetaValue, StringList, MAX_ARRAY_NESTING};
pub use tensors::{TensorInfo, MAX_DIMS};

/// An open, checked GGUF file (see the module docs).
pub struct GgufFile {
    path: PathBuf,
    bytes: SharedBytes,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, MetaValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Maps the file at `path` and parses it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(GgufError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the map is read-only. Like every mmap-based reader, this relies on the file not
        // being changed or truncated in place while it is mapped (tools that write GGUF files
        // write new files).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_shared(path, Arc::new(map))
    }

    /// Parses GGUF bytes held elsewhere (a buffer, a mapping); `path` names them in errors.
    pub fn from_shared(
        path: impl Into<PathBuf>,
        bytes: SharedBytes,
    ) -> Result<GgufFile, GgufError> {
        let path = path.into();
        let parsed = header::parse((*bytes).as_ref(), &path)?;
        Ok(GgufFile {
            path,
            bytes,
            version: parsed.version,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
            metadata: parsed.metadata,
            key_index: parsed.key_index,
            tensors: parsed.tensors,
            tensor_index: parsed.tensor_index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data (`general.alignment`, 32 when the file does not set it).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts (tensor offsets count from here).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Length of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.data().len() as u64
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every tensor, in table order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw data of the tensor named `name` (its blocks, or its values for dense types).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let (info, _) = self.supported(name)?;
        Ok(self.data_of(info))
    }

    /// The 1-D or 2-D tensor named `name` as a `rows x cols` matrix (`rows = ne1`, `cols = ne0`;
    /// a 1-D tensor is one row) over the file's bytes, without a copy.
    pub fn matrix(&self, name: &str) -> Result<QuantMatrix, GgufError> {
        let (info, ty) = self.supported(name)?;
        let (rows, cols) = info.matrix_shape().ok_or_else(|| GgufError::NotAMatrix {
            path: self.path.clone(),
            name: name.to_owned(),
            dims: info.dims().to_vec(),
        })?;
        let too_large = || GgufError::TooLarge {
            path: self.path.clone(),
            name: name.to_owned(),
        };
        let rows = usize::try_from(rows).map_err(|_| too_large())?;
        let cols = usize::try_from(cols).map_err(|_| too_large())?;
        let start = usize::try_from(info.file_offset()).map_err(|_| too_large())?;
        QuantMatrix::new(ty, rows, cols, Arc::clone(&self.bytes), start).map_err(|source| {
            GgufError::Matrix {
                path: self.path.clone(),
                name: name.to_owned(),
                source,
            }
        })
    }

    /// The values of the F32, F16 or BF16 tensor named `name`, exactly, as `f32` (in file
    /// order: `ne0` varies fastest, i.e. row-major in [`TensorInfo::shape`] order).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let (info, ty) = self.supported(name)?;
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(GgufError::WrongType {
                path: self.path.clone(),
                name: name.to_owned(),
                ty: ty.name(),
                wanted: "only F32, F16 and BF16 tensors hold plain values",
            });
        }
        let bytes = self.data_of(info);
        // One value per block_bytes() bytes for these types.
        let mut values = vec![0f32; bytes.len() / ty.block_bytes()];
        dequantize_row(ty, bytes, &mut values).map_err(|source| GgufError::Kernel {
            path: self.path.clone(),
            name: name.to_owned(),
            source,
        })?;
        Ok(values)
    }

    fn data(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    /// The tensor and its type, or an error naming a missing tensor or an unsupported type.
    fn supported(&self, name: &str) -> Result<(&TensorInfo, GgmlType), GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            path: self.path.clone(),
            name: name.to_owned(),
        })?;
        let ty = info
            .ggml_type()
            .map_err(|e| GgufError::UnsupportedTensorType {
                path: self.path.clone(),
                name: name.to_owned(),
                type_id: e.id,
                ty: e.name,
                supported: e.supported,
            })?;
        Ok((info, ty))
    }

    /// The data of a tensor of a supported type: checked to lie in the file when it was parsed.
    fn data_of(&self, info: &TensorInfo) -> &[u8] {
        let start = info.file_offset() as usize;
        let len = info.nbytes().unwrap_or(0) as usize;
        &self.data()[start..start + len]
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}
