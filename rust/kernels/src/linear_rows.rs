//! `out = x · Wᵀ` for a weight matrix `W` (n x k, row-major f32) and a few input rows `x`
//! (r x k): the product `torch.nn.functional.linear` computes, laid out the same way (r x n).
//!
//! The weight rows are split into tiles that stay in cache while every input row is multiplied
//! with them ([`crate::product`]), by the shared micro-kernel ([`crate::tile_kernel`]: AVX2 +
//! FMA, 8 lanes, several weight and input rows at once), while the next tile is prefetched.
//! Without AVX2/FMA a portable loop computes the same product (slower; callers check
//! [`crate::simd_available`] to choose another path).
//!
//! Each output element is accumulated in a fixed order that depends only on `k`: the result for
//! one input row is bit-identical whatever other rows share the call, and the portable loop uses
//! the same order, so both paths agree bit for bit.

use std::ops::Range;

use crate::cpu::simd_available;
use crate::error::KernelError;
use crate::product::{check_shapes, multiply, WeightRows};

/// A row-major f32 matrix, borrowed.
struct F32Rows<'a> {
    values: &'a [f32],
    k: usize,
}

impl WeightRows for F32Rows<'_> {
    fn rows(&self) -> usize {
        self.values.len() / self.k
    }

    fn cols(&self) -> usize {
        self.k
    }

    fn col_align(&self) -> usize {
        1
    }

    fn values(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
        _: Range<usize>,
        _: &mut Vec<f32>,
        _: bool,
    ) -> (*const f32, usize) {
        (
            self.values[rows.start * self.k + cols.start..].as_ptr(),
            self.k,
        )
    }

    fn prefetch_in_kernel(&self) -> bool {
        true
    }

    fn bytes_per_row(&self) -> usize {
        self.k * std::mem::size_of::<f32>()
    }
}

/// The portable path of [`linear_rows`], whatever the CPU: the reference the SIMD kernel must
/// match bit for bit (used by the tests; slower).
pub fn linear_rows_portable(
    x: &[f32],
    w: &[f32],
    k: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    run(x, w, k, out, false)
}

/// Writes `x · Wᵀ` into `out`: `x` holds `r` rows of `k` values, `w` holds `n` rows of `k`
/// values, `out` receives `r` rows of `n` values (all row-major). Runs on [`crate::pool`].
pub fn linear_rows(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) -> Result<(), KernelError> {
    run(x, w, k, out, simd_available())
}

fn run(x: &[f32], w: &[f32], k: usize, out: &mut [f32], simd: bool) -> Result<(), KernelError> {
    if k == 0 {
        return Err(KernelError::EmptyInner);
    }
    if !w.len().is_multiple_of(k) {
        return Err(KernelError::WeightShape { len: w.len(), k });
    }
    check_shapes(x, k, w.len() / k, out)?;
    multiply(x, &F32Rows { values: w, k }, out, simd);
    Ok(())
}
