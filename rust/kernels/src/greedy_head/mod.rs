//! The argmax of `x · Wᵀ` over a large Q8_0 matrix (an LM head) without computing every
//! output: what greedy decoding needs from the head, at about two thirds of the bytes read.
//!
//! A full head product reads every block of the matrix (178 MB for Gemma 3's 262144 x 640 head)
//! and is bound by memory bandwidth. [`GreedyHead`] keeps, next to the matrix, a 5-bit *proxy*
//! of it (22 bytes per block of 32 values instead of 34) and answers in two passes:
//!
//! 1. Every row's proxy estimate `p_j` and a bound `B_j` with `|exact_j - p_j| <= B_j`, where
//!    `exact_j` is the value [`crate::qlinear`] computes for that row. Integer dot products of
//!    the proxy values with the input quantized to int16, so the pass is bound by reading the
//!    proxy.
//! 2. With `M = max_j (p_j - B_j)`, only the *candidates* `p_j + B_j >= M` can hold the maximum:
//!    every other row is strictly below the row that reaches `M`. The candidates (typically a
//!    few dozen to a few hundred rows) are computed exactly by [`crate::qlinear`] and the first
//!    maximal one is the answer.
//!
//! The answer is therefore, by construction, the index `argmax(qlinear(x, W))` gives (first
//! maximal index), on every path and CPU: the estimates may differ between the AVX2 and the
//! portable pass, the bounds hold for both. Inputs the bound does not cover (a non-finite or
//! vanishingly small input value, an estimate that overflows) and calls where the bound rules out
//! too little are computed in full.
//!
//! # The proxy and its bound
//! A Q8_0 value is `w = d q` (q in -128..=127, `d` the block's f16 scale; the product is exact in
//! f32). Write `q = 8 h + l` with `h = q >> 3` in -16..=15 and `l` in 0..=7. The proxy value is
//! `p = 8 d (h + 7/16)`, so `|w - p| = d |l - 3.5| <= 3.5 d`. It is stored as `v = h + 16` (0..=31)
//! as 16 bytes of nibbles and 4 bytes of fifth bits (bit `i`: value `i`); the nibbles are stored
//! in the order the AVX2 decoder yields them ([`stored_value`]), and each input block's int16
//! values are stored in the same order (an exact integer sum does not depend on it). A proxy row
//! starts with its blocks' `d` (the same f16 bits), padded to a multiple of 8.
//!
//! An input block `x_b` (32 values) is quantized to `xq = round(x / s)` with `s = max|x_b| / 32767`,
//! so `x = s xq + e` with `|e| <= 0.51 s` (0.5 from rounding, 0.006 from the f32 division and
//! scale). Per block, `sum(p x) = 8 d s (sum(v xq) - 15.5625 sum(xq)) + sum(p e)`, the first sum an
//! exact integer. Against the real dot product, the estimate is off by at most
//! `sum_b |d_b| (3.5 L_b + 124.5 * 0.51 s_b * 32)` (`L_b = sum|x_b|`, `|p| <= 124.5 |d|`), and as
//! `s_b <= L_b / 32767` that is at most `3.562 sum_b |d_b| L_b`. Then the roundings ([`bound_factor`]
//! adds them up): the estimate's terms are each below `373 |d_b| L_b` and its sums round each
//! partial result once per block and a few times more; the exact kernel's result lies within
//! `gamma_(k/8 + 3)` of `sum |w x| <= 128 sum_b |d_b| L_b` of the real product (8 lanes of `k/8`
//! fused multiply-adds, then 3 pairwise additions). The factor is raised by 0.1% more, which
//! covers the roundings of computing the bound itself. `M` and the candidate test are computed in
//! f64 from the f32 estimates and bounds.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod portable;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::simd_available;
use crate::dequant::f16_at;
use crate::error::KernelError;
use crate::ggml_type::GgmlType;
use crate::pool;
use crate::qlinear::{qlinear, qlinear_portable};
use crate::quant_matrix::QuantMatrix;

/// Values per block (Q8_0's and the proxy's).
const BLOCK: usize = 32;
/// Bytes of a proxy block's values: 16 bytes of nibbles, 4 bytes of fifth bits.
const VALUE_BYTES: usize = 20;
/// Block scales are read 8 at a time: a proxy row holds a multiple of 8 of them.
const SCALE_SLOTS: usize = 8;
/// Bytes of a Q8_0 block.
const Q8_BLOCK_BYTES: usize = 34;
/// `16 - 7/16`: the offset of the stored values `v` from the centred proxy values `h + 7/16`.
const CENTRE: f32 = 15.5625;
/// The largest int16 an input value is quantized to.
const XQ_MAX: f32 = 32767.0;
/// Smallest nonzero block maximum the bound covers: below it the f32 scale `s` would lose
/// precision (subnormal), so such inputs are computed in full.
const MIN_BLOCK_MAX: f32 = 1e-30;
/// Rows longer than this many blocks are not supported (the 0.1% margin of [`bound_factor`]
/// must cover the roundings of summing `blocks` bound terms).
const MAX_BLOCKS: usize = 4096;
/// Input rows one pass over the proxy serves at most (their accumulators stay in registers);
/// more rows take several passes.
const PASS_ROWS: usize = 4;
/// Rows whose largest `p_j + B_j` is kept, so that the candidate scan skips the groups that
/// cannot hold one. Tasks hold whole groups.
const GROUP_ROWS: usize = 256;
/// Tasks per thread of the estimate pass.
const TASKS_PER_THREAD: usize = 4;
/// When more than `rows / FULL_FRACTION` rows are candidates, the row is computed in full.
const FULL_FRACTION: usize = 16;

/// Why a matrix has no [`GreedyHead`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GreedyHeadError {
    #[error("a greedy head is built from a Q8_0 matrix; this one is {0}")]
    UnsupportedType(&'static str),
    #[error("a greedy head takes rows of at most {max} values; these have {cols}")]
    TooWide { cols: usize, max: usize },
    #[error("row {row}, block {block} of the matrix has a non-finite scale")]
    NonFiniteScale { row: usize, block: usize },
}

/// A Q8_0 matrix with its 5-bit proxy (see the module docs).
pub struct GreedyHead {
    exact: QuantMatrix,
    /// `rows` proxy rows of [`Layout::row_bytes`] bytes.
    proxy: Vec<u8>,
    layout: Layout,
    /// `B_j = factor * sum_b |d_b| L_b` ([`bound_factor`]).
    factor: f32,
}

/// Where things are in a proxy row.
#[derive(Clone, Copy)]
struct Layout {
    blocks: usize,
    /// Scale slots: `blocks` rounded up to a multiple of [`SCALE_SLOTS`].
    slots: usize,
}

impl Layout {
    fn new(blocks: usize) -> Self {
        Layout {
            blocks,
            slots: blocks.next_multiple_of(SCALE_SLOTS),
        }
    }

    /// Offset of the values (after the scales).
    fn values_at(self) -> usize {
        2 * self.slots
    }

    fn row_bytes(self) -> usize {
        self.values_at() + VALUE_BYTES * self.blocks
    }
}

/// What one [`GreedyHead::argmax`] call did per input row: how many rows it computed exactly
/// (the candidates, or every row when it computed the row in full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgmaxReport {
    pub exact_rows: Vec<usize>,
}

/// One input row as the estimate pass reads it. The per-block factors are padded with zeros to
/// the layout's scale slots.
struct Prepared {
    /// The int16 values, `k` of them, each block's in stored order ([`stored_value`]).
    xq: Vec<i16>,
    /// Per block: `8 s_b`.
    scale8: Vec<f32>,
    /// Per block: `-15.5625 * 8 s_b * sum(xq_b)`.
    centre: Vec<f32>,
    /// Per block: `L_b = sum |x_b|`.
    l1: Vec<f32>,
}

/// The estimate pass's results for one input row.
struct Estimates {
    est: Vec<f32>,
    bound: Vec<f32>,
    /// `max_j (p_j - B_j)` (f64).
    low: f64,
    /// Per group of [`GROUP_ROWS`] rows: `max (p_j + B_j)` (f64).
    group_high: Vec<f64>,
}

/// A pointer to a buffer whose elements tasks write disjointly.
#[derive(Clone, Copy)]
struct Slots<T>(*mut T);
// SAFETY: tasks write disjoint elements of a buffer the caller owns for the whole dispatch.
unsafe impl<T> Send for Slots<T> {}
unsafe impl<T> Sync for Slots<T> {}

impl<T> Slots<T> {
    /// The pointer (a method, so that closures capture the whole `Slots`, which is `Sync`).
    fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// The factor of the bound for rows of `blocks` blocks (see the module docs).
fn bound_factor(blocks: usize) -> f32 {
    let u = f64::powi(2.0, -24) * 1.01;
    let k = (blocks * BLOCK) as f64;
    let error = 3.5 + 124.5 * 0.51 * 32.0 / f64::from(XQ_MAX);
    let estimate_roundings = (2 * blocks + 10) as f64 * 373.0 * u;
    let exact_roundings = (k / 8.0 + 3.0) * 128.0 * u;
    ((error + estimate_roundings + exact_roundings) * 1.001) as f32
}

impl GreedyHead {
    /// The proxy of `w` (Q8_0, finite scales), built on the kernels' threads.
    pub fn new(w: &QuantMatrix) -> Result<Self, GreedyHeadError> {
        if w.ty() != GgmlType::Q8_0 {
            return Err(GreedyHeadError::UnsupportedType(w.ty().name()));
        }
        let (rows, blocks) = (w.rows(), w.cols() / BLOCK);
        if blocks > MAX_BLOCKS {
            return Err(GreedyHeadError::TooWide {
                cols: w.cols(),
                max: MAX_BLOCKS * BLOCK,
            });
        }
        let data = w.data();
        let row_bytes = w.row_bytes();
        for row in 0..rows {
            for block in 0..blocks {
                if !f16_at(data, row * row_bytes + block * Q8_BLOCK_BYTES).is_finite() {
                    return Err(GreedyHeadError::NonFiniteScale { row, block });
                }
            }
        }
        let layout = Layout::new(blocks);
        let proxy_row = layout.row_bytes();
        let mut proxy = vec![0u8; rows * proxy_row];
        let chunk = GROUP_ROWS * 4;
        let out = Slots(proxy.as_mut_ptr());
        pool::for_each(rows.div_ceil(chunk), &|task| {
            let lo = task * chunk;
            let hi = (lo + chunk).min(rows);
            // SAFETY: task `task` alone writes the proxy rows lo..hi.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(out.at(lo * proxy_row), (hi - lo) * proxy_row)
            };
            let src = &data[lo * row_bytes..hi * row_bytes];
            for (q8, p5) in src
                .chunks_exact(row_bytes)
                .zip(dst.chunks_exact_mut(proxy_row))
            {
                proxy_row_of(q8, p5, layout);
            }
        });
        Ok(Self {
            exact: w.clone(),
            proxy,
            layout,
            factor: bound_factor(blocks),
        })
    }

    /// Rows of the matrix (outputs per input row).
    pub fn rows(&self) -> usize {
        self.exact.rows()
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.exact.cols()
    }

    /// Bytes of the proxy (what the estimate pass reads per call).
    pub fn proxy_bytes(&self) -> usize {
        self.proxy.len()
    }

    /// Writes into `out[r]` the first maximal index of `qlinear(x[r], W)` for every input row
    /// `r` of `x` (rows of `cols()` values): NaN counts as maximal, as in `torch.argmax`.
    pub fn argmax(&self, x: &[f32], out: &mut [u32]) -> Result<ArgmaxReport, KernelError> {
        self.run(x, out, simd_available())
    }

    /// [`GreedyHead::argmax`] on the portable paths, whatever the CPU (the same answers).
    pub fn argmax_portable(&self, x: &[f32], out: &mut [u32]) -> Result<ArgmaxReport, KernelError> {
        self.run(x, out, false)
    }

    fn run(&self, x: &[f32], out: &mut [u32], simd: bool) -> Result<ArgmaxReport, KernelError> {
        let (n, k) = (self.rows(), self.cols());
        if !x.len().is_multiple_of(k) {
            return Err(KernelError::InputShape { len: x.len(), k });
        }
        let inputs = x.len() / k;
        if out.len() != inputs {
            return Err(KernelError::OutputShape {
                len: out.len(),
                rows: inputs,
                n: 1,
                expected: inputs,
            });
        }
        let rows: Vec<&[f32]> = x.chunks_exact(k).collect();
        let prepared: Vec<Option<Prepared>> =
            rows.iter().map(|r| prepare(r, self.layout)).collect();
        let bounded: Vec<usize> = (0..inputs).filter(|&r| prepared[r].is_some()).collect();
        let mut report = ArgmaxReport {
            exact_rows: vec![n; inputs],
        };
        for pass in bounded.chunks(PASS_ROWS) {
            let group: Vec<&Prepared> = pass.iter().filter_map(|&r| prepared[r].as_ref()).collect();
            let estimates = self.estimate(&group, simd);
            for (&r, e) in pass.iter().zip(&estimates) {
                let Some(cands) = e.as_ref().and_then(|e| candidates(e, n / FULL_FRACTION)) else {
                    continue; // computed in full below
                };
                let sub =
                    self.exact
                        .select_rows(&cands)
                        .map_err(|_| KernelError::RowOutOfRange {
                            row: cands[cands.len() - 1],
                            rows: n,
                        })?;
                let mut logits = vec![0.0f32; cands.len()];
                product(rows[r], &sub, &mut logits, simd)?;
                out[r] = cands[first_max(&logits)] as u32;
                report.exact_rows[r] = cands.len();
            }
        }
        for r in 0..inputs {
            if report.exact_rows[r] == n {
                let mut logits = vec![0.0f32; n];
                product(rows[r], &self.exact, &mut logits, simd)?;
                out[r] = first_max(&logits) as u32;
            }
        }
        Ok(report)
    }

    /// Estimates and bounds of every weight row for each of `group`'s input rows (at most
    /// [`PASS_ROWS`]), on the kernels' threads; `None` for an input row where one is not finite.
    fn estimate(&self, group: &[&Prepared], simd: bool) -> Vec<Option<Estimates>> {
        let n = self.rows();
        let groups = n.div_ceil(GROUP_ROWS);
        let threads = pool::threads().max(1);
        let chunk = n
            .div_ceil(threads * TASKS_PER_THREAD)
            .next_multiple_of(GROUP_ROWS);
        let tasks = n.div_ceil(chunk);
        let mut est: Vec<Estimates> = group
            .iter()
            .map(|_| Estimates {
                est: vec![0.0; n],
                bound: vec![0.0; n],
                low: f64::NEG_INFINITY,
                group_high: vec![f64::NEG_INFINITY; groups],
            })
            .collect();
        let mut task_low = vec![f64::NEG_INFINITY; tasks * PASS_ROWS];
        let finite: Vec<AtomicBool> = group.iter().map(|_| AtomicBool::new(true)).collect();
        let slots: Vec<(Slots<f32>, Slots<f32>, Slots<f64>)> = est
            .iter_mut()
            .map(|e| {
                (
                    Slots(e.est.as_mut_ptr()),
                    Slots(e.bound.as_mut_ptr()),
                    Slots(e.group_high.as_mut_ptr()),
                )
            })
            .collect();
        let lows = Slots(task_low.as_mut_ptr());
        let proxy_row = self.layout.row_bytes();
        pool::for_each(tasks, &|task| {
            let lo = task * chunk;
            let hi = (lo + chunk).min(n);
            let rows = &self.proxy[lo * proxy_row..hi * proxy_row];
            let mut e = [[0.0f32; PASS_ROWS]; 2];
            let mut low = [f64::NEG_INFINITY; PASS_ROWS];
            let mut high = [f64::NEG_INFINITY; PASS_ROWS];
            for (j, row) in rows.chunks_exact(proxy_row).enumerate() {
                estimate_row(row, self.layout, group, self.factor, &mut e, simd);
                let at = lo + j;
                for (r, (es, bs, gs)) in slots.iter().enumerate() {
                    let (p, b) = (e[0][r], e[1][r]);
                    if !(p.is_finite() && b.is_finite()) {
                        finite[r].store(false, Ordering::Relaxed);
                    }
                    low[r] = low[r].max(f64::from(p) - f64::from(b));
                    high[r] = high[r].max(f64::from(p) + f64::from(b));
                    // SAFETY: row `at` and its group belong to this task alone (tasks hold
                    // whole groups); the buffers hold n values and `groups` groups.
                    unsafe {
                        *es.at(at) = p;
                        *bs.at(at) = b;
                        if (at + 1).is_multiple_of(GROUP_ROWS) || at + 1 == hi {
                            *gs.at(at / GROUP_ROWS) = high[r];
                        }
                    }
                    if (at + 1).is_multiple_of(GROUP_ROWS) {
                        high[r] = f64::NEG_INFINITY;
                    }
                }
            }
            for (r, &l) in low.iter().enumerate().take(group.len()) {
                // SAFETY: slot (task, r) is this task's alone.
                unsafe { *lows.at(task * PASS_ROWS + r) = l };
            }
        });
        for (r, e) in est.iter_mut().enumerate() {
            e.low = (0..tasks)
                .map(|t| task_low[t * PASS_ROWS + r])
                .fold(f64::NEG_INFINITY, f64::max);
        }
        est.into_iter()
            .zip(&finite)
            .map(|(e, ok)| ok.load(Ordering::Relaxed).then_some(e))
            .collect()
    }
}

/// Estimates (`e[0][r]`) and bounds (`e[1][r]`) of one proxy row for each input row of `group`.
fn estimate_row(
    row: &[u8],
    layout: Layout,
    group: &[&Prepared],
    factor: f32,
    e: &mut [[f32; PASS_ROWS]; 2],
    simd: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C; `row` is a proxy row
        // of `layout` and every prepared row has its values and factors.
        unsafe { avx2::estimate_row(row, layout, group, factor, e) };
        return;
    }
    let _ = simd;
    portable::estimate_row(row, layout, group, factor, e);
}

/// `x · Wᵀ` for one input row on the chosen path.
fn product(x: &[f32], w: &QuantMatrix, out: &mut [f32], simd: bool) -> Result<(), KernelError> {
    if simd {
        qlinear(x, w, out)
    } else {
        qlinear_portable(x, w, out)
    }
}

/// The value held by stored position `t` (0..32) of a block: the low nibble of byte `t` for
/// `t < 16`, the high nibble of byte `t - 16` otherwise. Position `l` of a half holds value
/// `16 (l % 2) + l / 2` (low nibbles) or `16 (l % 2) + 8 + l / 2` (high nibbles): the order in
/// which the AVX2 decoder finds the fifth bits of a broadcast 32-bit word, two 16-bit halves per
/// lane pair (see `avx2`).
pub(crate) const fn stored_value(t: usize) -> usize {
    let (high, l) = (t / 16, t % 16);
    16 * (l % 2) + 8 * high + l / 2
}

/// The proxy row of the Q8_0 row `q8` (see the module docs).
fn proxy_row_of(q8: &[u8], p5: &mut [u8], layout: Layout) {
    let (scales, values) = p5.split_at_mut(layout.values_at());
    for ((block, scale), value) in q8
        .chunks_exact(Q8_BLOCK_BYTES)
        .zip(scales.chunks_exact_mut(2))
        .zip(values.chunks_exact_mut(VALUE_BYTES))
    {
        scale.copy_from_slice(&block[..2]);
        let v = |i: usize| (((block[2 + i] as i8) >> 3) + 16) as u8; // 0..=31
        let mut high = 0u32;
        for i in 0..BLOCK {
            high |= u32::from(v(i) >> 4) << i;
        }
        for (t, byte) in value[..16].iter_mut().enumerate() {
            *byte = (v(stored_value(t)) & 0x0f) | (v(stored_value(t + 16)) & 0x0f) << 4;
        }
        value[16..20].copy_from_slice(&high.to_le_bytes());
    }
}

/// The stored value `v` (0..=31) at stored position `t` of a proxy block's value bytes (the
/// value [`stored_value`] names).
fn proxy_value(value: &[u8], t: usize) -> u8 {
    let high = u32::from_le_bytes([value[16], value[17], value[18], value[19]]);
    let nibble = if t < 16 {
        value[t] & 0x0f
    } else {
        value[t - 16] >> 4
    };
    nibble | (((high >> stored_value(t)) & 1) as u8) << 4
}

/// The int16 form of one input row, or `None` when the bound does not cover it (a non-finite
/// value, or a block whose largest magnitude is nonzero but below [`MIN_BLOCK_MAX`]).
fn prepare(x: &[f32], layout: Layout) -> Option<Prepared> {
    let mut p = Prepared {
        xq: vec![0; x.len()],
        scale8: vec![0.0; layout.slots],
        centre: vec![0.0; layout.slots],
        l1: vec![0.0; layout.slots],
    };
    for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
        let mut max = 0.0f32;
        let mut l1 = 0.0f32;
        for &v in xb {
            if !v.is_finite() {
                return None;
            }
            max = max.max(v.abs());
            l1 += v.abs();
        }
        if max == 0.0 {
            continue;
        }
        if max < MIN_BLOCK_MAX {
            return None;
        }
        let (s, inv) = (max / XQ_MAX, XQ_MAX / max);
        let mut sum = 0i32;
        for (t, q) in p.xq[b * BLOCK..(b + 1) * BLOCK].iter_mut().enumerate() {
            let r = (xb[stored_value(t)] * inv).round().clamp(-XQ_MAX, XQ_MAX) as i16;
            *q = r;
            sum += i32::from(r);
        }
        p.scale8[b] = 8.0 * s;
        p.centre[b] = -CENTRE * (8.0 * s) * sum as f32;
        p.l1[b] = l1;
    }
    Some(p)
}

/// The rows that may hold the maximum, ascending, or `None` when there are more than `limit`
/// (or none).
fn candidates(e: &Estimates, limit: usize) -> Option<Vec<usize>> {
    let mut found = Vec::new();
    for (g, &high) in e.group_high.iter().enumerate() {
        if high < e.low {
            continue;
        }
        let rows = g * GROUP_ROWS..((g + 1) * GROUP_ROWS).min(e.est.len());
        for j in rows {
            if f64::from(e.est[j]) + f64::from(e.bound[j]) >= e.low {
                found.push(j);
                if found.len() > limit {
                    return None;
                }
            }
        }
    }
    (!found.is_empty()).then_some(found)
}

/// The first maximal index of `v` (the first NaN if there is one, as `torch.argmax`).
fn first_max(v: &[f32]) -> usize {
    if let Some(i) = v.iter().position(|x| x.is_nan()) {
        return i;
    }
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd_available;

    #[test]
    fn proxy_values_round_q8_values_down_to_multiples_of_eight() {
        let mut q8 = vec![0u8; Q8_BLOCK_BYTES];
        q8[0] = 0x00;
        q8[1] = 0x3c; // d = 1.0
        for i in 0..BLOCK {
            q8[2 + i] = ((i as i32 * 8 - 128) + i as i32 % 8) as i8 as u8;
        }
        let layout = Layout::new(1);
        let mut p5 = vec![0u8; layout.row_bytes()];
        proxy_row_of(&q8, &mut p5, layout);
        assert_eq!(&p5[..2], &q8[..2]);
        let mut seen = [false; BLOCK];
        for t in 0..BLOCK {
            let i = stored_value(t);
            assert!(
                !std::mem::replace(&mut seen[i], true),
                "position {t} repeats value {i}"
            );
            let q = i32::from(q8[2 + i] as i8);
            let v = i32::from(proxy_value(&p5[layout.values_at()..], t));
            assert!((0..32).contains(&v));
            let l = q - 8 * (v - 16);
            assert!((0..8).contains(&l), "value {i}: q {q}, v {v}");
        }
    }

    /// Every row's exact product lies within its bound of its estimate, on both paths.
    #[test]
    fn exact_products_lie_within_the_bounds() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..40 {
            let (n, blocks) = (1 + (next() % 90) as usize, 1 + (next() % 20) as usize);
            let k = blocks * BLOCK;
            let mut data = Vec::new();
            for _ in 0..n * blocks {
                let d = ((next() as u16) & 0x83ff) | ((((next() % 8) + 6) as u16) << 10);
                data.extend_from_slice(&d.to_le_bytes());
                data.extend((0..BLOCK).map(|_| next() as u8));
            }
            let m = QuantMatrix::from_vec(GgmlType::Q8_0, n, k, data).unwrap();
            let head = GreedyHead::new(&m).unwrap();
            let x: Vec<f32> = (0..k)
                .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0)
                .collect();
            let mut exact = vec![0.0f32; n];
            qlinear_portable(&x, &m, &mut exact).unwrap();
            let p = prepare(&x, head.layout).unwrap();
            for simd in [false, simd_available()] {
                let found = head.estimate(&[&p], simd).pop().unwrap().unwrap();
                let (e, b) = (&found.est, &found.bound);
                for j in 0..n {
                    let err = (f64::from(exact[j]) - f64::from(e[j])).abs();
                    assert!(
                        err <= f64::from(b[j]),
                        "case {case} row {j} simd {simd}: exact {} estimate {} bound {}",
                        exact[j],
                        e[j],
                        b[j]
                    );
                }
            }
        }
    }

    #[test]
    fn the_bound_factor_covers_the_error_terms_with_little_to_spare() {
        // Gemma 3's 640 values per row; a 16384-value row.
        assert!(
            (3.562..3.57).contains(&bound_factor(20)),
            "{}",
            bound_factor(20)
        );
        assert!(
            (3.6..3.8).contains(&bound_factor(512)),
            "{}",
            bound_factor(512)
        );
    }

    #[test]
    fn first_max_takes_the_first_of_ties_and_nan_first() {
        assert_eq!(first_max(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(first_max(&[1.0, f32::NAN, 5.0, f32::NAN]), 1);
        assert_eq!(first_max(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn inputs_outside_the_bound_are_not_prepared() {
        let mut x = vec![0.5f32; 64];
        assert!(prepare(&x, Layout::new(2)).is_some());
        x[3] = f32::NAN;
        assert!(prepare(&x, Layout::new(2)).is_none());
        x[3] = 1e-35; // tiny next to the block's other values: covered
        assert!(prepare(&x, Layout::new(2)).is_some());
        x[..32].fill(1e-35); // a whole block this small is not
        assert!(prepare(&x, Layout::new(2)).is_none());
        x[..32].fill(0.0);
        let p = prepare(&x, Layout::new(2)).unwrap();
        assert_eq!(p.scale8[0], 0.0);
        assert_eq!(p.l1[0], 0.0);
    }
}
