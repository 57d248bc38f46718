//! Attention of a few query rows over a KV cache, with each row's result independent of the
//! other rows, of how many keys the cache holds beyond the row's visible ones, and of where the
//! keys lie in memory.
//!
//! PyTorch's attention kernels block their reductions by the shapes of the call (the number of
//! query rows, the key length, the vector tail), so a query row's output can change in its last
//! bits when the same row is scored in a tree step instead of a plain step. That breaks "drafted
//! output equals plain decoding" at the rare argmax near a tie, the more often the more a
//! downstream rounding amplifies it (the int8 numeric mode quantizes every activation).
//!
//! Order of one (head, query row) result, fixed so that AVX2 equals the portable path bit for bit:
//! - score of key `j`: `dot(q, k_j)` in 8 lanes (lane `l` accumulates `q[l] k[l], q[l+8] k[l+8],
//!   ...` with fused multiply-adds from 0), the lanes reduced as the linear kernels reduce them,
//!   then the `dim % 8` tail added in order with fused multiply-adds; times `scaling`; with a
//!   soft cap `c`, `tanh(s / c) * c`;
//! - only visible keys take part, in increasing key order: `m` = their largest score,
//!   `p_j = exp(s_j - m)` (the polynomial [`exp_nonpositive`], identical on every path),
//!   `sum` = the `p_j` added one after the other;
//! - `out[d]` = the `p_j * v_j[d]` accumulated one key after the other with fused multiply-adds
//!   from 0, then divided by `sum`.
//!
//! A query row that sees no key gets zeros.

use crate::cpu::simd_available;
use crate::error::KernelError;
use crate::pool;
use crate::tile_kernel::{reduce_lanes, Lanes};

const LANES: usize = 8;
/// Multiply-adds below which a call runs on the calling thread alone (waking helpers costs more).
const INLINE_WORK: usize = 1 << 18;

/// Keys or values: `heads` blocks of `rows` rows of `dim` values, row `r` of head `h` starting at
/// `data[h * head_stride + r * row_stride]` (a view of a larger cache buffer is fine).
#[derive(Clone, Copy, Debug)]
pub struct KvView<'a> {
    pub data: &'a [f32],
    pub head_stride: usize,
    pub row_stride: usize,
}

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Query heads; a multiple of `kv_heads` (grouped-query attention shares a KV head).
    pub heads: usize,
    pub kv_heads: usize,
    /// Query rows per head.
    pub queries: usize,
    /// Keys (and values) per KV head.
    pub keys: usize,
    /// Values per head row.
    pub dim: usize,
}

/// Which keys each query row sees.
#[derive(Clone, Copy, Debug)]
pub enum Visibility<'a> {
    /// `queries x keys` flags, row-major (true: the query sees the key).
    Mask(&'a [bool]),
    /// The query rows are the last `queries` positions of a causal sequence whose keys are the
    /// `keys` positions before and including them: query `i` sees key `j` when
    /// `j <= keys - queries + i`, and with a window `w` also when `keys - queries + i - j < w`.
    Causal { window: Option<usize> },
}

/// How one call scores: `scaling` multiplies each dot product, `softcap` (if any) caps the result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scoring {
    pub scaling: f32,
    pub softcap: Option<f32>,
}

/// Writes softmax(q kᵀ scaling) v for every head and query row into `out`.
///
/// `q` holds `heads x queries x dim` values (head-major), `out` `queries x heads x dim`
/// (query-major: the layout a model's output projection takes).
pub fn attention(
    q: &[f32],
    k: KvView<'_>,
    v: KvView<'_>,
    dims: AttentionDims,
    visibility: Visibility<'_>,
    scoring: Scoring,
    out: &mut [f32],
) -> Result<(), KernelError> {
    run(q, k, v, dims, visibility, scoring, out, simd_available())
}

/// The portable path of [`attention`], whatever the CPU (the reference of the tests).
pub fn attention_portable(
    q: &[f32],
    k: KvView<'_>,
    v: KvView<'_>,
    dims: AttentionDims,
    visibility: Visibility<'_>,
    scoring: Scoring,
    out: &mut [f32],
) -> Result<(), KernelError> {
    run(q, k, v, dims, visibility, scoring, out, false)
}

fn bad(message: String) -> KernelError {
    KernelError::Attention(message)
}

fn check_view(view: &KvView<'_>, dims: &AttentionDims, what: &str) -> Result<(), KernelError> {
    if dims.keys == 0 {
        return Ok(());
    }
    if view.row_stride < dims.dim {
        return Err(bad(format!(
            "{what} rows are {} values apart, fewer than the {} values of a row",
            view.row_stride, dims.dim
        )));
    }
    let last = (dims.kv_heads - 1)
        .checked_mul(view.head_stride)
        .and_then(|a| (dims.keys - 1).checked_mul(view.row_stride).map(|b| (a, b)))
        .and_then(|(a, b)| a.checked_add(b))
        .and_then(|s| s.checked_add(dims.dim));
    match last {
        Some(end) if end <= view.data.len() => Ok(()),
        _ => Err(bad(format!(
            "{what} ({} heads x {} rows x {} values, strides {} and {}) runs past its {} values",
            dims.kv_heads,
            dims.keys,
            dims.dim,
            view.head_stride,
            view.row_stride,
            view.data.len()
        ))),
    }
}

fn check(
    q: &[f32],
    k: &KvView<'_>,
    v: &KvView<'_>,
    dims: &AttentionDims,
    visibility: &Visibility<'_>,
    out: &[f32],
) -> Result<(), KernelError> {
    if dims.dim == 0 || dims.kv_heads == 0 || dims.heads == 0 {
        return Err(bad(
            "heads, KV heads and the head dimension must be at least 1".into(),
        ));
    }
    if !dims.heads.is_multiple_of(dims.kv_heads) {
        return Err(bad(format!(
            "{} query heads cannot share {} KV heads evenly",
            dims.heads, dims.kv_heads
        )));
    }
    let rows = dims.heads * dims.queries * dims.dim;
    if q.len() != rows {
        return Err(bad(format!(
            "q has {} values; {} heads x {} queries x {} need {rows}",
            q.len(),
            dims.heads,
            dims.queries,
            dims.dim
        )));
    }
    if out.len() != rows {
        return Err(bad(format!(
            "out has {} values; the result has {rows}",
            out.len()
        )));
    }
    check_view(k, dims, "keys")?;
    check_view(v, dims, "values")?;
    if let Visibility::Mask(mask) = visibility {
        if mask.len() != dims.queries * dims.keys {
            return Err(bad(format!(
                "the mask has {} flags; {} queries x {} keys need {}",
                mask.len(),
                dims.queries,
                dims.keys,
                dims.queries * dims.keys
            )));
        }
    }
    if let Visibility::Causal { .. } = visibility {
        if dims.queries > dims.keys {
            return Err(bad(format!(
                "a causal call has {} queries but only {} keys (the queries' own keys are among them)",
                dims.queries, dims.keys
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run(
    q: &[f32],
    k: KvView<'_>,
    v: KvView<'_>,
    dims: AttentionDims,
    visibility: Visibility<'_>,
    scoring: Scoring,
    out: &mut [f32],
    simd: bool,
) -> Result<(), KernelError> {
    check(q, &k, &v, &dims, &visibility, out)?;
    // One task per query row and chunk of up to HEADS_AT_ONCE query heads sharing a KV head:
    // the chunk's heads read each key and value row once.
    let group = dims.heads / dims.kv_heads;
    let chunks_per_group = group.div_ceil(HEADS_AT_ONCE);
    let tasks = dims.kv_heads * chunks_per_group * dims.queries;
    let out_ptr = SharedOut(out.as_mut_ptr());
    let job = Job {
        q,
        k,
        v,
        dims,
        visibility,
        scoring,
        simd,
    };
    let task = |t: usize| {
        let (chunk, i) = (t / dims.queries, t % dims.queries);
        let (kvh, c) = (chunk / chunks_per_group, chunk % chunks_per_group);
        let h0 = kvh * group + c * HEADS_AT_ONCE;
        let n = HEADS_AT_ONCE.min(group - c * HEADS_AT_ONCE);
        let start = (i * dims.heads + h0) * dims.dim;
        // SAFETY: `check` made `out` hold `queries x heads x dim` values; task t alone writes
        // the `n x dim` values of query i, heads h0..h0 + n (adjacent in `out`), so no two tasks
        // write the same values.
        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), n * dims.dim) };
        job.heads(i, h0, n, dst);
    };
    let work = dims.heads * dims.queries * dims.keys * dims.dim;
    if work < INLINE_WORK {
        (0..tasks).for_each(task);
    } else {
        pool::for_each(tasks, &task);
    }
    Ok(())
}

/// The output pointer handed to the tasks (each writes its own disjoint part).
struct SharedOut(*mut f32);
// SAFETY: the tasks write disjoint ranges (see `run`), and the pool returns only after all did.
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

struct Job<'a> {
    q: &'a [f32],
    k: KvView<'a>,
    v: KvView<'a>,
    dims: AttentionDims,
    visibility: Visibility<'a>,
    scoring: Scoring,
    simd: bool,
}

impl<'a> Job<'a> {
    fn sees(&self, i: usize, j: usize) -> bool {
        let d = &self.dims;
        match self.visibility {
            Visibility::Mask(mask) => mask[i * d.keys + j],
            Visibility::Causal { window } => {
                let pos = d.keys - d.queries + i;
                j <= pos && window.is_none_or(|w| pos - j < w)
            }
        }
    }

    /// The dot products of query row `i` of heads `h0 .. h0 + N` with every key row of `keys`,
    /// into `scores[t * keys.len() + s]` (head h0 + t, key s).
    fn score<const N: usize>(&self, i: usize, h0: usize, keys: &[&[f32]], scores: &mut [f32]) {
        let d = &self.dims;
        let queries: [&[f32]; N] =
            std::array::from_fn(|t| &self.q[((h0 + t) * d.queries + i) * d.dim..][..d.dim]);
        for (s, key) in keys.iter().enumerate() {
            for (t, p) in dots(key, queries, self.simd).into_iter().enumerate() {
                scores[t * keys.len() + s] = p;
            }
        }
    }

    /// The results of query row `i` for heads `h0 .. h0 + n` (n <= HEADS_AT_ONCE, all sharing
    /// one KV head) into `dst` (`n x dim`), each in the order of the module docs: the heads only
    /// share the reads of the key and value rows.
    fn heads(&self, i: usize, h0: usize, n: usize, dst: &mut [f32]) {
        let d = &self.dims;
        let kvh = h0 / (d.heads / d.kv_heads);
        let (k, v) = (self.k, self.v);
        let row_of = |view: KvView<'a>, j: usize| -> &'a [f32] {
            &view.data[kvh * view.head_stride + j * view.row_stride..][..d.dim]
        };
        dst.fill(0.0);
        let visible: Vec<usize> = (0..d.keys).filter(|&j| self.sees(i, j)).collect();
        let seen = visible.len();
        if seen == 0 {
            return;
        }
        // scores[t * seen + s]: head h0 + t, the s-th visible key
        let mut scores = vec![0f32; n * seen];
        let keys: Vec<&[f32]> = visible.iter().map(|&j| row_of(k, j)).collect();
        match n {
            1 => self.score::<1>(i, h0, &keys, &mut scores),
            2 => self.score::<2>(i, h0, &keys, &mut scores),
            3 => self.score::<3>(i, h0, &keys, &mut scores),
            _ => self.score::<HEADS_AT_ONCE>(i, h0, &keys, &mut scores),
        }
        let mut sums = [0f32; HEADS_AT_ONCE];
        for (t, head) in scores.chunks_exact_mut(seen).enumerate() {
            for s in head.iter_mut() {
                *s *= self.scoring.scaling;
                if let Some(cap) = self.scoring.softcap {
                    *s = (*s / cap).tanh() * cap;
                }
            }
            let max = head.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            sums[t] = exponentials(head, max, self.simd);
        }
        let values: Vec<&[f32]> = visible.iter().map(|&j| row_of(v, j)).collect();
        weighted_sums(dst, &scores, &values, self.simd);
        for (out, &sum) in dst.chunks_exact_mut(d.dim).zip(&sums) {
            for x in out.iter_mut() {
                *x /= sum;
            }
        }
    }
}

/// Query heads of one KV head whose results one task computes together.
const HEADS_AT_ONCE: usize = 4;

/// `[dot(a, b[0]), dot(a, b[1]), ...]`, each exactly as [`dot`] computes it (the products of
/// a fused multiply-add commute, so `dot(a, b) = dot(b, a)` bit for bit).
fn dots<const N: usize>(a: &[f32], b: [&[f32]; N], simd: bool) -> [f32; N] {
    #[cfg(target_arch = "x86_64")]
    if simd && a.len().is_multiple_of(LANES) {
        // SAFETY: `simd` is only true when `simd_available()` found AVX2 and FMA; every row of
        // `b` holds `a.len()` values (a multiple of 8).
        return unsafe { avx2::dot_lanes_many(a, b) };
    }
    b.map(|row| dot(a, row, simd))
}

/// For every head `t` (`dst` holds `n` rows of `dim` values, `p` `n` rows of one weight per
/// value row): `dst[t][d] = p[t][0] v[0][d] + p[t][1] v[1][d] + ...`, fused multiply-adds from
/// 0 in the order of the rows (as [`accumulate`] row after row computes it).
fn weighted_sums(dst: &mut [f32], p: &[f32], v: &[&[f32]], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when `simd_available()` found AVX2 and FMA; every row of
        // `v` holds at least `dim` values (rows of the head dimension).
        unsafe { avx2::weighted_sums(dst, p, v) };
        return;
    }
    let dim = dst.len() / (p.len() / v.len());
    for (out, weights) in dst.chunks_exact_mut(dim).zip(p.chunks_exact(v.len())) {
        out.fill(0.0);
        for (&pj, row) in weights.iter().zip(v) {
            accumulate(out, pj, row, simd);
        }
    }
}

/// `dot(a, b)` in the module docs' order.
fn dot(a: &[f32], b: &[f32], simd: bool) -> f32 {
    let body = a.len() / LANES * LANES;
    #[cfg(target_arch = "x86_64")]
    let lanes = if simd {
        // SAFETY: `simd` is only true when `simd_available()` found AVX2 and FMA.
        unsafe { avx2::dot_lanes(&a[..body], &b[..body]) }
    } else {
        portable_dot_lanes(&a[..body], &b[..body])
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes = {
        let _ = simd;
        portable_dot_lanes(&a[..body], &b[..body])
    };
    a[body..]
        .iter()
        .zip(&b[body..])
        .fold(lanes, |s, (&x, &y)| x.mul_add(y, s))
}

fn portable_dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut l: Lanes = [0.0; LANES];
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for j in 0..LANES {
            l[j] = ca[j].mul_add(cb[j], l[j]);
        }
    }
    reduce_lanes(l)
}

/// `acc[d] = p * v[d] + acc[d]` (fused), for every `d`.
fn accumulate(acc: &mut [f32], p: f32, v: &[f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when `simd_available()` found AVX2 and FMA.
        unsafe { avx2::accumulate(acc, p, v) };
        return;
    }
    let _ = simd;
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = p.mul_add(x, *a);
    }
}

/// `e^x` for `x <= 0` (0 below the smallest normal result), from float32 operations alone so that
/// every path and machine gives the same bits: `x = n ln2 + r` with `n` the nearest integer to
/// `x / ln2` (ln2 split in two parts for an exact reduction), `e^r` by its degree-7 Taylor
/// polynomial (|r| <= ln2 / 2, error below one unit in the last place), times `2^n`.
pub fn exp_nonpositive(x: f32) -> f32 {
    exp_body(x)
}

/// The body of [`exp_nonpositive`], inlined into every caller: compiled with FMA enabled (the
/// AVX2 path) its fused multiply-adds are single instructions instead of calls, with the same
/// results (a fused multiply-add is exactly rounded either way).
#[inline(always)]
fn exp_body(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const C: [f32; 8] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ];
    if x.is_nan() {
        return x;
    }
    if x < -87.0 {
        return 0.0;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let poly = C[..7].iter().rev().fold(C[7], |acc, &c| acc.mul_add(r, c));
    // n is in [-126, 0] here, so 2^n is a normal float.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    poly * scale
}

/// Replaces every score `s` by `exp_nonpositive(s - max)` and returns their sum, added one after
/// the other.
fn exponentials(scores: &mut [f32], max: f32, simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when `simd_available()` found AVX2 and FMA.
        return unsafe { avx2::exponentials(scores, max) };
    }
    let _ = simd;
    exponentials_body(scores, max)
}

#[inline(always)]
fn exponentials_body(scores: &mut [f32], max: f32) -> f32 {
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = exp_body(*s - max);
        sum += *s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::LANES;
    use crate::tile_kernel::avx2::hsum;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` hold the same multiple of 8 values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
            // SAFETY: each chunk holds 8 values.
            let (x, y) = unsafe { (_mm256_loadu_ps(ca.as_ptr()), _mm256_loadu_ps(cb.as_ptr())) };
            acc = _mm256_fmadd_ps(x, y, acc);
        }
        hsum(acc)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `v` holds at least `acc.len()` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate(acc: &mut [f32], p: f32, v: &[f32]) {
        let body = acc.len() / LANES * LANES;
        let pv = _mm256_set1_ps(p);
        for (ca, cv) in acc[..body]
            .chunks_exact_mut(LANES)
            .zip(v[..body].chunks_exact(LANES))
        {
            // SAFETY: each chunk holds 8 values.
            unsafe {
                let a = _mm256_loadu_ps(ca.as_ptr());
                _mm256_storeu_ps(
                    ca.as_mut_ptr(),
                    _mm256_fmadd_ps(pv, _mm256_loadu_ps(cv.as_ptr()), a),
                );
            }
        }
        for (a, &x) in acc[body..].iter_mut().zip(&v[body..]) {
            *a = p.mul_add(x, *a);
        }
    }

    /// `dot_lanes(a, b[t])` for every `t`, the chains interleaved.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and every `b[t]` hold the same multiple of 8 values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_lanes_many<const N: usize>(a: &[f32], b: [&[f32]; N]) -> [f32; N] {
        let mut acc = [_mm256_setzero_ps(); N];
        for c in (0..a.len()).step_by(LANES) {
            // SAFETY: c + 8 <= a.len() = b[t].len().
            unsafe {
                let x = _mm256_loadu_ps(a.as_ptr().add(c));
                for (acc_t, row) in acc.iter_mut().zip(&b) {
                    *acc_t = _mm256_fmadd_ps(x, _mm256_loadu_ps(row.as_ptr().add(c)), *acc_t);
                }
            }
        }
        acc.map(|lanes| hsum(lanes))
    }

    /// `super::exponentials` compiled with FMA (and SSE4.1 rounding) as instructions.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exponentials(scores: &mut [f32], max: f32) -> f32 {
        super::exponentials_body(scores, max)
    }

    /// Output vectors per head kept in registers while every value row is added (with
    /// `super::HEADS_AT_ONCE` heads, 8 of the 16 vector registers).
    const HELD: usize = 2;

    /// `super::weighted_sums` on AVX2: `HELD` vectors of every head's output stay in registers
    /// over all the value rows, each row's vectors read once for all the heads (same
    /// per-element order: fused multiply-adds from 0, row after row).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `p` holds `n <= super::HEADS_AT_ONCE` rows of `v.len()`
    /// weights, `dst` `n` rows of `dim` values, and every row of `v` at least `dim` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_sums(dst: &mut [f32], p: &[f32], v: &[&[f32]]) {
        let (seen, n) = (v.len(), p.len() / v.len());
        let dim = dst.len() / n;
        let body = dim / LANES * LANES;
        let mut start = 0;
        while start < body {
            let m = HELD.min((body - start) / LANES);
            // SAFETY: as this function's contract, with start + 8 m <= body.
            unsafe {
                match (n, m) {
                    (1, 1) => pass::<1, 1>(dst, p, v, start),
                    (2, 1) => pass::<2, 1>(dst, p, v, start),
                    (3, 1) => pass::<3, 1>(dst, p, v, start),
                    (_, 1) => pass::<4, 1>(dst, p, v, start),
                    (1, _) => pass::<1, HELD>(dst, p, v, start),
                    (2, _) => pass::<2, HELD>(dst, p, v, start),
                    (3, _) => pass::<3, HELD>(dst, p, v, start),
                    _ => pass::<4, HELD>(dst, p, v, start),
                }
            }
            start += m * LANES;
        }
        for t in 0..n {
            let weights = &p[t * seen..][..seen];
            for d in body..dim {
                dst[t * dim + d] = weights
                    .iter()
                    .zip(v)
                    .fold(0.0, |acc, (&pj, row)| pj.mul_add(row[d], acc));
            }
        }
    }

    /// Vectors `start / 8 .. start / 8 + M` of the output of `N` heads, over every value row
    /// (constant sizes keep the accumulators in registers).
    ///
    /// # Safety
    /// As [`weighted_sums`], with `N` its number of heads and `start + 8 M` at most the
    /// whole vectors of the head dimension.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass<const N: usize, const M: usize>(
        dst: &mut [f32],
        p: &[f32],
        v: &[&[f32]],
        start: usize,
    ) {
        let seen = v.len();
        let dim = dst.len() / N;
        let mut acc = [[_mm256_setzero_ps(); M]; N];
        for (s, row) in v.iter().enumerate() {
            // SAFETY: start + 8 M <= row.len() (contract).
            let x: [__m256; M] = std::array::from_fn(|u| unsafe {
                _mm256_loadu_ps(row.as_ptr().add(start + LANES * u))
            });
            for (t, acc_t) in acc.iter_mut().enumerate() {
                // SAFETY: p holds N rows of `seen` weights (contract).
                let pv = _mm256_set1_ps(unsafe { *p.get_unchecked(t * seen + s) });
                for (acc_tu, &xu) in acc_t.iter_mut().zip(&x) {
                    *acc_tu = _mm256_fmadd_ps(pv, xu, *acc_tu);
                }
            }
        }
        for (t, acc_t) in acc.iter().enumerate() {
            for (u, &acc_tu) in acc_t.iter().enumerate() {
                // SAFETY: t * dim + start + 8 u + 8 <= dst.len() (contract).
                unsafe {
                    _mm256_storeu_ps(dst.as_mut_ptr().add(t * dim + start + LANES * u), acc_tu)
                };
            }
        }
    }
}
