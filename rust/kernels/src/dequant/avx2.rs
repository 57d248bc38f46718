//! AVX2 dequantizers: the same values as [`super::portable`], bit for bit, 32 at a time.
//!
//! The bit fields of 32 quantized values are extracted and offset as bytes (exact integer
//! work), widened and converted to float 8 at a time (exact: the integers are small), then
//! scaled with the same float32 multiplications and subtractions as the scalar code, in the same
//! order, never fused. Scales are converted from f16 by the F16C instruction, which is exact for
//! every non-NaN value; a NaN scale gives a NaN product either way (the multiplication quiets it
//! in both paths).

use std::arch::x86_64::*;

use super::portable::{f16_to_f32, k_scales, le_u16};
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
            GgmlType::F32 => f32_values(src, dst, blocks),
            GgmlType::F16 => f16_values(src, dst, blocks),
            GgmlType::BF16 => bf16_values(src, dst, blocks),
            GgmlType::Q4_0 => {
                for i in 0..blocks {
                    q4_0_block(src.add(18 * i), dst.add(32 * i));
                }
            }
            GgmlType::Q5_0 => {
                for i in 0..blocks {
                    q5_0_block(src.add(22 * i), dst.add(32 * i));
                }
            }
            GgmlType::Q8_0 => {
                for i in 0..blocks {
                    q8_0_block(src.add(34 * i), dst.add(32 * i));
                }
            }
            GgmlType::Q4K => {
                for i in 0..blocks {
                    q45k_block::<false>(src.add(144 * i), dst.add(256 * i));
                }
            }
            GgmlType::Q5K => {
                for i in 0..blocks {
                    q45k_block::<true>(src.add(176 * i), dst.add(256 * i));
                }
            }
            GgmlType::Q6K => {
                for i in 0..blocks {
                    q6k_block(src.add(210 * i), dst.add(256 * i));
                }
            }
        }
    }
}

/// The f16 at `p` as f32 (exact for every non-NaN value).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn f16_scale(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes at `p`.
    let bits = unsafe { u16::from_le_bytes([*p, *p.add(1)]) };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// 32 bytes from `p`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The four groups of 8 bytes of `q`, each sign-extended to 32-bit lanes and converted to float.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn i8x32_to_f32(q: __m256i) -> [__m256; 4] {
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)]
        .map(|part| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)))
}

/// Stores `scale * q` for 32 signed bytes `q`: `scales[0]` for values 0..16, `scales[1]` for
/// 16..32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn store_scaled(dst: *mut f32, q: __m256i, scales: [__m256; 2]) {
    for (j, f) in i8x32_to_f32(q).into_iter().enumerate() {
        // SAFETY: the caller guarantees room for 32 values at `dst`.
        unsafe { _mm256_storeu_ps(dst.add(8 * j), _mm256_mul_ps(scales[j / 2], f)) };
    }
}

/// Stores `scale * q - min` (rounded after the product) for 32 bytes `q` below 128.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn store_scaled_shifted(dst: *mut f32, q: __m256i, scale: __m256, min: __m256) {
    for (j, f) in i8x32_to_f32(q).into_iter().enumerate() {
        let v = _mm256_sub_ps(_mm256_mul_ps(scale, f), min);
        // SAFETY: the caller guarantees room for 32 values at `dst`.
        unsafe { _mm256_storeu_ps(dst.add(8 * j), v) };
    }
}

/// The low nibbles of 16 bytes as values 0..16 and their high nibbles as values 16..32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles_16(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at `p`.
    let v = unsafe { _mm_loadu_si128(p.cast()) };
    let mask = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(v, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
    _mm256_set_m128i(hi, lo)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_block(b: *const u8, dst: *mut f32) {
    // SAFETY: an 18-byte block at `b` (scale, 16 nibble bytes), 32 values at `dst`.
    unsafe {
        let d = _mm256_set1_ps(f16_scale(b));
        let q = _mm256_sub_epi8(nibbles_16(b.add(2)), _mm256_set1_epi8(8));
        store_scaled(dst, q, [d, d]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_block(b: *const u8, dst: *mut f32) {
    // SAFETY: a 22-byte block at `b` (scale, 4 high-bit bytes, 16 nibble bytes), 32 values.
    unsafe {
        let d = _mm256_set1_ps(f16_scale(b));
        let qh = i32::from_le_bytes([*b.add(2), *b.add(3), *b.add(4), *b.add(5)]);
        // Byte j of `spread` is byte j / 8 of qh; bit j % 8 of it is the fifth bit of value j.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh),
            _mm256_setr_epi64x(
                0,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
        let high = _mm256_and_si256(set, _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles_16(b.add(6)), high);
        store_scaled(dst, _mm256_sub_epi8(q, _mm256_set1_epi8(16)), [d, d]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_block(b: *const u8, dst: *mut f32) {
    // SAFETY: a 34-byte block at `b` (scale, 32 signed bytes), 32 values at `dst`.
    unsafe {
        let d = _mm256_set1_ps(f16_scale(b));
        store_scaled(dst, load32(b.add(2)), [d, d]);
    }
}

/// The 8 sub-block factors `d * sc[s]` and `dmin * m[s]` of a Q4_K / Q5_K block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn k_factors(b: *const u8) -> ([f32; 8], [f32; 8]) {
    // SAFETY: the caller guarantees a whole block at `b` (scales at bytes 0..16).
    let (d, dmin, packed) = unsafe {
        (
            f16_scale(b),
            f16_scale(b.add(2)),
            std::slice::from_raw_parts(b.add(4), 12),
        )
    };
    let (sc, m) = k_scales(packed);
    let widen =
        |v: [u8; 8]| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(v.as_ptr().cast())));
    let (mut ds, mut ms) = ([0f32; 8], [0f32; 8]);
    // SAFETY: 8 values fit each array.
    unsafe {
        _mm256_storeu_ps(ds.as_mut_ptr(), _mm256_mul_ps(_mm256_set1_ps(d), widen(sc)));
        _mm256_storeu_ps(
            ms.as_mut_ptr(),
            _mm256_mul_ps(_mm256_set1_ps(dmin), widen(m)),
        );
    }
    (ds, ms)
}

/// Q4_K (`HIGH_BITS` false) and Q5_K: sub-blocks `2i` and `2i + 1` are the low and high nibbles
/// of nibble bytes `32i..32i + 32`; Q5_K adds bit `s` of high-bit byte `l` as the fifth bit of
/// value `l` of sub-block `s`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45k_block<const HIGH_BITS: bool>(b: *const u8, dst: *mut f32) {
    // SAFETY: a 144-byte (Q4_K) or 176-byte (Q5_K) block at `b`, 256 values at `dst`.
    unsafe {
        let (d, m) = k_factors(b);
        let nibbles_at = if HIGH_BITS { 48 } else { 16 };
        let qh = if HIGH_BITS {
            load32(b.add(16))
        } else {
            _mm256_setzero_si256()
        };
        let mask = _mm256_set1_epi8(0x0f);
        let fifth = _mm256_set1_epi8(0x10);
        let high = |s: usize| {
            if HIGH_BITS {
                let bit = _mm256_set1_epi8((1u8 << s) as i8);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                _mm256_and_si256(set, fifth)
            } else {
                _mm256_setzero_si256()
            }
        };
        for i in 0..4 {
            let v = load32(b.add(nibbles_at + 32 * i));
            let lo = _mm256_or_si256(_mm256_and_si256(v, mask), high(2 * i));
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
                high(2 * i + 1),
            );
            let (s0, s1) = (2 * i, 2 * i + 1);
            store_scaled_shifted(
                dst.add(32 * s0),
                lo,
                _mm256_set1_ps(d[s0]),
                _mm256_set1_ps(m[s0]),
            );
            store_scaled_shifted(
                dst.add(32 * s1),
                hi,
                _mm256_set1_ps(d[s1]),
                _mm256_set1_ps(m[s1]),
            );
        }
    }
}

/// The 16 factors `d * scale[g]` of a Q6_K block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q6k_factors(b: *const u8) -> [f32; 16] {
    let mut out = [0f32; 16];
    // SAFETY: a 210-byte block at `b` (scales at 192..208, d at 208); 16 values fit `out`.
    unsafe {
        let d = _mm256_set1_ps(f16_scale(b.add(208)));
        let scales = _mm_loadu_si128(b.add(192).cast());
        let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scales));
        let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(scales)));
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(d, lo));
        _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_mul_ps(d, hi));
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_block(b: *const u8, dst: *mut f32) {
    // SAFETY: a 210-byte block at `b`, 256 values at `dst`.
    unsafe {
        let d = q6k_factors(b);
        let (mask, pair, offset) = (
            _mm256_set1_epi8(0x0f),
            _mm256_set1_epi8(0x03),
            _mm256_set1_epi8(32),
        );
        // Value 128 half + 32 j + l: nibble (j / 2) of low byte 64 half + 32 (j % 2) + l, bit
        // pair j of high byte 128 + 32 half + l, scale (128 half + 32 j + l) / 16.
        for half in 0..2 {
            let ql = [load32(b.add(64 * half)), load32(b.add(64 * half + 32))];
            let qh = load32(b.add(128 + 32 * half));
            let highs = [
                qh,
                _mm256_srli_epi16::<2>(qh),
                _mm256_srli_epi16::<4>(qh),
                _mm256_srli_epi16::<6>(qh),
            ];
            for (j, h) in highs.into_iter().enumerate() {
                let low = if j < 2 {
                    ql[j]
                } else {
                    _mm256_srli_epi16::<4>(ql[j - 2])
                };
                let low = _mm256_and_si256(low, mask);
                let high = _mm256_slli_epi16::<4>(_mm256_and_si256(h, pair));
                let q = _mm256_sub_epi8(_mm256_or_si256(low, high), offset);
                let v = 128 * half + 32 * j;
                let scales = [_mm256_set1_ps(d[v / 16]), _mm256_set1_ps(d[v / 16 + 1])];
                store_scaled(dst.add(v), q, scales);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_values(src: *const u8, dst: *mut f32, n: usize) {
    let exponent = _mm_set1_epi16(0x7c00);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: values i..i + 8 exist in both buffers.
        unsafe {
            let h = _mm_loadu_si128(src.add(2 * i).cast::<__m128i>());
            let mut f = _mm256_castps_si256(_mm256_cvtph_ps(h));
            let special = _mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent);
            if _mm_movemask_epi8(special) != 0 {
                // The hardware conversion quiets signalling NaNs; numpy keeps them: clear the
                // quiet bit again where the f16 was one (all-ones exponent, quiet bit clear,
                // payload not zero).
                let h32 = _mm256_cvtepu16_epi32(h);
                let payload = _mm256_and_si256(h32, _mm256_set1_epi32(0x01ff));
                let signalling = _mm256_andnot_si256(
                    _mm256_cmpeq_epi32(payload, _mm256_setzero_si256()),
                    _mm256_cmpeq_epi32(
                        _mm256_and_si256(h32, _mm256_set1_epi32(0x7e00)),
                        _mm256_set1_epi32(0x7c00),
                    ),
                );
                let quiet_bit = _mm256_and_si256(signalling, _mm256_set1_epi32(0x0040_0000));
                f = _mm256_andnot_si256(quiet_bit, f);
            }
            _mm256_storeu_ps(dst.add(i), _mm256_castsi256_ps(f));
        }
        i += 8;
    }
    for j in i..n {
        // SAFETY: value j exists in both buffers.
        unsafe {
            let b = std::slice::from_raw_parts(src.add(2 * j), 2);
            *dst.add(j) = f16_to_f32(le_u16(b, 0));
        }
    }
}

/// Copies `n` little-endian f32 values (an explicit vector loop: the C library's copy takes a
/// string-instruction path that is several times slower for these sizes on some CPUs).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_values(src: *const u8, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: values i..i + 8 exist in both buffers.
        unsafe { _mm256_storeu_ps(dst.add(i), _mm256_loadu_ps(src.add(4 * i).cast())) };
        i += 8;
    }
    for j in i..n {
        // SAFETY: value j exists in both buffers.
        unsafe { *dst.add(j) = src.add(4 * j).cast::<f32>().read_unaligned() };
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
