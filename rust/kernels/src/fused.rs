//! One to four input rows times a block-quantized matrix, on AVX2, without the scratch round trip:
//! each group of 32 weight values is dequantized into registers (by the same decoder the
//! dequantizer uses, so the values are identical) and multiplied into the accumulators at once.
//! With so few input rows the product is bound by dequantization, and storing the values to
//! read them back would cost about as much again.
//!
//! The accumulation order is the crate's (see [`crate::tile_kernel`]): lane `j` of an output
//! element accumulates columns `j, j + 8, ...` with fused multiply-adds from 0, then the lanes
//! are reduced pairwise; block-quantized rows have no tail columns (whole blocks of 32 or 256).
//! The result is therefore bit for bit the one of the scratch path, and of
//! `linear_rows(x, dequantize(W))`.

use std::marker::PhantomData;

use crate::product::{chunk_rows, Part, SharedOut};
use crate::quant_matrix::QuantMatrix;

/// Input rows the fused path takes at most.
pub(crate) const MAX_ROWS: usize = 4;
/// Weight rows one kernel call takes, by input rows: 4 for one or two, 2 for three or four (8
/// accumulators at most, of the 16 vector registers). One input row could feed 8 accumulators,
/// but then the dequantized values of 8 weight rows compete with them for the registers, and 4
/// rows ran faster (see the README's cost-curve notes).
const fn weight_rows(inputs: usize) -> usize {
    if inputs <= 2 {
        4
    } else {
        2
    }
}
/// Weight rows of a task: a multiple of every [`weight_rows`].
const TASK_ROW_MULTIPLE: usize = 4;
/// Tasks per thread. Fewer and longer than a tiled product's: each task starts a new stream of
/// weight rows whose first reads the prefetches do not cover, and with one to four input rows
/// the reads are what a task waits for (see the README's cost-curve notes).
const TASKS_PER_THREAD: usize = 4;

/// Whether [`Fused`] computes `x · Wᵀ` for `rows` input rows of this matrix.
pub(crate) fn applies(w: &QuantMatrix, rows: usize, simd: bool) -> bool {
    cfg!(target_arch = "x86_64") && simd && (1..=MAX_ROWS).contains(&rows) && w.ty().block_len() > 1
}

/// The fused product of one matrix: task `c` computes the output columns of weight-row chunk
/// `c` for every input row.
pub(crate) struct Fused<'a> {
    x: &'a [f32],
    w: &'a QuantMatrix,
    out: SharedOut,
    chunk: usize,
    tasks: usize,
    /// The part writes into `out` for as long as it lives.
    _out: PhantomData<&'a mut [f32]>,
}

impl<'a> Fused<'a> {
    /// The part writing `x · Wᵀ` into `out`. The shapes are checked by the caller
    /// ([`crate::product::check_shapes`]; a mismatch makes the part empty) and [`applies`] is
    /// true on this CPU (otherwise the part is empty too).
    pub(crate) fn new(x: &'a [f32], w: &'a QuantMatrix, out: &'a mut [f32]) -> Self {
        let (n, k) = (w.rows(), w.cols());
        let rows = x.len() / k;
        let fits = x.len() == rows * k
            && out.len() == rows * n
            && crate::cpu::simd_available()
            && applies(w, rows, true);
        let chunk = chunk_rows(n, TASK_ROW_MULTIPLE, TASKS_PER_THREAD);
        Fused {
            x,
            w,
            out: SharedOut(out.as_mut_ptr()),
            chunk,
            tasks: if fits { n.div_ceil(chunk) } else { 0 },
            _out: PhantomData,
        }
    }
}

impl Part for Fused<'_> {
    fn tasks(&self) -> usize {
        self.tasks
    }

    fn work(&self) -> usize {
        self.w.rows() * self.w.row_bytes() * (self.x.len() / self.w.cols())
    }

    unsafe fn run(&self, task: usize) {
        let rows = task * self.chunk..((task + 1) * self.chunk).min(self.w.rows());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the chunks partition 0..n and each task runs once (caller's contract), so
        // this one alone writes columns `rows` of every output row (`new` checked that `out`
        // holds x.len() / k rows of n values); the CPU has AVX2, FMA and F16C (`new` checked
        // `applies`, or made the part empty).
        unsafe {
            avx2::chunk(self.x, self.w, rows, self.out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = rows;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::array::from_fn;
    use std::ops::Range;

    use super::weight_rows;
    use crate::dequant::avx2::{factors, group, groups, ids, Factors};
    use crate::ggml_type::GgmlType;
    use crate::product::SharedOut;
    use crate::quant_matrix::QuantMatrix;
    use crate::tile_kernel::avx2::hsum;

    /// Computes output columns `rows` (see [`super::multiply`]).
    ///
    /// # Safety
    /// As [`super::multiply`]; no other thread writes columns `rows` meanwhile.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn chunk(x: &[f32], w: &QuantMatrix, rows: Range<usize>, out: SharedOut) {
        // SAFETY: forwarded.
        unsafe {
            match w.ty() {
                GgmlType::Q4_0 => rows_of::<{ ids::Q4_0 }>(x, w, rows, out),
                GgmlType::Q5_0 => rows_of::<{ ids::Q5_0 }>(x, w, rows, out),
                GgmlType::Q8_0 => rows_of::<{ ids::Q8_0 }>(x, w, rows, out),
                GgmlType::Q4K => rows_of::<{ ids::Q4K }>(x, w, rows, out),
                GgmlType::Q5K => rows_of::<{ ids::Q5K }>(x, w, rows, out),
                GgmlType::Q6K => rows_of::<{ ids::Q6K }>(x, w, rows, out),
                // `applies` only lets block-quantized types through.
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
            }
        }
    }

    /// Output columns `rows` for weights of type `T`, in groups of [`weight_rows`] weight rows; a
    /// last, partial group repeats its last row and writes only the rows it has.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_of<const T: u32>(
        x: &[f32],
        w: &QuantMatrix,
        rows: Range<usize>,
        out: SharedOut,
    ) {
        let (n, k) = (w.rows(), w.cols());
        let inputs = x.len() / k;
        let group_rows = weight_rows(inputs);
        let data = w.data().as_ptr();
        let row_bytes = w.row_bytes();
        let mut start = rows.start;
        while start < rows.end {
            let valid = group_rows.min(rows.end - start);
            let row = |a: usize| data.wrapping_add((start + a.min(valid - 1)) * row_bytes);
            let call = Call {
                k,
                block_bytes: w.ty().block_bytes(),
                ahead: group_rows * row_bytes,
                valid,
                out: out.0.wrapping_add(start),
                out_stride: n,
            };
            // SAFETY: the rows exist (a.min(valid - 1) < valid), x holds `inputs` rows of k
            // values, outputs (b, start + a) for a < valid are ours to write.
            let xs = |b: usize| x.as_ptr().wrapping_add(b * k);
            unsafe {
                match inputs {
                    1 => kernel::<T, { weight_rows(1) }, 1>(from_fn(row), [x.as_ptr()], call),
                    2 => kernel::<T, { weight_rows(2) }, 2>(from_fn(row), from_fn(xs), call),
                    3 => kernel::<T, { weight_rows(3) }, 3>(from_fn(row), from_fn(xs), call),
                    _ => kernel::<T, { weight_rows(4) }, 4>(from_fn(row), from_fn(xs), call),
                }
            }
            start += valid;
        }
    }

    /// What a kernel call needs besides its row pointers.
    #[derive(Clone, Copy)]
    struct Call {
        k: usize,
        block_bytes: usize,
        /// Distance in bytes to the rows to prefetch (the next group's; 0: none).
        ahead: usize,
        /// Outputs written: weight rows `0..valid`.
        valid: usize,
        out: *mut f32,
        out_stride: usize,
    }

    /// `NW` weight rows (block data at `rows[a]`) times `NX` input rows (`k` values at `x[b]`),
    /// written to `out + b * out_stride + a` for `a < valid`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; whole rows of type `T` at `rows`, `k` values at each `x[b]`, and the
    /// outputs writable.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel<const T: u32, const NW: usize, const NX: usize>(
        rows: [*const u8; NW],
        x: [*const f32; NX],
        c: Call,
    ) {
        let blocks = c.k / (32 * groups(T));
        let mut acc = [[_mm256_setzero_ps(); NW]; NX];
        for blk in 0..blocks {
            let at = blk * c.block_bytes;
            if c.ahead != 0 {
                for row in rows {
                    let p = row.wrapping_add(at + c.ahead);
                    // A prefetch never faults, wherever it points; the block's last byte covers
                    // a line a short block may start in the middle of.
                    for off in (0..c.block_bytes).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast::<i8>());
                    }
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(c.block_bytes - 1).cast::<i8>());
                }
            }
            let mut f = [Factors::ZERO; NW];
            for (fa, row) in f.iter_mut().zip(rows) {
                // SAFETY: block `blk` of each row exists (contract).
                *fa = unsafe { factors::<T>(row.add(at)) };
            }
            for g in 0..groups(T) {
                let col = (blk * groups(T) + g) * 32;
                for (a, row) in rows.into_iter().enumerate() {
                    // SAFETY: as above; g < groups(T).
                    let v = unsafe { group::<T>(row.add(at), g, &f[a]) };
                    for (q, &vq) in v.iter().enumerate() {
                        for (acc_b, &xb) in acc.iter_mut().zip(&x) {
                            // SAFETY: column col + 8q + 8 <= k of input row b.
                            let xv = unsafe { _mm256_loadu_ps(xb.add(col + 8 * q)) };
                            acc_b[a] = _mm256_fmadd_ps(vq, xv, acc_b[a]);
                        }
                    }
                }
            }
        }
        for (b, acc_b) in acc.iter().enumerate() {
            for (a, &v) in acc_b.iter().enumerate().take(c.valid) {
                // SAFETY: output (b, a) with a < valid (contract).
                unsafe { *c.out.add(b * c.out_stride + a) = hsum(v) };
            }
        }
    }
}
