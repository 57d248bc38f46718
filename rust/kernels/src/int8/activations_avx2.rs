//! The AVX2 activation quantizer: the scalar rule of [`super::activations`], 8 values at a time,
//! giving the same bytes, scales and half sums. The block scale comes from the scalar
//! [`BlockScale`] itself; the per-value work (product, rounding half away from zero, clamping) is
//! exact to reproduce: the product is one f32 multiplication, and the rounding is done on the
//! exact fraction `p - trunc(p)`.

use std::arch::x86_64::*;

use super::activations::{ActivationBlock, BlockScale, ACTIVATION_BLOCK};

/// Quantizes `out.len()` blocks of 32 values from `x`.
///
/// # Safety
/// The CPU must support AVX2. `x` must hold `out.len() * 32` values.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_blocks(x: &[f32], out: &mut [ActivationBlock]) {
    assert_eq!(x.len(), out.len() * ACTIVATION_BLOCK);
    for (t, out) in out.iter_mut().enumerate() {
        let src = x[t * ACTIVATION_BLOCK..].as_ptr();
        let mut v = [_mm256_setzero_ps(); 4];
        for (i, v) in v.iter_mut().enumerate() {
            // SAFETY: block t's 32 values lie inside `x` (assertion above).
            *v = unsafe { _mm256_loadu_ps(src.add(8 * i)) };
        }
        let mut q = [0i8; ACTIVATION_BLOCK];
        let d = match BlockScale::from_amax_bits(amax_bits(v)) {
            BlockScale::Zero { d } => d,
            BlockScale::Scaled { d, inv } => {
                let mut ints = [_mm256_setzero_si256(); 4];
                for (i, v) in ints.iter_mut().zip(v) {
                    *i = round_clamped(_mm256_mul_ps(v, _mm256_set1_ps(inv)));
                }
                // SAFETY: 32 writable bytes.
                unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), pack_bytes(ints)) };
                d
            }
        };
        *out = ActivationBlock::new(q, d);
    }
}

/// The largest `|x_i|` bits of a block (sign cleared; integer order = magnitude order, NaNs
/// above infinity), as the scalar rule computes it.
#[target_feature(enable = "avx2,fma")]
fn amax_bits(v: [__m256; 4]) -> u32 {
    let magnitude = _mm256_set1_epi32(0x7fff_ffff);
    let mut m = _mm256_setzero_si256();
    for v in v {
        m = _mm256_max_epi32(m, _mm256_and_si256(_mm256_castps_si256(v), magnitude));
    }
    let m = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    _mm_cvtsi128_si32(m) as u32
}

/// `clamp(round_half_away(p), -127, 127)` as i32 lanes (`p` finite).
#[target_feature(enable = "avx2,fma")]
fn round_clamped(p: __m256) -> __m256i {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
    // p - trunc(p) is exact; |fraction| >= 0.5 rounds away from zero.
    let sign = _mm256_and_ps(p, _mm256_set1_ps(-0.0));
    let fraction = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(p, t));
    let away = _mm256_cmp_ps::<_CMP_GE_OQ>(fraction, _mm256_set1_ps(0.5));
    let step = _mm256_and_ps(away, _mm256_or_ps(sign, _mm256_set1_ps(1.0)));
    let r = _mm256_add_ps(t, step);
    let r = _mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    );
    _mm256_cvtps_epi32(r)
}

/// The 32 i32 lanes (values 0..8, 8..16, 16..24, 24..32), each in -127..=127, as 32 bytes in
/// order.
#[target_feature(enable = "avx2,fma")]
fn pack_bytes(ints: [__m256i; 4]) -> __m256i {
    // packs work within 128-bit lanes: the dword permutation puts the values back in order.
    let w01 = _mm256_packs_epi32(ints[0], ints[1]);
    let w23 = _mm256_packs_epi32(ints[2], ints[3]);
    let b = _mm256_packs_epi16(w01, w23);
    _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}
