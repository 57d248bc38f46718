//! Python entry point of the attention kernel: `attention(q, k, v, out, scaling, mask, window,
//! softcap)` over float32 numpy arrays. Keys and values may be strided views of a larger cache
//! buffer (torch tensors pass through `.numpy()` without a copy). The GIL is released while it runs.

use hierdraft_kernels::{AttentionDims, KvView, Scoring, Visibility};
use numpy::prelude::*;
use numpy::{PyReadonlyArray2, PyReadonlyArray3, PyReadwriteArray3};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::kernels::{c_slice, c_slice_mut};

/// A (heads, rows, dim) float32 array whose rows are contiguous, as the kernel's strided view.
fn kv_view<'a>(array: &'a PyReadonlyArray3<'_, f32>, what: &str) -> PyResult<KvView<'a>> {
    let view = array.as_array();
    let (shape, strides) = (view.shape(), view.strides());
    if shape[2] > 1 && strides[2] != 1 {
        return Err(PyValueError::new_err(format!(
            "{what} must have contiguous rows (last-axis stride 1)"
        )));
    }
    let stride = |s: isize, axis: &str| {
        usize::try_from(s)
            .map_err(|_| PyValueError::new_err(format!("{what} has a negative {axis} stride")))
    };
    let (head_stride, row_stride) = (stride(strides[0], "head")?, stride(strides[1], "row")?);
    let span = if shape.contains(&0) {
        0
    } else {
        (shape[0] - 1) * head_stride + (shape[1] - 1) * row_stride + shape[2]
    };
    // SAFETY: the array's elements with non-negative strides all lie in the `span` values from
    // its first element, inside the buffer numpy keeps alive (and read-only) for 'a.
    let data = unsafe { std::slice::from_raw_parts(view.as_ptr(), span) };
    Ok(KvView {
        data,
        head_stride,
        row_stride,
    })
}

/// Writes softmax(q kᵀ scaling) v into `out` for every head and query row: q is float32
/// (heads, queries, dim), k and v float32 (kv_heads, keys, dim) with contiguous rows, out float32
/// (queries, heads, dim). `mask` (queries, keys) bool says which keys each query sees; without it
/// the queries are the last positions of a causal sequence (within `window` positions, if given).
/// Each row's result depends on its own query and visible keys alone.
#[pyfunction]
#[pyo3(signature = (q, k, v, out, scaling, mask=None, window=None, softcap=None))]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    py: Python<'_>,
    q: PyReadonlyArray3<'_, f32>,
    k: PyReadonlyArray3<'_, f32>,
    v: PyReadonlyArray3<'_, f32>,
    mut out: PyReadwriteArray3<'_, f32>,
    scaling: f32,
    mask: Option<PyReadonlyArray2<'_, bool>>,
    window: Option<usize>,
    softcap: Option<f32>,
) -> PyResult<()> {
    let (qs, ks, vs, os) = (q.shape(), k.shape(), v.shape(), out.shape());
    let dims = AttentionDims {
        heads: qs[0],
        kv_heads: ks[0],
        queries: qs[1],
        keys: ks[1],
        dim: qs[2],
    };
    if ks[2] != dims.dim || vs != ks {
        return Err(PyValueError::new_err(format!(
            "k {ks:?} and v {vs:?} must both have shape (kv_heads, keys, {})",
            dims.dim
        )));
    }
    if os != [dims.queries, dims.heads, dims.dim] {
        return Err(PyValueError::new_err(format!(
            "out has shape {os:?}; the result has shape ({}, {}, {})",
            dims.queries, dims.heads, dims.dim
        )));
    }
    if let Some(m) = &mask {
        if m.shape() != [dims.queries, dims.keys] {
            return Err(PyValueError::new_err(format!(
                "mask has shape {:?}; it must be (queries, keys) = ({}, {})",
                m.shape(),
                dims.queries,
                dims.keys
            )));
        }
    }
    if window == Some(0) {
        return Err(PyValueError::new_err("window must be at least 1"));
    }
    let q = c_slice(&q, "q")?;
    let (kv, vv) = (kv_view(&k, "k")?, kv_view(&v, "v")?);
    let mask_slice = match &mask {
        Some(m) => Some(c_slice(m, "mask")?),
        None => None,
    };
    let visibility = match mask_slice {
        Some(m) => Visibility::Mask(m),
        None => Visibility::Causal { window },
    };
    let scoring = Scoring { scaling, softcap };
    let out = c_slice_mut(&mut out, "out")?;
    py.detach(|| hierdraft_kernels::attention(q, kv, vv, dims, visibility, scoring, out))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}
