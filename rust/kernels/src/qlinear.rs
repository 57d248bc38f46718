//! `out = x · Wᵀ` for a weight matrix kept in its GGUF blocks ([`QuantMatrix`]). One or two
//! input rows over block-quantized weights take [`crate::fused`] (values dequantized into
//! registers and multiplied at once); otherwise each pass of a tile of weight rows is
//! dequantized once into a thread-local f32 buffer, then multiplied with every input row by the
//! micro-kernel [`crate::linear_rows`] uses ([`crate::product`]). Either way the result is bit
//! for bit `linear_rows(x, dequantize(W))`, on both paths and for any number of rows.

use std::ops::Range;

use crate::cpu::simd_available;
use crate::dequant::{dequantize_unchecked, prefetch};
use crate::error::KernelError;
use crate::fused;
use crate::product::{check_shapes, multiply, WeightRows};
use crate::quant_matrix::QuantMatrix;

impl WeightRows for QuantMatrix {
    fn rows(&self) -> usize {
        QuantMatrix::rows(self)
    }

    fn cols(&self) -> usize {
        QuantMatrix::cols(self)
    }

    fn col_align(&self) -> usize {
        self.ty().block_len()
    }

    fn values(
        &self,
        rows: Range<usize>,
        cols: Range<usize>,
        ahead: Range<usize>,
        scratch: &mut Vec<f32>,
        simd: bool,
    ) -> (*const f32, usize) {
        let width = cols.len();
        if scratch.len() < rows.len() * width {
            scratch.resize(rows.len() * width, 0.0);
        }
        let ty = self.ty();
        let bytes = cols.start / ty.block_len() * ty.block_bytes()
            ..cols.end / ty.block_len() * ty.block_bytes();
        for (i, out) in rows.clone().zip(scratch.chunks_exact_mut(width)) {
            if let Some(next) = ahead.clone().nth(i - rows.start) {
                prefetch(&self.row(next)[bytes.clone()]);
            }
            dequantize_unchecked(ty, &self.row(i)[bytes.clone()], out, simd);
        }
        (scratch.as_ptr(), width)
    }

    fn prefetch_in_kernel(&self) -> bool {
        false
    }
}

/// Writes `x · Wᵀ` into `out`: `x` holds `r` rows of `w.cols()` values, `out` receives `r` rows
/// of `w.rows()` values (row-major). Runs on rayon's pool.
pub fn qlinear(x: &[f32], w: &QuantMatrix, out: &mut [f32]) -> Result<(), KernelError> {
    run(x, w, out, simd_available())
}

/// The portable path of [`qlinear`], whatever the CPU (the reference of the tests; slower).
pub fn qlinear_portable(x: &[f32], w: &QuantMatrix, out: &mut [f32]) -> Result<(), KernelError> {
    run(x, w, out, false)
}

fn run(x: &[f32], w: &QuantMatrix, out: &mut [f32], simd: bool) -> Result<(), KernelError> {
    let rows = check_shapes(x, w.cols(), w.rows(), out)?;
    if fused::applies(w, rows, simd) {
        fused::multiply(x, w, out);
    } else {
        multiply(x, w, out, simd);
    }
    Ok(())
}
