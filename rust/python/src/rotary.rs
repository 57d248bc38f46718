//! Python entry point of the rotary embedding kernel: `rotary(x, cos, sin, out)` over float32
//! numpy arrays. The GIL is released while it runs.

use numpy::prelude::*;
use numpy::{PyReadonlyArray2, PyReadonlyArray3, PyReadwriteArray3};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::kernels::{c_slice, c_slice_mut};

/// Writes `x * cos + rotate_half(x) * sin` into `out`, as transformers' `apply_rotary_pos_emb`
/// computes it, bit for bit: x and out float32 (rows, heads, dim), cos and sin float32
/// (rows, dim), all C-contiguous; dim even.
#[pyfunction]
pub fn rotary(
    py: Python<'_>,
    x: PyReadonlyArray3<'_, f32>,
    cos: PyReadonlyArray2<'_, f32>,
    sin: PyReadonlyArray2<'_, f32>,
    mut out: PyReadwriteArray3<'_, f32>,
) -> PyResult<()> {
    let (xs, cs) = (x.shape().to_vec(), cos.shape().to_vec());
    if cs != [xs[0], xs[2]] || sin.shape() != cs.as_slice() {
        return Err(PyValueError::new_err(format!(
            "cos {cs:?} and sin {:?} must both have shape (rows, dim) = ({}, {})",
            sin.shape(),
            xs[0],
            xs[2]
        )));
    }
    if out.shape() != xs.as_slice() {
        return Err(PyValueError::new_err(format!(
            "out has shape {:?}; x has shape {xs:?}",
            out.shape()
        )));
    }
    let (heads, dim) = (xs[1], xs[2]);
    let x = c_slice(&x, "x")?;
    let cos = c_slice(&cos, "cos")?;
    let sin = c_slice(&sin, "sin")?;
    let out = c_slice_mut(&mut out, "out")?;
    py.detach(|| hierdraft_kernels::rotary(x, cos, sin, heads, dim, out))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}
