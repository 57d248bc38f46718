//! AVX2 dequantizers: the same values as [`super::portable`], bit for bit, 8 at a time.
//!
//! Each group of 8 quantized values is widened to 32-bit integer lanes, its bit fields are
//! extracted and offset there (exact integer work), converted to float (exact: the integers are
//! small), then scaled with the same float32 multiplications and subtractions as the scalar
//! code, in the same order, never fused. The per-block scale factors come from the scalar helpers
//! themselves, so both paths start from identical scales.

use std::arch::x86_64::*;

use super::portable::{f16_at, f16_to_f32, k_factors, le_u16, q6k_factors};
use crate::ggml_type::GgmlType;

/// Dequantizes `bytes` (whole blocks of `ty`) into `out` (exactly their values).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C. `out` must hold exactly the values of `bytes`
/// (`bytes.len() / block_bytes * block_len`), which the caller checks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes.len() / ty.block_bytes();
    assert_eq!(out.len(), blocks * ty.block_len());
    let (src, dst) = (bytes.as_ptr(), out.as_mut_ptr());
    // SAFETY (all arms): block `i` occupies bytes `i * block_bytes ..` of `bytes` and values
    // `i * block_len ..` of `out`, both in range by the assertion above.
    unsafe {
        match ty {
            GgmlType::F32 => std::ptr::copy_nonoverlapping(src, dst.cast::<u8>(), 4 * blocks),
            GgmlType::F16 => f16_values(src, dst, blocks),
            GgmlType::BF16 => bf16_values(src, dst, blocks),
            GgmlType::Q4_0 => each_block(src, dst, blocks, 18, 32, q4_0_block),
            GgmlType::Q5_0 => each_block(src, dst, blocks, 22, 32, q5_0_block),
            GgmlType::Q8_0 => each_block(src, dst, blocks, 34, 32, q8_0_block),
            GgmlType::Q4K => each_block(src, dst, blocks, 144, 256, q4k_block),
            GgmlType::Q5K => each_block(src, dst, blocks, 176, 256, q5k_block),
            GgmlType::Q6K => each_block(src, dst, blocks, 210, 256, q6k_block),
        }
    }
}

/// Runs `block` over `blocks` consecutive blocks.
#[inline(always)]
unsafe fn each_block(
    src: *const u8,
    dst: *mut f32,
    blocks: usize,
    block_bytes: usize,
    block_len: usize,
    block: unsafe fn(&[u8], *mut f32),
) {
    for i in 0..blocks {
        // SAFETY: the caller guarantees `blocks` whole blocks at `src` and room at `dst`.
        unsafe {
            let b = std::slice::from_raw_parts(src.add(i * block_bytes), block_bytes);
            block(b, dst.add(i * block_len));
        }
    }
}

/// 8 bytes at `p`, zero-extended to 32-bit lanes.
#[inline(always)]
unsafe fn widen_u8(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 8 readable bytes at `p`.
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast::<__m128i>())) }
}

/// `scale * float(q)` for 8 integer lanes, stored at `dst`.
#[inline(always)]
unsafe fn store_scaled(dst: *mut f32, q: __m256i, scale: __m256) {
    // SAFETY: the caller guarantees room for 8 values at `dst`.
    unsafe { _mm256_storeu_ps(dst, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(q))) }
}

/// `scale * float(q) - min` for 8 integer lanes (rounded after the product), stored at `dst`.
#[inline(always)]
unsafe fn store_scaled_shifted(dst: *mut f32, q: __m256i, scale: __m256, min: __m256) {
    let v = _mm256_sub_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(q)), min);
    // SAFETY: the caller guarantees room for 8 values at `dst`.
    unsafe { _mm256_storeu_ps(dst, v) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_values(src: *const u8, dst: *mut f32, n: usize) {
    let exp_quiet = _mm256_set1_epi32(0x7e00);
    let exp_only = _mm256_set1_epi32(0x7c00);
    let payload = _mm256_set1_epi32(0x01ff);
    let quiet_f32 = _mm256_set1_epi32(0x0040_0000);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: values i..i + 8 exist in both buffers.
        unsafe {
            let h = _mm_loadu_si128(src.add(2 * i).cast::<__m128i>());
            let f = _mm256_castps_si256(_mm256_cvtph_ps(h));
            // The hardware conversion quiets signalling NaNs; numpy keeps them: clear the quiet
            // bit again where the f16 was a signalling NaN (all-ones exponent, quiet bit clear,
            // payload not zero).
            let h32 = _mm256_cvtepu16_epi32(h);
            let signalling = _mm256_andnot_si256(
                _mm256_cmpeq_epi32(_mm256_and_si256(h32, payload), _mm256_setzero_si256()),
                _mm256_cmpeq_epi32(_mm256_and_si256(h32, exp_quiet), exp_only),
            );
            let f = _mm256_andnot_si256(_mm256_and_si256(signalling, quiet_f32), f);
            _mm256_storeu_ps(dst.add(i), _mm256_castsi256_ps(f));
        }
        i += 8;
    }
    for j in i..n {
        // SAFETY: value j exists in both buffers.
        unsafe {
            *dst.add(j) = f16_to_f32(u16::from_le_bytes([*src.add(2 * j), *src.add(2 * j + 1)]))
        };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16_values(src: *const u8, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: values i..i + 8 exist in both buffers.
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(src.add(2 * i).cast::<__m128i>()));
            _mm256_storeu_ps(dst.add(i), _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h)));
        }
        i += 8;
    }
    for j in i..n {
        // SAFETY: value j exists in both buffers.
        unsafe {
            let b = std::slice::from_raw_parts(src.add(2 * j), 2);
            *dst.add(j) = f32::from_bits(u32::from(le_u16(b, 0)) << 16);
        }
    }
}

/// The low and high nibbles of the 8 bytes at `p`, in 32-bit lanes.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (__m256i, __m256i) {
    // SAFETY: the caller guarantees 8 readable bytes at `p`.
    let v = unsafe { widen_u8(p) };
    (
        _mm256_and_si256(v, _mm256_set1_epi32(0x0f)),
        _mm256_srli_epi32::<4>(v),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_block(b: &[u8], dst: *mut f32) {
    let d = _mm256_set1_ps(f16_at(b, 0));
    let eight = _mm256_set1_epi32(8);
    for g in 0..2 {
        // SAFETY: bytes 2 + 8g .. 10 + 8g lie in the 18-byte block; values stay below 32.
        unsafe {
            let (lo, hi) = nibbles(b.as_ptr().add(2 + 8 * g));
            store_scaled(dst.add(8 * g), _mm256_sub_epi32(lo, eight), d);
            store_scaled(dst.add(16 + 8 * g), _mm256_sub_epi32(hi, eight), d);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_block(b: &[u8], dst: *mut f32) {
    let d = _mm256_set1_ps(f16_at(b, 0));
    let qh = _mm256_set1_epi32(u32::from_le_bytes([b[2], b[3], b[4], b[5]]) as i32);
    let sixteen = _mm256_set1_epi32(16);
    let one = _mm256_set1_epi32(1);
    let fifth_bit = |first: i32| {
        let shifts = _mm256_setr_epi32(
            first,
            first + 1,
            first + 2,
            first + 3,
            first + 4,
            first + 5,
            first + 6,
            first + 7,
        );
        _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srlv_epi32(qh, shifts), one))
    };
    for g in 0..2 {
        // SAFETY: bytes 6 + 8g .. 14 + 8g lie in the 22-byte block; values stay below 32.
        unsafe {
            let (lo, hi) = nibbles(b.as_ptr().add(6 + 8 * g));
            let first = 8 * g as i32;
            let lo = _mm256_or_si256(lo, fifth_bit(first));
            let hi = _mm256_or_si256(hi, fifth_bit(16 + first));
            store_scaled(dst.add(8 * g), _mm256_sub_epi32(lo, sixteen), d);
            store_scaled(dst.add(16 + 8 * g), _mm256_sub_epi32(hi, sixteen), d);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_block(b: &[u8], dst: *mut f32) {
    let d = _mm256_set1_ps(f16_at(b, 0));
    for g in 0..4 {
        // SAFETY: bytes 2 + 8g .. 10 + 8g lie in the 34-byte block; values stay below 32.
        unsafe {
            let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().add(2 + 8 * g).cast()));
            store_scaled(dst.add(8 * g), q, d);
        }
    }
}

/// Q4_K and Q5_K: sub-blocks `2i` and `2i + 1` share the nibble bytes `i`; `high` adds the
/// fifth bits (Q5_K) of a group of 8 values of sub-block `s`.
#[inline(always)]
unsafe fn k_block(
    b: &[u8],
    dst: *mut f32,
    nibbles_at: usize,
    high: impl Fn(usize, usize) -> (__m256i, __m256i),
) {
    let (d, m) = k_factors(b);
    for i in 0..4 {
        let (d_lo, d_hi) = (_mm256_set1_ps(d[2 * i]), _mm256_set1_ps(d[2 * i + 1]));
        let (m_lo, m_hi) = (_mm256_set1_ps(m[2 * i]), _mm256_set1_ps(m[2 * i + 1]));
        for g in 0..4 {
            // SAFETY: nibble bytes nibbles_at + 32i + 8g + 8 <= block length; values < 256.
            unsafe {
                let (lo, hi) = nibbles(b.as_ptr().add(nibbles_at + 32 * i + 8 * g));
                let (h_lo, h_hi) = high(2 * i, g);
                let at = dst.add(64 * i + 8 * g);
                store_scaled_shifted(at, _mm256_or_si256(lo, h_lo), d_lo, m_lo);
                store_scaled_shifted(at.add(32), _mm256_or_si256(hi, h_hi), d_hi, m_hi);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_block(b: &[u8], dst: *mut f32) {
    let zero = _mm256_setzero_si256();
    // SAFETY: the block holds 144 bytes, its nibbles start at 16.
    unsafe { k_block(b, dst, 16, |_, _| (zero, zero)) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5k_block(b: &[u8], dst: *mut f32) {
    let one = _mm256_set1_epi32(1);
    let high = |s: usize, g: usize| {
        // SAFETY: high-bit bytes 16 + 8g .. 24 + 8g lie in the 176-byte block.
        let h = unsafe { widen_u8(b.as_ptr().add(16 + 8 * g)) };
        let bit = |s: usize| {
            let v = _mm256_srlv_epi32(h, _mm256_set1_epi32(s as i32));
            _mm256_slli_epi32::<4>(_mm256_and_si256(v, one))
        };
        (bit(s), bit(s + 1))
    };
    // SAFETY: the block holds 176 bytes, its nibbles start at 48.
    unsafe { k_block(b, dst, 48, high) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_block(b: &[u8], dst: *mut f32) {
    let d = q6k_factors(b);
    let (low_mask, high_mask) = (_mm256_set1_epi32(0x0f), _mm256_set1_epi32(0x03));
    let offset = _mm256_set1_epi32(32);
    let p = b.as_ptr();
    // Value v = 128 half + 32 j + l takes the nibble (j / 2) of low byte 64 half + 32 (j % 2)
    // + l and the bit pair j of high byte 128 + 32 half + l.
    for half in 0..2 {
        for l in (0..32).step_by(8) {
            // SAFETY: high byte 128 + 32 half + l + 8 <= 192 lies in the 210-byte block.
            let h = unsafe { widen_u8(p.add(128 + 32 * half + l)) };
            for j in 0..4 {
                // SAFETY: low byte 64 half + 32 (j % 2) + l + 8 <= 128; value index < 256.
                unsafe {
                    let q = widen_u8(p.add(64 * half + 32 * (j % 2) + l));
                    let low = _mm256_and_si256(
                        _mm256_srlv_epi32(q, _mm256_set1_epi32(4 * (j / 2) as i32)),
                        low_mask,
                    );
                    let high = _mm256_and_si256(
                        _mm256_srlv_epi32(h, _mm256_set1_epi32(2 * j as i32)),
                        high_mask,
                    );
                    let q = _mm256_sub_epi32(
                        _mm256_or_si256(low, _mm256_slli_epi32::<4>(high)),
                        offset,
                    );
                    let v = 128 * half + 32 * j + l;
                    store_scaled(dst.add(v), q, _mm256_set1_ps(d[v / 16]));
                }
            }
        }
    }
}
