//! `out = x · Wᵀ` for a weight matrix `W` (n x k, row-major) and a few input rows `x` (r x k):
//! the product `torch.nn.functional.linear` computes, laid out the same way (r x n).
//!
//! Work is split over the rows of `W` (rayon); within a chunk, a micro-kernel loads a pair of
//! weight rows once and multiplies them with up to four input rows (AVX2 + FMA, 8 lanes), while
//! prefetching the weight rows it will need next. Without AVX2/FMA a portable loop computes the
//! same product (slower; callers check [`simd_available`] to choose another path).
//!
//! Each output element is accumulated in a fixed order that depends only on `k`: the result for
//! one input row is bit-identical whatever other rows share the call, and the portable loop uses
//! the same order, so both paths agree bit for bit.

use rayon::prelude::*;

/// Lanes of one accumulator: each output element sums lane `j` over columns `j, j + 8, ...`,
/// then adds the lanes pairwise, then the tail columns (`k % 8`) in order.
const LANES: usize = 8;
/// Weight rows per micro-kernel call.
const WEIGHT_BLOCK: usize = 2;
/// Input rows per micro-kernel call at most.
const INPUT_BLOCK: usize = 4;
/// How many weight rows ahead of the current one are prefetched.
const PREFETCH_ROWS: usize = 16;

/// A shape problem in the arguments of [`linear_rows`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("the inner dimension k must be at least 1")]
    EmptyInner,
    #[error("x has {len} values, not a multiple of k = {k}")]
    InputShape { len: usize, k: usize },
    #[error("the weight has {len} values, not a multiple of k = {k}")]
    WeightShape { len: usize, k: usize },
    #[error("out has {len} values; {rows} input rows x {n} weight rows need {expected}")]
    OutputShape {
        len: usize,
        rows: usize,
        n: usize,
        expected: usize,
    },
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

/// True when this CPU runs the AVX2/FMA kernel (otherwise [`linear_rows`] uses a portable loop).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Writes `x · Wᵀ` into `out`: `x` holds `r` rows of `k` values, `w` holds `n` rows of `k`
/// values, `out` receives `r` rows of `n` values (all row-major). Runs on rayon's pool.
pub fn linear_rows(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) -> Result<(), KernelError> {
    run(x, w, k, out, simd_available())
}

fn run(x: &[f32], w: &[f32], k: usize, out: &mut [f32], simd: bool) -> Result<(), KernelError> {
    if k == 0 {
        return Err(KernelError::EmptyInner);
    }
    if !x.len().is_multiple_of(k) {
        return Err(KernelError::InputShape { len: x.len(), k });
    }
    if !w.len().is_multiple_of(k) {
        return Err(KernelError::WeightShape { len: w.len(), k });
    }
    let (rows, n) = (x.len() / k, w.len() / k);
    if out.len() != rows * n {
        return Err(KernelError::OutputShape {
            len: out.len(),
            rows,
            n,
            expected: rows * n,
        });
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let chunk = chunk_rows(n);
    let out_ptr = SharedOut(out.as_mut_ptr());
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let start = c * chunk;
        let end = (start + chunk).min(n);
        let shape = Shape { rows, n, k };
        // SAFETY: the chunks partition 0..n, so each task writes only the columns start..end of
        // every output row: no two tasks touch the same element, and all indices stay inside
        // `out` (checked to hold rows * n values above), which outlives the parallel loop.
        unsafe { weight_chunk(x, w, shape, start..end, out_ptr, simd) }
    });
    Ok(())
}

#[derive(Clone, Copy)]
struct Shape {
    rows: usize,
    n: usize,
    k: usize,
}

/// The output buffer, shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see `linear_rows`: tasks write disjoint elements of a buffer that outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Weight rows per parallel task: a few dozen tasks per thread keep the threads balanced.
fn chunk_rows(n: usize) -> usize {
    let tasks = rayon::current_num_threads().max(1) * 16;
    n.div_ceil(tasks)
        .clamp(16, 1024)
        .next_multiple_of(WEIGHT_BLOCK)
}

/// Splits `len` input rows into nearly equal groups of at most `INPUT_BLOCK` (17 -> 4,4,3,3,3).
fn next_group(left: usize) -> usize {
    let groups = left.div_ceil(INPUT_BLOCK);
    left.div_ceil(groups)
}

/// # Safety
/// `out` must point to `shape.rows * shape.n` writable values, `cols` must lie in `0..shape.n`,
/// and no other thread may write those columns meanwhile.
unsafe fn weight_chunk(
    x: &[f32],
    w: &[f32],
    shape: Shape,
    cols: std::ops::Range<usize>,
    out: SharedOut,
    simd: bool,
) {
    let Shape { rows, n, k } = shape;
    let mut wr = cols.start;
    while wr < cols.end {
        let nw = (cols.end - wr).min(WEIGHT_BLOCK);
        let wblock = &w[wr * k..(wr + nw) * k];
        let ahead = w.get((wr + PREFETCH_ROWS) * k..).unwrap_or(&[]);
        let mut xr = 0;
        while xr < rows {
            let nx = next_group(rows - xr);
            let xblock = &x[xr * k..(xr + nx) * k];
            let mut sums = [[0f32; INPUT_BLOCK]; WEIGHT_BLOCK];
            dot_block(wblock, xblock, k, ahead, simd, &mut sums);
            for (a, row_sums) in sums.iter().enumerate().take(nw) {
                for (b, &s) in row_sums.iter().enumerate().take(nx) {
                    // SAFETY: (xr + b) < rows and (wr + a) < cols.end <= n (caller's contract).
                    unsafe { *out.0.add((xr + b) * n + wr + a) = s };
                }
            }
            xr += nx;
        }
        wr += nw;
    }
}

/// `sums[a][b]` = dot(weight row `a`, input row `b`) for the rows in the two blocks.
fn dot_block(
    wblock: &[f32],
    xblock: &[f32],
    k: usize,
    ahead: &[f32],
    simd: bool,
    sums: &mut [[f32; INPUT_BLOCK]; WEIGHT_BLOCK],
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        let (nw, nx) = (wblock.len() / k, xblock.len() / k);
        // SAFETY: `simd` is only true when `simd_available()` found AVX2 and FMA.
        unsafe {
            match (nw, nx) {
                (2, 4) => avx2::dot::<2, 4>(wblock, xblock, k, ahead, sums),
                (2, 3) => avx2::dot::<2, 3>(wblock, xblock, k, ahead, sums),
                (2, 2) => avx2::dot::<2, 2>(wblock, xblock, k, ahead, sums),
                (2, _) => avx2::dot::<2, 1>(wblock, xblock, k, ahead, sums),
                (_, 4) => avx2::dot::<1, 4>(wblock, xblock, k, ahead, sums),
                (_, 3) => avx2::dot::<1, 3>(wblock, xblock, k, ahead, sums),
                (_, 2) => avx2::dot::<1, 2>(wblock, xblock, k, ahead, sums),
                _ => avx2::dot::<1, 1>(wblock, xblock, k, ahead, sums),
            }
        }
        return;
    }
    let _ = (ahead, simd);
    for (a, wrow) in wblock.chunks_exact(k).enumerate() {
        for (b, xrow) in xblock.chunks_exact(k).enumerate() {
            sums[a][b] = portable_dot(wrow, xrow);
        }
    }
}

/// The reference order: 8 lane sums, combined pairwise like the AVX2 reduction, then the tail.
fn portable_dot(w: &[f32], x: &[f32]) -> f32 {
    let body = w.len() / LANES * LANES;
    let mut lanes = [0f32; LANES];
    for (wc, xc) in w[..body]
        .chunks_exact(LANES)
        .zip(x[..body].chunks_exact(LANES))
    {
        for j in 0..LANES {
            lanes[j] = wc[j].mul_add(xc[j], lanes[j]);
        }
    }
    let mut s = reduce_lanes(lanes);
    for j in body..w.len() {
        s += w[j] * x[j];
    }
    s
}

/// (l0+l4, l1+l5, l2+l6, l3+l7) -> (q0+q2, q1+q3) -> r0+r1: the AVX2 reduction's order.
fn reduce_lanes(l: [f32; LANES]) -> f32 {
    let q = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let h = [q[0] + q[2], q[1] + q[3]];
    h[0] + h[1]
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{INPUT_BLOCK, LANES, WEIGHT_BLOCK};
    use std::arch::x86_64::*;

    /// Horizontal sum in the order of `super::reduce_lanes`.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let q = _mm_add_ps(lo, hi);
        let h = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let r = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
        _mm_cvtss_f32(r)
    }

    /// `NW` weight rows times `NX` input rows; `ahead` starts `PREFETCH_ROWS` weight rows later.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA. `w` holds at least `NW * k` values and `x` at least
    /// `NX * k` (both checked).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot<const NW: usize, const NX: usize>(
        w: &[f32],
        x: &[f32],
        k: usize,
        ahead: &[f32],
        sums: &mut [[f32; INPUT_BLOCK]; WEIGHT_BLOCK],
    ) {
        assert!(w.len() >= NW * k && x.len() >= NX * k && NW <= WEIGHT_BLOCK && NX <= INPUT_BLOCK);
        let body = k / LANES * LANES;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); NW]; NX];
        let mut i = 0;
        while i < body {
            let mut wv = [_mm256_setzero_ps(); NW];
            for (a, v) in wv.iter_mut().enumerate() {
                // SAFETY: a * k + i + 8 <= NW * k <= w.len().
                *v = unsafe { _mm256_loadu_ps(wp.add(a * k + i)) };
            }
            if i % 16 == 0 {
                for a in 0..NW {
                    if let Some(p) = ahead.get(a * k + i) {
                        _mm_prefetch::<_MM_HINT_T0>((p as *const f32).cast::<i8>());
                    }
                }
            }
            for (b, acc_b) in acc.iter_mut().enumerate() {
                // SAFETY: b * k + i + 8 <= NX * k <= x.len().
                let xv = unsafe { _mm256_loadu_ps(xp.add(b * k + i)) };
                for (v, &wa) in acc_b.iter_mut().zip(&wv) {
                    *v = _mm256_fmadd_ps(wa, xv, *v);
                }
            }
            i += LANES;
        }
        for (b, acc_b) in acc.iter().enumerate() {
            for (a, &v) in acc_b.iter().enumerate() {
                let mut s = hsum(v);
                for j in body..k {
                    s += w[a * k + j] * x[b * k + j];
                }
                sums[a][b] = s;
            }
        }
    }
}
