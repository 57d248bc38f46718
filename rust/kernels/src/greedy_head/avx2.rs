//! The estimate pass of [`super::GreedyHead`] on AVX2. A proxy row's block scales are converted
//! 8 at a time, and with them each input row's per-block factors (the scale products, the
//! centring terms, the bound terms) as vectors. Each block's 32 values are decoded to 16-bit
//! lanes once and multiplied with every input row's int16 values (`vpmaddwd`); the per-lane
//! integer sums (at most 4 * 31 * 32767, exact in f32) are scaled and accumulated in f32.
//!
//! Decoding: the 16 nibble bytes widen to 16-bit lanes, whose low and high nibbles are two
//! vectors of 16 values. The block's 32 fifth bits, broadcast as one 32-bit word, give every even
//! lane bits 0..16 and every odd lane bits 16..32; multiplying lane `l` by `2^(15 - s)` moves its
//! bit `s` to the top, from where a shift puts it at bit 4. With `s = l / 2` (low nibbles) and
//! `s = 8 + l / 2` (high nibbles), lane `l` holds the fifth bit of the value
//! [`super::stored_value`] places there.

use std::arch::x86_64::*;

use super::{Layout, Prepared, PASS_ROWS, SCALE_SLOTS, VALUE_BYTES};
use crate::tile_kernel::avx2::hsum;

/// Proxy rows ahead of the current one that are prefetched.
const PREFETCH_ROWS: usize = 4;

/// Estimates (`e[0][r]`) and bounds (`e[1][r]`) of one proxy row for each input row of `group`
/// (1 to [`PASS_ROWS`]).
///
/// # Safety
/// AVX2, FMA and F16C; `row` is a whole proxy row of `layout`, and every prepared row of `group`
/// holds `32 * blocks` values and `slots` factors of each kind.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn estimate_row(
    row: &[u8],
    layout: Layout,
    group: &[&Prepared],
    factor: f32,
    e: &mut [[f32; PASS_ROWS]; 2],
) {
    // SAFETY: forwarded.
    unsafe {
        match group.len() {
            1 => rows_n::<1>(row, layout, group, factor, e),
            2 => rows_n::<2>(row, layout, group, factor, e),
            3 => rows_n::<3>(row, layout, group, factor, e),
            _ => rows_n::<4>(row, layout, group, factor, e),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_n<const NX: usize>(
    row: &[u8],
    layout: Layout,
    group: &[&Prepared],
    factor: f32,
    e: &mut [[f32; PASS_ROWS]; 2],
) {
    let p = row.as_ptr();
    let ahead = PREFETCH_ROWS * row.len();
    for off in (0..row.len()).step_by(64) {
        // A prefetch never faults, wherever it points.
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead + off).cast::<i8>());
    }
    let values = p.wrapping_add(layout.values_at());
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let low_nibble = _mm256_set1_epi16(0x0f);
    let sixteen = _mm256_set1_epi16(0x10);
    // Lane l: 2^(15 - l / 2) and 2^(7 - l / 2) (as i16 bit patterns).
    let shift = |top: i32| {
        let m = |l: i32| (1i32 << (top - l / 2)) as i16;
        _mm256_setr_epi16(
            m(0),
            m(1),
            m(2),
            m(3),
            m(4),
            m(5),
            m(6),
            m(7),
            m(8),
            m(9),
            m(10),
            m(11),
            m(12),
            m(13),
            m(14),
            m(15),
        )
    };
    let (low_shift, high_shift) = (shift(15), shift(7));
    // Two accumulators per input row (even and odd blocks): two independent chains of fused
    // multiply-adds instead of one that waits for its own latency at every block.
    let mut acc = [[_mm256_setzero_ps(); 2]; NX];
    let mut centre = [_mm256_setzero_ps(); NX];
    let mut bound = [_mm256_setzero_ps(); NX];
    let mut scales = [[0.0f32; SCALE_SLOTS]; NX];
    let xq: [*const i16; NX] = std::array::from_fn(|r| group[r].xq.as_ptr());
    let factors: [[*const f32; 3]; NX] = std::array::from_fn(|r| {
        let x = group[r];
        [x.scale8.as_ptr(), x.centre.as_ptr(), x.l1.as_ptr()]
    });
    for window in (0..layout.slots).step_by(SCALE_SLOTS) {
        // SAFETY: the row holds `slots` f16 scales (contract), the prepared rows `slots` factors.
        let d = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * window).cast())) };
        for r in 0..NX {
            let [s8, c, l1] = factors[r];
            // SAFETY: as above.
            unsafe {
                let s8 = _mm256_loadu_ps(s8.add(window));
                _mm256_storeu_ps(scales[r].as_mut_ptr(), _mm256_mul_ps(d, s8));
                centre[r] = _mm256_fmadd_ps(d, _mm256_loadu_ps(c.add(window)), centre[r]);
                bound[r] = _mm256_fmadd_ps(
                    _mm256_and_ps(d, abs_mask),
                    _mm256_loadu_ps(l1.add(window)),
                    bound[r],
                );
            }
        }
        for b in window..(window + SCALE_SLOTS).min(layout.blocks) {
            // SAFETY: block b's 20 value bytes lie in the row (contract).
            let (nibbles, bits) = unsafe {
                let blk = values.add(b * VALUE_BYTES);
                let bits =
                    i32::from_le_bytes([*blk.add(16), *blk.add(17), *blk.add(18), *blk.add(19)]);
                (
                    _mm256_cvtepu8_epi16(_mm_loadu_si128(blk.cast())),
                    _mm256_set1_epi32(bits),
                )
            };
            let fifth = |m: __m256i| {
                _mm256_and_si256(
                    _mm256_srli_epi16::<11>(_mm256_mullo_epi16(bits, m)),
                    sixteen,
                )
            };
            let v_lo = _mm256_or_si256(_mm256_and_si256(nibbles, low_nibble), fifth(low_shift));
            let v_hi = _mm256_or_si256(_mm256_srli_epi16::<4>(nibbles), fifth(high_shift));
            for r in 0..NX {
                // SAFETY: values 32 b .. 32 b + 32 of input row r exist (contract).
                let (x_lo, x_hi, scale) = unsafe {
                    let xq = xq[r].add(32 * b);
                    (
                        _mm256_loadu_si256(xq.cast()),
                        _mm256_loadu_si256(xq.add(16).cast()),
                        _mm256_broadcast_ss(scales[r].get_unchecked(b - window)),
                    )
                };
                let s =
                    _mm256_add_epi32(_mm256_madd_epi16(v_lo, x_lo), _mm256_madd_epi16(v_hi, x_hi));
                acc[r][b % 2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[r][b % 2]);
            }
        }
    }
    for r in 0..NX {
        e[0][r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + hsum(centre[r]);
        e[1][r] = factor * hsum(bound[r]);
    }
}
