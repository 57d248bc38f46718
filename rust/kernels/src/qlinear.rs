//! `out = x · Wᵀ` for a weight matrix kept in its GGUF blocks ([`QuantMatrix`]). A few input
//! rows over block-quantized weights (up to [`crate::fused`]'s limit for the CPU's path) take
//! [`crate::fused`] (values dequantized into registers and multiplied at once); otherwise each pass of a tile of weight rows is
//! dequantized once into a thread-local f32 buffer, then multiplied with every input row by the
//! micro-kernel [`crate::linear_rows`] uses ([`crate::product`]). Either way the result is bit
//! for bit `linear_rows(x, dequantize(W))`, on both paths and for any number of rows.

use std::ops::Range;

use crate::cpu::Isa;
use crate::dequant::{dequantize_unchecked, prefetch};
use crate::error::KernelError;
use crate::fused::{self, Fused};
use crate::product::{check_shapes, run_parts, with_packed, Part, Tiled, WeightRows};
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

    fn bytes_per_row(&self) -> usize {
        self.row_bytes()
    }
}

/// Writes `x · Wᵀ` into `out`: `x` holds `r` rows of `w.cols()` values, `out` receives `r` rows
/// of `w.rows()` values (row-major). Runs on [`crate::pool`].
pub fn qlinear(x: &[f32], w: &QuantMatrix, out: &mut [f32]) -> Result<(), KernelError> {
    qlinear_on(Isa::detect(), x, w, out)
}

/// The portable path of [`qlinear`], whatever the CPU (the reference of the tests; slower).
pub fn qlinear_portable(x: &[f32], w: &QuantMatrix, out: &mut [f32]) -> Result<(), KernelError> {
    qlinear_on(Isa::Portable, x, w, out)
}

/// [`qlinear`] on the path `isa`, or on the best one this CPU has if `isa` is beyond it (so that
/// tests on an AVX-512 machine also run the AVX2 path). Every path gives the same bits.
pub fn qlinear_on(
    isa: Isa,
    x: &[f32],
    w: &QuantMatrix,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let rows = check_shapes(x, w.cols(), w.rows(), out)?;
    multiply_each(x, rows, &mut [(w, out)], isa.supported());
    Ok(())
}

/// Writes `x · Wᵀ` into `out` for every (matrix, output) pair, in one dispatch (shapes checked:
/// `x` holds `rows` rows of every matrix's `cols()` values, each `out` `rows` rows of its
/// matrix's `rows()` values), on the path `isa` (which this CPU supports).
pub(crate) fn multiply_each(
    x: &[f32],
    rows: usize,
    products: &mut [(&QuantMatrix, &mut [f32])],
    isa: Isa,
) {
    let simd = isa.simd();
    let Some(k) = products.first().map(|(w, _)| w.cols()) else {
        return;
    };
    let pack = simd && products.iter().any(|(w, _)| !fused::applies(w, rows, isa));
    with_packed(x, k, pack, |packed| {
        let parts: Vec<QuantPart<'_>> = products
            .iter_mut()
            .map(|(w, out)| QuantPart::new(x, packed, w, out, rows, isa))
            .collect();
        let parts: Vec<&dyn Part> = parts.iter().map(|p| p as &dyn Part).collect();
        run_parts(&parts);
    });
}

/// One matrix's part of a call: registers-only for a few rows of block-quantized weights
/// ([`crate::fused`]), tiled over dequantized passes otherwise.
enum QuantPart<'a> {
    Fused(Fused<'a>),
    Tiled(Tiled<'a, QuantMatrix>),
}

impl<'a> QuantPart<'a> {
    fn new(
        x: &'a [f32],
        packed: &'a [f32],
        w: &'a QuantMatrix,
        out: &'a mut [f32],
        rows: usize,
        isa: Isa,
    ) -> Self {
        if fused::applies(w, rows, isa) {
            QuantPart::Fused(Fused::new(x, w, out, isa))
        } else {
            QuantPart::Tiled(Tiled::new(x, packed, w, out, isa.simd()))
        }
    }

    fn part(&self) -> &dyn Part {
        match self {
            QuantPart::Fused(p) => p,
            QuantPart::Tiled(p) => p,
        }
    }
}

impl Part for QuantPart<'_> {
    fn tasks(&self) -> usize {
        self.part().tasks()
    }

    fn work(&self) -> usize {
        self.part().work()
    }

    unsafe fn run(&self, task: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.part().run(task) }
    }
}
