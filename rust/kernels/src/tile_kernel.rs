//! The f32 micro-kernel every product of this crate ends in: the dot products of a tile of weight
//! rows (already f32, row-major) with a set of input rows, written into the output.
//!
//! Accumulation order of one output element (the crate's numerics contract): 8 lane sums, lane
//! `j` accumulating columns `j, j + 8, ...` with fused multiply-adds from 0; then the lanes added
//! pairwise ([`reduce_lanes`]); then the `k % 8` tail columns added in order, each product
//! rounded before its sum. The order depends only on `k`, so an output element has the same bits
//! whichever rows share its tile, whichever kernel shape computes it, and on both paths.
//!
//! The AVX2 path computes groups of `NW` weight rows x `NX` input rows at once (`NW * NX`
//! independent accumulators hide the FMA latency, and each loaded vector serves several FMAs);
//! the group shapes are chosen per input-row count by [`weight_group`].

/// Lanes of one accumulator.
pub(crate) const LANES: usize = 8;
/// Input rows per kernel call at most.
const INPUT_GROUP: usize = 4;

/// Where output element (input row `b`, weight row `a`) of a tile goes: `ptr + b * stride + a`.
#[derive(Clone, Copy)]
pub(crate) struct OutTile {
    pub(crate) ptr: *mut f32,
    pub(crate) stride: usize,
}

/// Weight rows per kernel call for `nx` input rows: enough accumulators (`nw * nx` >= 8) to keep
/// both FMA units busy, within the 16 vector registers (accumulators + `nx` inputs + 1 weight).
fn weight_group(nx: usize) -> usize {
    match nx {
        1 => 8,
        2 => 6,
        3 => 4,
        _ => 3,
    }
}

/// Splits `left` rows into nearly equal groups of at most `max` (17, max 4 -> 4, 4, 3, 3, 3), so
/// no group is much smaller than the others.
fn next_group(left: usize, max: usize) -> usize {
    left.div_ceil(left.div_ceil(max))
}

/// Writes dot(weight row `a`, input row `b`) for every row `a` of `w` (`w.len() / k` rows) and
/// every row `b` of `x` to `out`. `ahead` (possibly empty) holds weight rows that the next tile
/// will read, in the layout of `w`: they are prefetched while this tile is computed.
///
/// # Safety
/// `out` must be valid for writing every element (b, a) of the tile, and no other thread may
/// write those elements meanwhile. `simd` only when [`crate::simd_available`] is true.
pub(crate) unsafe fn tile_product(
    w: &[f32],
    x: &[f32],
    k: usize,
    out: OutTile,
    ahead: &[f32],
    simd: bool,
) {
    let (nw_total, nx_total) = (w.len() / k, x.len() / k);
    #[cfg(target_arch = "x86_64")]
    if simd {
        let mut xr = 0;
        while xr < nx_total {
            let nx = next_group(nx_total - xr, INPUT_GROUP);
            let xg = &x[xr * k..(xr + nx) * k];
            let mut wr = 0;
            while wr < nw_total {
                let nw = next_group(nw_total - wr, weight_group(nx));
                let wg = &w[wr * k..(wr + nw) * k];
                let pf = if xr == 0 {
                    ahead.get(wr * k..).unwrap_or(&[])
                } else {
                    &[]
                };
                let o = OutTile {
                    // SAFETY: (xr, wr) is an element of the tile (caller's contract).
                    ptr: unsafe { out.ptr.add(xr * out.stride + wr) },
                    stride: out.stride,
                };
                // SAFETY: simd is only true on AVX2 + FMA CPUs; the group lies in the tile.
                unsafe { avx2::group(wg, xg, k, nw, nx, pf, o) };
                wr += nw;
            }
            xr += nx;
        }
        return;
    }
    let _ = (ahead, simd);
    for (b, xrow) in x.chunks_exact(k).enumerate() {
        for (a, wrow) in w.chunks_exact(k).enumerate() {
            // SAFETY: (b, a) is an element of the tile (caller's contract).
            unsafe { *out.ptr.add(b * out.stride + a) = portable_dot(wrow, xrow) };
        }
    }
}

/// One output element in the reference order (see the module docs).
pub(crate) fn portable_dot(w: &[f32], x: &[f32]) -> f32 {
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
    use super::{OutTile, LANES};
    use std::arch::x86_64::*;

    /// Runs the kernel instantiated for (`nw`, `nx`).
    ///
    /// # Safety
    /// As [`kernel`]; `w` holds `nw` rows and `x` holds `nx` rows of `k` values.
    #[inline(always)]
    pub(super) unsafe fn group(
        w: &[f32],
        x: &[f32],
        k: usize,
        nw: usize,
        nx: usize,
        ahead: &[f32],
        out: OutTile,
    ) {
        macro_rules! shapes {
            ($(($a:literal, $b:literal)),* $(,)?) => {
                match (nw, nx) {
                    // SAFETY: forwarded from the caller.
                    $(($a, $b) => unsafe { kernel::<$a, $b>(w, x, k, ahead, out) },)*
                    // Unreachable with the group sizes `tile_product` picks; kept total anyway.
                    _ => unsafe { kernel::<1, 1>(w, x, k, ahead, out) },
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
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let q = _mm_add_ps(lo, hi);
        let h = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let r = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
        _mm_cvtss_f32(r)
    }

    /// `NW` weight rows times `NX` input rows, written to `out`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA. `w` holds at least `NW * k` values and `x` at least
    /// `NX * k` (both checked); `out` is valid for the `NX x NW` elements it addresses.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel<const NW: usize, const NX: usize>(
        w: &[f32],
        x: &[f32],
        k: usize,
        ahead: &[f32],
        out: OutTile,
    ) {
        assert!(w.len() >= NW * k && x.len() >= NX * k);
        let body = k / LANES * LANES;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let prefetch = ahead.len() >= NW * k;
        let mut acc = [[_mm256_setzero_ps(); NW]; NX];
        let mut i = 0;
        while i < body {
            if prefetch && i % 16 == 0 {
                for a in 0..NW {
                    // SAFETY: a * k + i < NW * k <= ahead.len(); a prefetch never faults anyway.
                    let p = unsafe { ahead.as_ptr().add(a * k + i) };
                    _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
                }
            }
            let mut xv = [_mm256_setzero_ps(); NX];
            for (b, v) in xv.iter_mut().enumerate() {
                // SAFETY: b * k + i + 8 <= NX * k <= x.len().
                *v = unsafe { _mm256_loadu_ps(xp.add(b * k + i)) };
            }
            for a in 0..NW {
                // SAFETY: a * k + i + 8 <= NW * k <= w.len().
                let wv = unsafe { _mm256_loadu_ps(wp.add(a * k + i)) };
                for (acc_b, &xb) in acc.iter_mut().zip(&xv) {
                    acc_b[a] = _mm256_fmadd_ps(wv, xb, acc_b[a]);
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
                // SAFETY: (b, a) is inside the group (caller's contract).
                unsafe { *out.ptr.add(b * out.stride + a) = s };
            }
        }
    }
}
