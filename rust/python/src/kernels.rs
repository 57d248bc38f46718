//! Python entry points of hierdraft-kernels: `linear_rows(x, weight, out)` and
//! `kernels_use_simd()`, `kernels_path()`, over float32 numpy arrays (torch tensors pass through `.numpy()`
//! without a copy). The GIL is released while the product runs.

use numpy::ndarray::Dimension;
use numpy::prelude::*;
use numpy::{Element, PyReadonlyArray, PyReadonlyArray2, PyReadwriteArray, PyReadwriteArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn not_c_order(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what} must be C-contiguous"))
}

/// The values of a C-contiguous numpy array, or a `ValueError` naming the array. numpy's own
/// `as_slice` also takes Fortran order, whose values the kernels would read in the wrong order.
pub(crate) fn c_slice<'a, T: Element, D: Dimension>(
    array: &'a PyReadonlyArray<'_, T, D>,
    what: &str,
) -> PyResult<&'a [T]> {
    if !array.is_c_contiguous() {
        return Err(not_c_order(what));
    }
    array.as_slice().map_err(|_| not_c_order(what))
}

/// [`c_slice`] for an array the kernels write.
pub(crate) fn c_slice_mut<'a, T: Element, D: Dimension>(
    array: &'a mut PyReadwriteArray<'_, T, D>,
    what: &str,
) -> PyResult<&'a mut [T]> {
    if !array.is_c_contiguous() {
        return Err(not_c_order(what));
    }
    array.as_slice_mut().map_err(|_| not_c_order(what))
}

/// Writes `x @ weight.T` into `out`: x is (rows, k), weight (n, k), out (rows, n), all float32
/// and C-contiguous. The same product as `torch.nn.functional.linear(x, weight)`, fast for a few
/// rows on CPU; each row's result does not depend on the other rows.
#[pyfunction]
pub fn linear_rows(
    py: Python<'_>,
    x: PyReadonlyArray2<'_, f32>,
    weight: PyReadonlyArray2<'_, f32>,
    mut out: PyReadwriteArray2<'_, f32>,
) -> PyResult<()> {
    let (xs, ws, os) = (x.shape(), weight.shape(), out.shape());
    let (rows, k, n) = (xs[0], xs[1], ws[0]);
    if ws[1] != k {
        return Err(PyValueError::new_err(format!(
            "x has {k} columns but weight has {}: they must match",
            ws[1]
        )));
    }
    if os != [rows, n] {
        return Err(PyValueError::new_err(format!(
            "out has shape ({}, {}); x @ weight.T has shape ({rows}, {n})",
            os[0], os[1]
        )));
    }
    if k == 0 {
        return Err(PyValueError::new_err("x and weight have 0 columns"));
    }
    let x = c_slice(&x, "x")?;
    let w = c_slice(&weight, "weight")?;
    let out = c_slice_mut(&mut out, "out")?;
    py.detach(|| hierdraft_kernels::linear_rows(x, w, k, out))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// True when `linear_rows` runs the AVX2/FMA kernel on this CPU (otherwise a slow portable loop).
#[pyfunction]
pub fn kernels_use_simd() -> bool {
    hierdraft_kernels::simd_available()
}

/// The instruction-set path the quantized products take on this CPU: "avx512-vnni" (the
/// "avx512" path with AVX-512 VNNI's byte dot products for the int8 mode), "avx512" (the AVX2
/// arithmetic with AVX-512VL's 32 registers), "avx2" or "portable"; all give the same bits.
#[pyfunction]
pub fn kernels_path() -> &'static str {
    match hierdraft_kernels::Isa::detect() {
        hierdraft_kernels::Isa::Avx512Vnni => "avx512-vnni",
        hierdraft_kernels::Isa::Avx512 => "avx512",
        hierdraft_kernels::Isa::Avx2 => "avx2",
        hierdraft_kernels::Isa::Portable => "portable",
    }
}
