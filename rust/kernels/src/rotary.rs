//! Rotary position embedding of query or key rows, computed as transformers'
//! `apply_rotary_pos_emb` computes it: `y = x * cos + rotate_half(x) * sin`, where
//! `rotate_half(x)` is the second half of `x`, negated, followed by the first half.
//!
//! Each value is two float32 products and one sum, each rounded (never fused), so the result is
//! PyTorch's element-wise result bit for bit, on every path: `(-a) * s` is exactly `-(a * s)`.
//! One call replaces the dozen tensor operations the PyTorch expression spends on a layer's
//! queries or keys.

use crate::error::KernelError;

/// Writes the rotary embedding of `x` into `out`: `x` and `out` hold `rows x heads x dim`
/// values, `cos` and `sin` `rows x dim` (the angles of each row's position, shared by its
/// heads). `dim` must be even.
pub fn rotary(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    heads: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if dim == 0 || !dim.is_multiple_of(2) || heads == 0 {
        return Err(KernelError::Rotary(format!(
            "the head dimension must be even and at least 2, and heads at least 1; got \
             dim {dim}, heads {heads}"
        )));
    }
    if cos.len() != sin.len() || !cos.len().is_multiple_of(dim) {
        return Err(KernelError::Rotary(format!(
            "cos ({} values) and sin ({} values) must both hold whole rows of {dim} angles",
            cos.len(),
            sin.len()
        )));
    }
    let rows = cos.len() / dim;
    if x.len() != rows * heads * dim || out.len() != x.len() {
        return Err(KernelError::Rotary(format!(
            "x has {} values and out {}; {rows} rows x {heads} heads x {dim} need {}",
            x.len(),
            out.len(),
            rows * heads * dim
        )));
    }
    let half = dim / 2;
    for (r, (xr, yr)) in x
        .chunks_exact(heads * dim)
        .zip(out.chunks_exact_mut(heads * dim))
        .enumerate()
    {
        let (c, s) = (&cos[r * dim..][..dim], &sin[r * dim..][..dim]);
        for (xh, yh) in xr.chunks_exact(dim).zip(yr.chunks_exact_mut(dim)) {
            let (lo, hi) = xh.split_at(half);
            for d in 0..half {
                yh[d] = lo[d] * c[d] + (-hi[d]) * s[d];
                yh[half + d] = hi[d] * c[half + d] + lo[d] * s[half + d];
            }
        }
    }
    Ok(())
}
