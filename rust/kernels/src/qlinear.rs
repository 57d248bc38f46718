//! `out = x · Wᵀ` for a weight matrix kept in its GGUF blocks ([`QuantMatrix`]): each tile of
//! weight rows is dequantized once into a thread-local f32 buffer, then multiplied with every
//! input row by the micro-kernel [`crate::linear_rows`] uses. The result is therefore bit for bit
//! `linear_rows(x, dequantize(W))`, on both paths and for any number of rows.

use std::ops::Range;

use crate::cpu::simd_available;
use crate::dequant::dequantize_unchecked;
use crate::error::KernelError;
use crate::product::{check_shapes, multiply, WeightRows};
use crate::quant_matrix::QuantMatrix;

impl WeightRows for QuantMatrix {
    fn rows(&self) -> usize {
        QuantMatrix::rows(self)
    }

    fn cols(&self) -> usize {
        QuantMatrix::cols(self)
    }

    fn tile<'a>(&'a self, rows: Range<usize>, scratch: &'a mut Vec<f32>, simd: bool) -> &'a [f32] {
        let len = rows.len() * QuantMatrix::cols(self);
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        let bytes = &self.data()[rows.start * self.row_bytes()..rows.end * self.row_bytes()];
        dequantize_unchecked(self.ty(), bytes, &mut scratch[..len], simd);
        &scratch[..len]
    }

    fn ahead(&self, _: Range<usize>) -> &[f32] {
        &[]
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
    check_shapes(x, w.cols(), w.rows(), out)?;
    multiply(x, w, out, simd);
    Ok(())
}
