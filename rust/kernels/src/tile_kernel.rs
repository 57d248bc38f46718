//! The f32 micro-kernel every product of this crate ends in: one pass of a tile, i.e. the dot
//! products of a few weight rows (already f32) with a set of input rows over one range of
//! columns, continuing and handing on the lane accumulators of the other ranges.
//!
//! Accumulation order of one output element (the crate's numerics contract): 8 lane sums, lane
//! `j` accumulating columns `j, j + 8, ...` with fused multiply-adds from 0; then the lanes added
//! pairwise ([`reduce_lanes`]); then the `k % 8` tail columns added in order, each product
//! rounded before its sum. Splitting the columns into passes keeps each lane's sequence of FMAs
//! (the lanes are stored between passes, exactly), so the order depends only on `k`: an output
//! element has the same bits whichever rows share its tile, whichever kernel shape or pass split
//! computes it, and on both paths.
//!
//! The AVX2 path computes groups of `NW` weight rows x `NX` input rows at once (`NW * NX`
//! independent accumulators hide the FMA latency, and each loaded vector serves several FMAs;
//! the group shapes are chosen per input-row count by [`weight_group`]).

/// Lanes of one accumulator.
pub(crate) const LANES: usize = 8;
/// Input rows per kernel call at most.
const INPUT_GROUP: usize = 4;
/// Input rows per input tile: the driver walks the input rows in tiles of this many, and the
/// packed inputs are laid out tile by tile.
pub(crate) const INPUT_TILE: usize = 64;

/// The 8 lane sums of one output element between passes.
pub(crate) type Lanes = [f32; LANES];

/// Where output element (input row `b`, weight row `a`) of a tile goes: `ptr + b * stride + a`.
#[derive(Clone, Copy)]
pub(crate) struct OutTile {
    pub(crate) ptr: *mut f32,
    pub(crate) stride: usize,
}

/// One pass of a tile: weight rows `0..rows` (row `a`'s values for columns `start..end` at
/// `w + a * w_stride`) times every row of `x` (rows of `k` values).
#[derive(Clone, Copy)]
pub(crate) struct Pass<'a> {
    pub(crate) w: *const f32,
    pub(crate) w_stride: usize,
    pub(crate) rows: usize,
    pub(crate) x: &'a [f32],
    /// The same rows packed by [`pack_inputs`] (the part of its output for this input tile;
    /// used by the AVX2 path only).
    pub(crate) x_packed: &'a [f32],
    pub(crate) k: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) out: OutTile,
    /// With `ahead` > 0, the values `ahead` places after the weight values are prefetched while
    /// the pass runs (the next tile of a row-major matrix).
    pub(crate) ahead: usize,
}

impl Pass<'_> {
    fn first(&self) -> bool {
        self.start == 0
    }

    fn last(&self) -> bool {
        self.end == self.k
    }

    /// End of the columns accumulated in lanes: the tail columns (`k % 8`) come after it.
    fn body_end(&self) -> usize {
        if self.last() {
            self.start + (self.end - self.start) / LANES * LANES
        } else {
            self.end
        }
    }
}

/// Weight rows per kernel call for `nx` input rows: enough accumulators (`nw * nx` >= 8) to keep
/// both FMA units busy, within the 16 vector registers (accumulators + the smaller group + 1).
fn weight_group(nx: usize) -> usize {
    match nx {
        1 => 8,
        2 => 6,
        3 => 4,
        _ => 3,
    }
}

/// `total` rows split into nearly equal groups of at most `max` rows (17, max 4 -> 4, 4, 3, 3,
/// 3), so no group is much smaller than the others; the divisions happen once, here.
#[derive(Clone, Copy)]
struct Split {
    groups: usize,
    small: usize,
    /// The first `bigger` groups have `small + 1` rows.
    bigger: usize,
}

impl Split {
    fn new(total: usize, max: usize) -> Self {
        let groups = total.div_ceil(max);
        match groups {
            0 => Split {
                groups,
                small: 0,
                bigger: 0,
            },
            _ => Split {
                groups,
                small: total / groups,
                bigger: total % groups,
            },
        }
    }

    fn size(&self, group: usize) -> usize {
        self.small + usize::from(group < self.bigger)
    }
}

/// Runs one pass (see [`Pass`]): the first pass starts the accumulators at 0, the others continue
/// those in `lanes` (`x rows x weight rows`, resized as needed); the last one finishes the sums
/// (lane reduction, tail columns) into `out`, the others leave the accumulators in `lanes`.
///
/// # Safety
/// `p.w` must point to `p.rows` rows of `p.end - p.start` readable values at stride
/// `p.w_stride`; `p.out` must be valid for writing every element (b, a) of the tile, and no other
/// thread may write those elements meanwhile. `p.start` is a multiple of 8 and `p.end <= p.k`.
/// `simd` only when [`crate::simd_available`] is true.
pub(crate) unsafe fn pass_product(p: Pass<'_>, lanes: &mut Vec<Lanes>, simd: bool) {
    let x_rows = p.x.len() / p.k;
    if !(p.first() && p.last()) {
        lanes.resize(x_rows * p.rows, [0.0; LANES]);
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: forwarded from the caller; simd is only true on AVX2 + FMA CPUs.
        unsafe { avx2::pass_product(p, x_rows, lanes) };
        return;
    }
    let _ = simd;
    let body_end = p.body_end();
    for b in 0..x_rows {
        let x = &p.x[b * p.k..(b + 1) * p.k];
        for a in 0..p.rows {
            // SAFETY: row `a` of the pass holds `end - start` values (caller's contract).
            let w = unsafe { std::slice::from_raw_parts(p.w.add(a * p.w_stride), p.end - p.start) };
            let mut acc = if p.first() {
                [0f32; LANES]
            } else {
                lanes[b * p.rows + a]
            };
            for (wc, xc) in w[..body_end - p.start]
                .chunks_exact(LANES)
                .zip(x[p.start..body_end].chunks_exact(LANES))
            {
                for j in 0..LANES {
                    acc[j] = wc[j].mul_add(xc[j], acc[j]);
                }
            }
            if !p.last() {
                lanes[b * p.rows + a] = acc;
                continue;
            }
            let mut s = reduce_lanes(acc);
            for j in body_end..p.k {
                s += w[j - p.start] * x[j];
            }
            // SAFETY: (b, a) is an element of the tile (caller's contract).
            unsafe { *p.out.ptr.add(b * p.out.stride + a) = s };
        }
    }
}

/// Lays out input rows (`x.len() / k` rows of `k` values) for the AVX2 kernel: tile by tile of
/// `INPUT_TILE` rows, group by group of the tile's row groups, the first `k / 8 * 8` columns of
/// a group of `nx` rows as `[column / 8][row][column % 8]`, so that a kernel call reads its
/// inputs as one sequential stream. Row `r`'s group starts at `r_group_start * (k / 8 * 8)`.
pub(crate) fn pack_inputs(x: &[f32], k: usize, out: &mut Vec<f32>) {
    let body = k / LANES * LANES;
    let rows = x.len() / k;
    out.clear();
    out.reserve(rows * body);
    for (t, tile) in x.chunks(INPUT_TILE * k).enumerate() {
        let split = Split::new(tile.len() / k, INPUT_GROUP);
        let mut xr = 0;
        for g in 0..split.groups {
            let nx = split.size(g);
            debug_assert_eq!(out.len(), (t * INPUT_TILE + xr) * body);
            for c in (0..body).step_by(LANES) {
                for b in 0..nx {
                    let at = (xr + b) * k + c;
                    out.extend_from_slice(&tile[at..at + LANES]);
                }
            }
            xr += nx;
        }
    }
}

/// (l0+l4, l1+l5, l2+l6, l3+l7) -> (q0+q2, q1+q3) -> r0+r1: the AVX2 reduction's order.
pub(crate) fn reduce_lanes(l: Lanes) -> f32 {
    let q = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let h = [q[0] + q[2], q[1] + q[3]];
    h[0] + h[1]
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{weight_group, Lanes, OutTile, Pass, Split, INPUT_GROUP, LANES};
    use std::arch::x86_64::*;

    /// One kernel call: weight rows `w..` (stride `w_stride`, column `i` at `w + i`) x input
    /// rows `x..` (stride `k`) over the columns of the pass; accumulator of (input row b, weight
    /// row a) at `lanes + b * lanes_stride + a`.
    #[derive(Clone, Copy)]
    struct Group {
        w: *const f32,
        w_stride: usize,
        x: *const f32,
        /// The group's packed inputs: column i (a multiple of 8) of row b at `x_packed + i * NX
        /// + b * 8`.
        x_packed: *const f32,
        k: usize,
        start: usize,
        body_end: usize,
        first: bool,
        last: bool,
        lanes: *mut Lanes,
        lanes_stride: usize,
        out: OutTile,
        ahead: usize,
    }

    /// See [`super::pass_product`]; `lanes` holds `x_rows * p.rows` accumulators unless the
    /// pass is both the first and the last.
    ///
    /// # Safety
    /// As [`super::pass_product`], on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pass_product(p: Pass<'_>, x_rows: usize, lanes: &mut [Lanes]) {
        let w_splits: [Split; INPUT_GROUP] =
            std::array::from_fn(|i| Split::new(p.rows, weight_group(i + 1)));
        let x_split = Split::new(x_rows, INPUT_GROUP);
        // Column i of weight row a is at `w_origin + a * w_stride + i` (the pass starts at column
        // `start`, stored first); wrapping arithmetic, every address read is inside the pass.
        let w_origin = p.w.wrapping_sub(p.start);
        let (lanes_ptr, x_ptr, packed) = (lanes.as_mut_ptr(), p.x.as_ptr(), p.x_packed.as_ptr());
        let body = p.k / LANES * LANES;
        let mut xr = 0;
        for xg in 0..x_split.groups {
            let nx = x_split.size(xg);
            let w_split = w_splits[nx - 1];
            let mut wr = 0;
            for wg in 0..w_split.groups {
                let nw = w_split.size(wg);
                let g = Group {
                    w: w_origin.wrapping_add(wr * p.w_stride),
                    w_stride: p.w_stride,
                    x: x_ptr.wrapping_add(xr * p.k),
                    x_packed: packed.wrapping_add(xr * body),
                    k: p.k,
                    start: p.start,
                    body_end: p.body_end(),
                    first: p.first(),
                    last: p.last(),
                    lanes: lanes_ptr.wrapping_add(xr * p.rows + wr),
                    lanes_stride: p.rows,
                    out: OutTile {
                        ptr: p.out.ptr.wrapping_add(xr * p.out.stride + wr),
                        stride: p.out.stride,
                    },
                    ahead: if xr == 0 { p.ahead } else { 0 },
                };
                // SAFETY: the group's rows, accumulators and outputs lie inside those of the
                // pass (caller's contract).
                unsafe { dispatch(g, nw, nx) };
                wr += nw;
            }
            xr += nx;
        }
    }

    /// Runs the kernel instantiated for (`nw`, `nx`).
    ///
    /// # Safety
    /// As [`kernel`].
    #[inline(always)]
    unsafe fn dispatch(g: Group, nw: usize, nx: usize) {
        macro_rules! shapes {
            ($(($a:literal, $b:literal)),* $(,)?) => {
                match (nw, nx) {
                    // SAFETY: forwarded from the caller.
                    $(($a, $b) => unsafe { kernel::<$a, $b>(g) },)*
                    // Unreachable with the group sizes `pass_product` picks; kept total anyway.
                    _ => unsafe { kernel::<1, 1>(g) },
                }
            };
        }
        shapes!(
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (5, 1),
            (6, 1),
            (7, 1),
            (8, 1),
            (1, 2),
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 2),
            (6, 2),
            (1, 3),
            (2, 3),
            (3, 3),
            (4, 3),
            (1, 4),
            (2, 4),
            (3, 4),
        );
    }

    /// Horizontal sum in the order of `super::reduce_lanes`.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let q = _mm_add_ps(lo, hi);
        let h = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let r = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
        _mm_cvtss_f32(r)
    }

    /// `NW` weight rows times `NX` input rows over one pass (see [`Group`]).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA. The `NW` weight rows hold the pass's columns, the `NX`
    /// input rows `k` values; `g.lanes` (unless the pass is both first and last) and `g.out`
    /// address the group's `NX x NW` accumulators and outputs.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const NW: usize, const NX: usize>(g: Group) {
        let mut acc = [[_mm256_setzero_ps(); NW]; NX];
        if !g.first {
            for (b, acc_b) in acc.iter_mut().enumerate() {
                for (a, v) in acc_b.iter_mut().enumerate() {
                    let at = g.lanes.wrapping_add(b * g.lanes_stride + a);
                    // SAFETY: accumulator (b, a) of the group (contract).
                    *v = unsafe { _mm256_loadu_ps(at.cast()) };
                }
            }
        }
        // Row pointers, so that every load in the loop is `row + i`.
        let w_rows: [*const f32; NW] = std::array::from_fn(|a| g.w.wrapping_add(a * g.w_stride));
        let x_rows: [*const f32; NX] = std::array::from_fn(|b| g.x.wrapping_add(b * g.k));
        let mut i = g.start;
        while i < g.body_end {
            if g.ahead != 0 && i.is_multiple_of(16) {
                for row in w_rows {
                    // A prefetch never faults, wherever it points.
                    let p = row.wrapping_add(i + g.ahead);
                    _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
                }
            }
            // Keep the smaller group's vectors in registers and stream the other one through a
            // single register: NW * NX + min(NW, NX) + 1 <= 16 vector registers.
            // SAFETY (loads): columns i..i + 8 lie in the pass, inside each row (contract).
            if NW <= NX {
                let mut wv = [_mm256_setzero_ps(); NW];
                for (v, row) in wv.iter_mut().zip(w_rows) {
                    *v = unsafe { _mm256_loadu_ps(row.wrapping_add(i)) };
                }
                let xg = g.x_packed.wrapping_add(i * NX);
                for (b, acc_b) in acc.iter_mut().enumerate() {
                    let xb = unsafe { _mm256_loadu_ps(xg.wrapping_add(b * LANES)) };
                    for (v, &wa) in acc_b.iter_mut().zip(&wv) {
                        *v = _mm256_fmadd_ps(wa, xb, *v);
                    }
                }
            } else {
                let xg = g.x_packed.wrapping_add(i * NX);
                let mut xv = [_mm256_setzero_ps(); NX];
                for (b, v) in xv.iter_mut().enumerate() {
                    *v = unsafe { _mm256_loadu_ps(xg.wrapping_add(b * LANES)) };
                }
                for (a, row) in w_rows.into_iter().enumerate() {
                    let wa = unsafe { _mm256_loadu_ps(row.wrapping_add(i)) };
                    for (acc_b, &xb) in acc.iter_mut().zip(&xv) {
                        acc_b[a] = _mm256_fmadd_ps(wa, xb, acc_b[a]);
                    }
                }
            }
            i += LANES;
        }
        for (b, acc_b) in acc.iter().enumerate() {
            for (a, &v) in acc_b.iter().enumerate() {
                if !g.last {
                    let at = g.lanes.wrapping_add(b * g.lanes_stride + a);
                    // SAFETY: accumulator (b, a) of the group (contract).
                    unsafe { _mm256_storeu_ps(at.cast(), v) };
                    continue;
                }
                let mut s = hsum(v);
                for j in g.body_end..g.k {
                    // SAFETY: column j < k of weight row a (in the last pass) and input row b.
                    s += unsafe { *w_rows[a].wrapping_add(j) * *x_rows[b].wrapping_add(j) };
                }
                // SAFETY: output (b, a) of the group (contract).
                unsafe { *g.out.ptr.wrapping_add(b * g.out.stride + a) = s };
            }
        }
    }
}
