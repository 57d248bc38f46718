//! The tensor table: [`TensorInfo`] (one tensor's name, dims, type, offset and size) and its
//! parser and checks.
//!
//! An entry is the name, a `u32` dimension count, that many `u64` dims in ggml order (`ne0`,
//! the innermost, first), the `u32` ggml type id and the `u64` offset of the data from the start
//! of the data section. The table is read in two steps: [`read_table`] reads the raw entries,
//! then, once the data section's start is known, [`RawTensor::check`] validates each one.

use crate::ggml_type::{ggml_type_name, GgmlType, UnsupportedType};

use super::error::GgufError;
use super::reader::Reader;

/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: usize = 4;

/// One tensor of the file, as its table entry describes it (after the checks in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
    file_offset: u64,
    n_elements: u64,
    nbytes: Option<u64>,
}

impl TensorInfo {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions in ggml order: `dims()[0]` (`ne0`) is the innermost, contiguous one.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// Dimensions in torch/numpy order (the reverse of [`dims`](Self::dims)).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// The ggml type id the file stores.
    pub fn type_id(&self) -> u32 {
        self.type_id
    }

    /// ggml's name of the type (`"unknown"` for ids ggml does not define).
    pub fn type_name(&self) -> &'static str {
        ggml_type_name(self.type_id)
    }

    /// The type, when hierdraft supports it.
    pub fn ggml_type(&self) -> Result<GgmlType, UnsupportedType> {
        GgmlType::from_id(self.type_id)
    }

    /// Offset of the data from the start of the data section (as the file stores it).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Offset of the data from the start of the file.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Number of values (the product of the dims).
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Bytes of data, known for the types hierdraft supports (`None` for the others, whose
    /// block layout this reader does not know; their data is never handed out).
    pub fn nbytes(&self) -> Option<u64> {
        self.nbytes
    }

    /// `(rows, cols)` when the tensor is a matrix: 2-D (`ne1 x ne0`), 1-D (one row), or either
    /// with trailing dims of 1.
    pub fn matrix_shape(&self) -> Option<(u64, u64)> {
        let (&cols, rest) = self.dims.split_first()?;
        let (rows, outer) = rest.split_first().map_or((1, &[][..]), |(&r, o)| (r, o));
        outer.iter().all(|&d| d == 1).then_some((rows, cols))
    }
}

/// A table entry as read, before the checks that need the data section's start.
#[derive(Debug)]
pub(crate) struct RawTensor {
    pub name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

/// Reads the `count` entries of the tensor table.
pub(crate) fn read_table(r: &mut Reader<'_>, count: u64) -> Result<Vec<RawTensor>, GgufError> {
    // A name length, a dimension count, a type and an offset at the least.
    let min_entry = 8 + 4 + 4 + 8;
    let n = r.check_count(count, min_entry, || "the tensor count".into())?;
    let mut table = Vec::with_capacity(n);
    for i in 0..n {
        let name = r.string(|| format!("the name of tensor {i}"))?.to_owned();
        let n_dims = r.u32(|| format!("the dimension count of tensor '{name}'"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                path: r.path().to_path_buf(),
                name,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(|| format!("the dims of tensor '{name}'"))?);
        }
        let type_id = r.u32(|| format!("the type of tensor '{name}'"))?;
        let offset = r.u64(|| format!("the offset of tensor '{name}'"))?;
        table.push(RawTensor {
            name,
            dims,
            type_id,
            offset,
        });
    }
    Ok(table)
}

impl RawTensor {
    /// Checks the entry against the file (dims, alignment, data inside the file) and completes it.
    pub fn check(
        self,
        r: &Reader<'_>,
        alignment: u64,
        data_start: u64,
    ) -> Result<TensorInfo, GgufError> {
        let path = || r.path().to_path_buf();
        let file_len = r.file_len();
        // ggml counts elements in an i64.
        let n_elements = self
            .dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| i64::try_from(n).is_ok());
        let Some(n_elements) = n_elements else {
            return Err(GgufError::DimsOverflow {
                path: path(),
                name: self.name,
                dims: self.dims,
            });
        };
        if !self.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                path: path(),
                name: self.name,
                offset: self.offset,
                alignment,
            });
        }
        let nbytes = match GgmlType::from_id(self.type_id) {
            Ok(ty) => Some(data_bytes(ty, &self.dims, n_elements).ok_or_else(|| {
                GgufError::PartialBlock {
                    path: path(),
                    name: self.name.clone(),
                    ty: ty.name(),
                    ne0: self.dims.first().copied().unwrap_or(1),
                    block: ty.block_len(),
                }
            })?),
            Err(_) => None,
        };
        let start = data_start.checked_add(self.offset);
        let inside = match (start, nbytes) {
            (Some(start), Some(nbytes)) => start.checked_add(nbytes).is_some_and(|e| e <= file_len),
            (Some(start), None) => start <= file_len,
            (None, _) => false,
        };
        let Some(file_offset) = start.filter(|_| inside) else {
            let start = start.unwrap_or(u64::MAX);
            return Err(match nbytes {
                Some(nbytes) => GgufError::TensorPastEnd {
                    path: path(),
                    name: self.name,
                    start,
                    end: start.saturating_add(nbytes),
                    file_len,
                },
                None => GgufError::TensorStartsPastEnd {
                    path: path(),
                    ty: ggml_type_name(self.type_id),
                    name: self.name,
                    start,
                    file_len,
                },
            });
        };
        Ok(TensorInfo {
            name: self.name,
            dims: self.dims,
            type_id: self.type_id,
            offset: self.offset,
            file_offset,
            n_elements,
            nbytes,
        })
    }
}

/// Bytes of a tensor of `ty` with these dims, or `None` when its rows are not whole blocks.
fn data_bytes(ty: GgmlType, dims: &[u64], n_elements: u64) -> Option<u64> {
    let block = ty.block_len() as u64;
    let ne0 = dims.first().copied().unwrap_or(1);
    if !ne0.is_multiple_of(block) {
        return None;
    }
    // Whole blocks per row, so the element count is a whole number of blocks.
    (n_elements / block).checked_mul(ty.block_bytes() as u64)
}
