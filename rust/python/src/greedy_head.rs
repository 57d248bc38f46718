//! `hierdraft._core.GreedyHead`: the first maximal index of an LM head's products, for greedy
//! decoding, from a 5-bit proxy of the head and exact products of the rows it cannot rule out
//! (`hierdraft_kernels::GreedyHead`). Translation only; the work runs with the GIL released.

use hierdraft_kernels::GreedyHead;
use numpy::prelude::*;
use numpy::{PyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::kernels::c_slice;
use crate::quant::PyQuantTensor;

/// A Q8_0 `QuantTensor` with the proxy that ranks its rows (about two thirds of its bytes).
#[pyclass(frozen, name = "GreedyHead", module = "hierdraft._core")]
pub struct PyGreedyHead {
    head: GreedyHead,
}

#[pymethods]
impl PyGreedyHead {
    /// Builds the proxy of `tensor` (Q8_0 with finite block scales; `ValueError` otherwise).
    #[new]
    fn new(py: Python<'_>, tensor: &Bound<'_, PyQuantTensor>) -> PyResult<Self> {
        let matrix = tensor.get().matrix();
        py.detach(|| GreedyHead::new(matrix))
            .map(|head| Self { head })
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Bytes of the proxy.
    #[getter]
    fn proxy_bytes(&self) -> usize {
        self.head.proxy_bytes()
    }

    /// `(rows, cols)` of the tensor.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        (self.head.rows(), self.head.cols())
    }

    /// For every row of `x` (float32 (r, cols), C-contiguous), the first maximal index of
    /// `x[row] @ W.T` as `QuantTensor.linear` computes it (NaN counts as maximal, as in
    /// `torch.argmax`), int64 (r,). With `report`, also the number of rows computed exactly per
    /// input row (the candidates, or every row). `portable` takes the portable path (the same
    /// answers; for tests).
    #[pyo3(signature = (x, report = false, portable = false))]
    fn argmax<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        report: bool,
        portable: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cols = x.shape()[1];
        if cols != self.head.cols() {
            return Err(PyValueError::new_err(format!(
                "x has {cols} columns but the head has {}: they must match",
                self.head.cols()
            )));
        }
        let rows = x.shape()[0];
        let values = c_slice(&x, "x")?;
        let mut out = vec![0u32; rows];
        let done = py.detach(|| {
            if portable {
                self.head.argmax_portable(values, &mut out)
            } else {
                self.head.argmax(values, &mut out)
            }
        });
        let done = done.map_err(|e| PyValueError::new_err(e.to_string()))?;
        let indices = PyArray1::from_iter(py, out.iter().map(|&i| i64::from(i)));
        if report {
            Ok((indices, done.exact_rows).into_pyobject(py)?.into_any())
        } else {
            Ok(indices.into_any())
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "GreedyHead(shape=({}, {}), proxy_bytes={})",
            self.head.rows(),
            self.head.cols(),
            self.head.proxy_bytes()
        )
    }
}
