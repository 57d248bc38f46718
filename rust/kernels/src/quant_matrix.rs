//! [`QuantMatrix`]: a read-only `rows x cols` weight matrix kept in its GGUF block format, over
//! bytes that something else owns (a memory-mapped GGUF file, or a buffer). Row `i` is the byte
//! range `start + i * row_bytes .. start + (i + 1) * row_bytes`; a row is a whole number of blocks.

use std::fmt;
use std::sync::Arc;

use crate::ggml_type::GgmlType;

/// Bytes shared between matrices (the whole mapped file, or one owned buffer).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Why a [`QuantMatrix`] cannot be made over the given bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    #[error("{ty} rows are whole blocks of {block} values; {cols} columns are not")]
    PartialBlock {
        ty: &'static str,
        block: usize,
        cols: usize,
    },
    #[error("a {rows} x {cols} {ty} matrix needs {needed} bytes from offset {start}, but only {available} are there")]
    OutOfBounds {
        ty: &'static str,
        rows: usize,
        cols: usize,
        start: usize,
        needed: usize,
        available: usize,
    },
    #[error("a matrix needs at least one row and one column, got {rows} x {cols}")]
    Empty { rows: usize, cols: usize },
}

/// A weight matrix in GGUF block format (see the module docs).
#[derive(Clone)]
pub struct QuantMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    bytes: SharedBytes,
    start: usize,
}

impl QuantMatrix {
    /// The `rows x cols` matrix of type `ty` whose first row starts at byte `start` of `bytes`.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: SharedBytes,
        start: usize,
    ) -> Result<Self, MatrixError> {
        if rows == 0 || cols == 0 {
            return Err(MatrixError::Empty { rows, cols });
        }
        let row_bytes = ty.row_bytes(cols).ok_or(MatrixError::PartialBlock {
            ty: ty.name(),
            block: ty.block_len(),
            cols,
        })?;
        let available = (*bytes).as_ref().len().saturating_sub(start);
        let needed = rows.saturating_mul(row_bytes);
        if needed > available {
            return Err(MatrixError::OutOfBounds {
                ty: ty.name(),
                rows,
                cols,
                start,
                needed,
                available,
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            bytes,
            start,
        })
    }

    /// A matrix over its own copy of `data` (exactly `rows` rows of `cols` values).
    pub fn from_vec(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, MatrixError> {
        let m = Self::new(ty, rows, cols, Arc::new(data), 0)?;
        Ok(m)
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The blocks of every row, row after row (`rows * row_bytes` bytes).
    pub fn data(&self) -> &[u8] {
        let all: &[u8] = (*self.bytes).as_ref();
        &all[self.start..self.start + self.rows * self.row_bytes]
    }

    /// The blocks of row `i` (`i < rows`).
    pub fn row(&self, i: usize) -> &[u8] {
        let d = self.data();
        &d[i * self.row_bytes..(i + 1) * self.row_bytes]
    }

    /// A new matrix (owning its bytes) whose row `j` is row `order[j]` of this one. Rows are whole
    /// blocks, so reordering rows never touches a value.
    pub fn select_rows(&self, order: &[usize]) -> Result<Self, MatrixError> {
        if let Some(&bad) = order.iter().find(|&&i| i >= self.rows) {
            return Err(MatrixError::OutOfBounds {
                ty: self.ty.name(),
                rows: bad + 1,
                cols: self.cols,
                start: self.start,
                needed: (bad + 1) * self.row_bytes,
                available: self.rows * self.row_bytes,
            });
        }
        let mut data = Vec::with_capacity(order.len() * self.row_bytes);
        for &i in order {
            data.extend_from_slice(self.row(i));
        }
        Self::from_vec(self.ty, order.len(), self.cols, data)
    }
}

impl fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QuantMatrix({} x {} {}, {} bytes)",
            self.rows,
            self.cols,
            self.ty.name(),
            self.rows * self.row_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_row_selection() {
        let ty = GgmlType::Q8_0;
        let data: Vec<u8> = (0..3 * 34).map(|i| i as u8).collect();
        let m = QuantMatrix::from_vec(ty, 3, 32, data.clone()).unwrap();
        assert_eq!(m.row(2), &data[68..102]);
        let s = m.select_rows(&[2, 0]).unwrap();
        assert_eq!(s.rows(), 2);
        assert_eq!(s.row(0), m.row(2));
        assert_eq!(s.row(1), m.row(0));
        assert!(m.select_rows(&[3]).is_err());
        assert!(matches!(
            QuantMatrix::from_vec(ty, 4, 32, data.clone()),
            Err(MatrixError::OutOfBounds { .. })
        ));
        assert!(matches!(
            QuantMatrix::from_vec(ty, 1, 31, data),
            Err(MatrixError::PartialBlock { .. })
        ));
    }
}
