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
            GgmlType::Q4_0 => blocks_of::<{ ids::Q4_0 }>(src, dst, blocks, 18),
            GgmlType::Q5_0 => blocks_of::<{ ids::Q5_0 }>(src, dst, blocks, 22),
            GgmlType::Q8_0 => blocks_of::<{ ids::Q8_0 }>(src, dst, blocks, 34),
            GgmlType::Q4K => blocks_of::<{ ids::Q4K }>(src, dst, blocks, 144),
            GgmlType::Q5K => blocks_of::<{ ids::Q5K }>(src, dst, blocks, 176),
            GgmlType::Q6K => blocks_of::<{ ids::Q6K }>(src, dst, blocks, 210),
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
    [
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(lo))),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(hi))),
    ]
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

/// The ggml type ids of the block-quantized types, as the const parameter of [`factors`] and
/// [`group`].
pub(crate) mod ids {
    pub(crate) const Q4_0: u32 = 2;
    pub(crate) const Q5_0: u32 = 6;
    pub(crate) const Q8_0: u32 = 8;
    pub(crate) const Q4K: u32 = 12;
    pub(crate) const Q5K: u32 = 13;
    pub(crate) const Q6K: u32 = 14;
}

/// Groups of 32 values per block of type `T`.
pub(crate) const fn groups(t: u32) -> usize {
    match t {
        ids::Q4K | ids::Q5K | ids::Q6K => 8,
        _ => 1,
    }
}

/// The per-block factors of a block-quantized type: `d` (Q4_0, Q5_0, Q8_0: `d[0]`), the 8
/// sub-block factors `d * sc` and `dmin * m` (Q4_K, Q5_K), or the 16 factors `d * scale`
/// (Q6_K).
#[derive(Clone, Copy)]
pub(crate) struct Factors {
    d: [f32; 16],
    m: [f32; 8],
}

impl Factors {
    pub(crate) const ZERO: Factors = Factors {
        d: [0.0; 16],
        m: [0.0; 8],
    };
}

/// The factors of the block of type `T` at `b`.
///
/// # Safety
/// A whole block of type `T` at `b`, on a CPU with AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn factors<const T: u32>(b: *const u8) -> Factors {
    let mut f = Factors::ZERO;
    // SAFETY: a whole block at `b` (caller's contract); the stores fit the arrays.
    unsafe {
        match T {
            ids::Q4K | ids::Q5K => {
                let (d, dmin) = (f16_scale(b), f16_scale(b.add(2)));
                let (sc, m) = k_scales(std::slice::from_raw_parts(b.add(4), 12));
                let widen = |v: [u8; 8]| {
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(v.as_ptr().cast())))
                };
                let ds = _mm256_mul_ps(_mm256_set1_ps(d), widen(sc));
                _mm256_storeu_ps(f.d.as_mut_ptr(), ds);
                let ms = _mm256_mul_ps(_mm256_set1_ps(dmin), widen(m));
                _mm256_storeu_ps(f.m.as_mut_ptr(), ms);
            }
            ids::Q6K => {
                let d = _mm256_set1_ps(f16_scale(b.add(208)));
                let scales = _mm_loadu_si128(b.add(192).cast());
                let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scales));
                let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(scales)));
                _mm256_storeu_ps(f.d.as_mut_ptr(), _mm256_mul_ps(d, lo));
                _mm256_storeu_ps(f.d.as_mut_ptr().add(8), _mm256_mul_ps(d, hi));
            }
            _ => f.d[0] = f16_scale(b),
        }
    }
    f
}

/// Values `32 g .. 32 g + 32` of the block of type `T` at `b` (factors `f`), as 4 vectors.
///
/// Per type: Q4_0 `d * (nibble - 8)`; Q5_0 `d * ((nibble | fifth bit << 4) - 16)`; Q8_0
/// `q * d`; Q4_K / Q5_K sub-block `g` = low (g even) or high nibbles of bytes 32 (g / 2) ..
/// (+ bit g of the high-bit bytes), `(d * sc) * q - dmin * m`; Q6_K value 128 half + 32 j + l =
/// nibble (j / 2) of low byte 64 half + 32 (j % 2) + l and bit pair j of high byte 128 + 32 half
/// + l, `(d * scale) * (q - 32)`.
///
/// # Safety
/// A whole block of type `T` at `b` and `g < groups(T)`, on a CPU with AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn group<const T: u32>(b: *const u8, g: usize, f: &Factors) -> [__m256; 4] {
    // SAFETY: every load lies inside the block (caller's contract; offsets per the layouts in
    // `super::portable`).
    unsafe {
        match T {
            ids::Q8_0 => scaled(load32(b.add(2)), [f.d[0]; 2]),
            ids::Q4_0 => scaled(
                _mm256_sub_epi8(nibbles_16(b.add(2)), _mm256_set1_epi8(8)),
                [f.d[0]; 2],
            ),
            ids::Q5_0 => {
                let qh = i32::from_le_bytes([*b.add(2), *b.add(3), *b.add(4), *b.add(5)]);
                let q = _mm256_or_si256(nibbles_16(b.add(6)), fifth_bits(qh));
                scaled(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), [f.d[0]; 2])
            }
            ids::Q4K | ids::Q5K => {
                let nibbles_at = if T == ids::Q5K { 48 } else { 16 };
                let v = load32(b.add(nibbles_at + 32 * (g / 2)));
                let v = if g.is_multiple_of(2) {
                    v
                } else {
                    _mm256_srli_epi16::<4>(v)
                };
                let mut q = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
                if T == ids::Q5K {
                    let bit = _mm256_set1_epi8((1u8 << g) as i8);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(load32(b.add(16)), bit), bit);
                    q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
                }
                let (d, m) = (_mm256_set1_ps(f.d[g]), _mm256_set1_ps(f.m[g]));
                let v = i8x32_to_f32(q);
                [
                    _mm256_sub_ps(_mm256_mul_ps(d, v[0]), m),
                    _mm256_sub_ps(_mm256_mul_ps(d, v[1]), m),
                    _mm256_sub_ps(_mm256_mul_ps(d, v[2]), m),
                    _mm256_sub_ps(_mm256_mul_ps(d, v[3]), m),
                ]
            }
            _ => {
                let (half, j) = (g / 4, g % 4);
                let low = load32(b.add(64 * half + 32 * (j % 2)));
                let low = if j < 2 {
                    low
                } else {
                    _mm256_srli_epi16::<4>(low)
                };
                let low = _mm256_and_si256(low, _mm256_set1_epi8(0x0f));
                let qh = load32(b.add(128 + 32 * half));
                let qh = match j {
                    0 => qh,
                    1 => _mm256_srli_epi16::<2>(qh),
                    2 => _mm256_srli_epi16::<4>(qh),
                    _ => _mm256_srli_epi16::<6>(qh),
                };
                let high = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)));
                let q = _mm256_sub_epi8(_mm256_or_si256(low, high), _mm256_set1_epi8(32));
                let v = 128 * half + 32 * j;
                scaled(q, [f.d[v / 16], f.d[v / 16 + 1]])
            }
        }
    }
}

/// `scale * q` for 32 signed bytes `q`: `scales[0]` for values 0..16, `scales[1]` for 16..32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scaled(q: __m256i, scales: [f32; 2]) -> [__m256; 4] {
    let (s0, s1) = (_mm256_set1_ps(scales[0]), _mm256_set1_ps(scales[1]));
    let f = i8x32_to_f32(q);
    [
        _mm256_mul_ps(s0, f[0]),
        _mm256_mul_ps(s0, f[1]),
        _mm256_mul_ps(s1, f[2]),
        _mm256_mul_ps(s1, f[3]),
    ]
}

/// Byte j (0..32) = 0x10 where bit j of `qh` is set, else 0: the fifth bits of a Q5_0 block.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn fifth_bits(qh: i32) -> __m256i {
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
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Dequantizes `blocks` blocks of type `T` from `src` into `dst`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_of<const T: u32>(
    src: *const u8,
    dst: *mut f32,
    blocks: usize,
    block_bytes: usize,
) {
    for i in 0..blocks {
        // SAFETY: block i lies in `src`, its 32 * groups values in `dst` (caller's contract).
        unsafe {
            let b = src.add(i * block_bytes);
            let f = factors::<T>(b);
            for g in 0..groups(T) {
                let at = dst.add((i * groups(T) + g) * 32);
                for (j, v) in group::<T>(b, g, &f).into_iter().enumerate() {
                    _mm256_storeu_ps(at.add(8 * j), v);
                }
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
