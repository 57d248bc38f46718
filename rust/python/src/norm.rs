//! Python entry point of the RMS norm kernel: `rms_norm(x, scale, eps, out)` over float32 numpy
//! arrays (torch tensors pass through `.numpy()` without a copy). The GIL is released while it runs.

use numpy::prelude::*;
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::kernels::{c_slice, c_slice_mut};

/// Writes the RMS norm of each row of `x` into `out`: `(x * r) * scale`, with
/// `r = 1 / sqrt(mean(x**2) + eps)` per row; x and out are float32 (rows, n), scale float32 (n,),
/// all C-contiguous. A row's result does not depend on the other rows.
#[pyfunction]
pub fn rms_norm(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f32>,
    scale: PyReadonlyArray1<'_, f32>,
    eps: f32,
    mut out: PyReadwriteArray2<'_, f32>,
) -> PyResult<()> {
    if x.shape()[1] != scale.len() {
        return Err(PyValueError::new_err(format!(
            "x has {} columns but scale has {} values",
            x.shape()[1],
            scale.len()
        )));
    }
    if out.shape() != x.shape() {
        return Err(PyValueError::new_err(format!(
            "out has shape {:?}; x has shape {:?}",
            out.shape(),
            x.shape()
        )));
    }
    let x = c_slice(&x, "x")?;
    let scale = c_slice(&scale, "scale")?;
    let out = c_slice_mut(&mut out, "out")?;
    py.detach(|| hierdraft_kernels::rms_norm(x, scale, eps, out))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}
