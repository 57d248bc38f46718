//! `hierdraft._core.QuantTensor`: a weight matrix kept in its GGUF blocks (a
//! `hierdraft_kernels::QuantMatrix`), with the quantized linear kernels (`linear`, and
//! `linear_int8` for the int8 numeric mode), whole-matrix and row dequantization, and row
//! reordering. Translation only: shapes and types are checked here, the work runs in
//! hierdraft-kernels with the GIL released.

use hierdraft_kernels::{
    dequantize_rows, qlinear, qlinear_group as group_kernel, qlinear_int8, GgmlType, KernelError,
    QuantMatrix,
};
use numpy::prelude::*;
use numpy::{PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::kernels::{c_slice, c_slice_mut};

/// A `rows x cols` matrix in one of the GGUF block formats (F32, F16, BF16, Q4_0, Q5_0, Q8_0,
/// Q4_K, Q5_K, Q6_K), over bytes it shares (a memory-mapped GGUF file, or its own copy).
#[pyclass(frozen, name = "QuantTensor", module = "hierdraft._core")]
pub struct PyQuantTensor {
    matrix: QuantMatrix,
}

impl PyQuantTensor {
    /// Wraps a matrix (used by the GGUF file reader to hand out its tensors).
    pub(crate) fn from_matrix(matrix: QuantMatrix) -> Self {
        Self { matrix }
    }

    /// The matrix (for the other classes built on one, e.g. `GreedyHead`).
    pub(crate) fn matrix(&self) -> &QuantMatrix {
        &self.matrix
    }

    /// Checks the shapes of `x` (r, cols) and `out` (r, rows), then runs `kernel` on them with
    /// the GIL released (the body of `linear` and `linear_int8`).
    fn product(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        mut out: PyReadwriteArray2<'_, f32>,
        kernel: Kernel,
    ) -> PyResult<()> {
        let (rows, cols) = (self.matrix.rows(), self.matrix.cols());
        let (xs, os) = (x.shape(), out.shape());
        if xs[1] != cols {
            return Err(PyValueError::new_err(format!(
                "x has {} columns but the tensor has {cols}: they must match",
                xs[1]
            )));
        }
        if os != [xs[0], rows] {
            return Err(PyValueError::new_err(format!(
                "out has shape ({}, {}); x @ W.T has shape ({}, {rows})",
                os[0], os[1], xs[0]
            )));
        }
        let x = c_slice(&x, "x")?;
        let out = c_slice_mut(&mut out, "out")?;
        py.detach(|| kernel(x, &self.matrix, out))
            .map_err(value_error)
    }
}

/// Writes `x @ weights[i].T` into `outs[i]` for every tensor, in one dispatch of the kernels'
/// threads: bit for bit `weights[i].linear(x, outs[i])` (the same rows times several matrices,
/// e.g. an attention layer's query, key and value projections). `x` is float32 (r, k) and every
/// tensor has k columns; `outs[i]` is float32 (r, rows of tensor i); all C-contiguous.
#[pyfunction]
pub fn qlinear_group(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f32>,
    weights: Vec<Bound<'_, PyQuantTensor>>,
    mut outs: Vec<PyReadwriteArray2<'_, f32>>,
) -> PyResult<()> {
    if weights.is_empty() || weights.len() != outs.len() {
        return Err(PyValueError::new_err(format!(
            "qlinear_group takes one output per tensor and at least one tensor; got {} tensors and {} outputs",
            weights.len(),
            outs.len()
        )));
    }
    let xs = x.shape().to_vec();
    for (i, (w, out)) in weights.iter().zip(&outs).enumerate() {
        let m = &w.get().matrix;
        if m.cols() != xs[1] {
            return Err(PyValueError::new_err(format!(
                "tensor {i} has {} columns but x has {}: they must match",
                m.cols(),
                xs[1]
            )));
        }
        if out.shape() != [xs[0], m.rows()] {
            return Err(PyValueError::new_err(format!(
                "output {i} has shape {:?}; x @ W.T has shape ({}, {})",
                out.shape(),
                xs[0],
                m.rows()
            )));
        }
    }
    let x = c_slice(&x, "x")?;
    let matrices: Vec<&QuantMatrix> = weights.iter().map(|w| &w.get().matrix).collect();
    let mut slices = outs
        .iter_mut()
        .map(|out| c_slice_mut(out, "out"))
        .collect::<PyResult<Vec<&mut [f32]>>>()?;
    py.detach(|| group_kernel(x, &matrices, &mut slices))
        .map_err(value_error)
}

/// A product kernel over a quantized matrix (`qlinear`, `qlinear_int8`).
type Kernel = fn(&[f32], &QuantMatrix, &mut [f32]) -> Result<(), KernelError>;

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A non-negative Python int as a size, or a `ValueError` naming it.
fn size(value: i64, what: &str) -> PyResult<usize> {
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{what} must be non-negative, got {value}")))
}

/// Row indices from an int64 array, each checked against `rows`.
fn row_indices(ids: &PyReadonlyArray1<'_, i64>, rows: usize, what: &str) -> PyResult<Vec<usize>> {
    ids.as_array()
        .iter()
        .enumerate()
        .map(|(j, &id)| match usize::try_from(id) {
            Ok(row) if row < rows => Ok(row),
            _ => Err(PyValueError::new_err(format!(
                "{what}[{j}] = {id} is out of range for a tensor of {rows} rows"
            ))),
        })
        .collect()
}

#[pymethods]
impl PyQuantTensor {
    /// A tensor over a copy of `data` (bytes, or a 1-D uint8 numpy array): exactly `rows` rows of
    /// `cols` values in GGUF type `qtype` (a name such as "Q4_K", case-insensitive).
    #[staticmethod]
    fn from_bytes(qtype: &str, data: &Bound<'_, PyAny>, rows: i64, cols: i64) -> PyResult<Self> {
        let ty = GgmlType::from_name(qtype).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown or unsupported tensor type {qtype:?}; supported: {}",
                GgmlType::ALL.map(GgmlType::name).join(", ")
            ))
        })?;
        let (rows, cols) = (size(rows, "rows")?, size(cols, "cols")?);
        let bytes = if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else if let Ok(arr) = data.cast::<PyUntypedArray>() {
            let typed = arr.cast::<numpy::PyArray1<u8>>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "data must be a 1-D uint8 array, got dtype {} with {} dimensions",
                    arr.dtype(),
                    arr.ndim()
                ))
            })?;
            let ro = typed.try_readonly().map_err(value_error)?;
            c_slice(&ro, "data")?.to_vec()
        } else {
            return Err(PyTypeError::new_err(format!(
                "data must be bytes or a 1-D uint8 numpy array, got {}",
                data.get_type().name()?
            )));
        };
        if let Some(row_bytes) = ty.row_bytes(cols) {
            let expected = rows.saturating_mul(row_bytes);
            if bytes.len() != expected {
                return Err(PyValueError::new_err(format!(
                    "a {rows} x {cols} {} tensor takes {expected} bytes, data has {}",
                    ty.name(),
                    bytes.len()
                )));
            }
        }
        QuantMatrix::from_vec(ty, rows, cols, bytes)
            .map(Self::from_matrix)
            .map_err(value_error)
    }

    /// The GGUF type name ("Q4_K", "F16", ...).
    #[getter]
    fn qtype(&self) -> &'static str {
        self.matrix.ty().name()
    }

    /// The GGUF type id.
    #[getter]
    fn type_id(&self) -> u32 {
        self.matrix.ty().id()
    }

    /// (rows, cols).
    #[getter]
    fn shape(&self) -> (usize, usize) {
        (self.matrix.rows(), self.matrix.cols())
    }

    /// Bytes of the blocks.
    #[getter]
    fn nbytes(&self) -> usize {
        self.matrix.rows() * self.matrix.row_bytes()
    }

    /// Writes `x @ W.T` into `out`: x is float32 (r, cols), out float32 (r, rows), both
    /// C-contiguous. Bit for bit `linear_rows(x, self.dequantize(), out)`.
    fn linear(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        out: PyReadwriteArray2<'_, f32>,
    ) -> PyResult<()> {
        self.product(py, x, out, qlinear)
    }

    /// The whole matrix as float32 (rows, cols): the values gguf-py's `dequantize` gives.
    fn dequantize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let arr = PyArray2::<f32>::zeros(py, [self.matrix.rows(), self.matrix.cols()], false);
        {
            let mut rw = arr.try_readwrite().map_err(value_error)?;
            let out = c_slice_mut(&mut rw, "out")?;
            py.detach(|| self.matrix.dequantize_into(out))
                .map_err(value_error)?;
        }
        Ok(arr)
    }

    /// Writes row `ids[j]`, dequantized, into row `j` of `out` (float32 (len(ids), cols),
    /// C-contiguous): an embedding lookup.
    fn dequantize_rows(
        &self,
        py: Python<'_>,
        ids: PyReadonlyArray1<'_, i64>,
        mut out: PyReadwriteArray2<'_, f32>,
    ) -> PyResult<()> {
        let ids = row_indices(&ids, self.matrix.rows(), "ids")?;
        let os = out.shape();
        if os != [ids.len(), self.matrix.cols()] {
            return Err(PyValueError::new_err(format!(
                "out has shape ({}, {}); {} rows of {} values need ({}, {})",
                os[0],
                os[1],
                ids.len(),
                self.matrix.cols(),
                ids.len(),
                self.matrix.cols()
            )));
        }
        let out = c_slice_mut(&mut out, "out")?;
        py.detach(|| dequantize_rows(&self.matrix, &ids, out))
            .map_err(value_error)
    }

    /// A new tensor (its own copy) whose row `j` is row `order[j]` of this one.
    fn select_rows(&self, py: Python<'_>, order: PyReadonlyArray1<'_, i64>) -> PyResult<Self> {
        let order = row_indices(&order, self.matrix.rows(), "order")?;
        if order.is_empty() {
            return Err(PyValueError::new_err("order must select at least one row"));
        }
        py.detach(|| self.matrix.select_rows(&order))
            .map(Self::from_matrix)
            .map_err(value_error)
    }

    fn __repr__(&self) -> String {
        format!(
            "QuantTensor({}, shape=({}, {}), nbytes={})",
            self.qtype(),
            self.matrix.rows(),
            self.matrix.cols(),
            self.nbytes()
        )
    }

    /// Writes `x @ W.T` into `out` in the int8 numeric mode (same arguments as `linear`): the
    /// input rows quantized to int8 per block of 32, integer dot products with the weight's
    /// integer values, block scales applied in one fixed order (hierdraft_kernels' `int8` module
    /// docs). Close to `linear`, not equal; a row's result never depends on the other rows. F32,
    /// F16 and BF16 tensors compute as `linear` does.
    fn linear_int8(
        &self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        out: PyReadwriteArray2<'_, f32>,
    ) -> PyResult<()> {
        self.product(py, x, out, qlinear_int8)
    }
}
