//! Scalar dequantizers: the reference the AVX2 dequantizers must match bit for bit. Each one
//! reproduces gguf-py's numpy `dequantize_blocks` for its type operation by operation: every
//! float32 product and difference is rounded on its own (numpy fuses nothing), scales are
//! converted from f16 exactly, and integer offsets are applied before the conversion to float.
//!
//! Block layouts (byte offsets, little-endian), as ggml defines them:
//! - Q4_0 (18 B): f16 d | 16 B of nibbles; value j < 16 is the low nibble of byte j, value
//!   16 + j the high nibble; `d * (q - 8)`.
//! - Q5_0 (22 B): f16 d | u32 high bits (bit j for value j) | 16 B of nibbles as Q4_0;
//!   `d * ((nibble | high << 4) - 16)`.
//! - Q8_0 (34 B): f16 d | 32 x i8; `q * d`.
//! - Q4_K (144 B): f16 d | f16 dmin | 12 B of packed 6-bit scales and mins | 128 B of nibbles;
//!   sub-block s (32 values) uses the low (s even) or high nibbles of bytes 32 * (s / 2) ..;
//!   `(d * sc[s]) * q - (dmin * m[s])`.
//! - Q5_K (176 B): as Q4_K with 32 B of high bits before the nibbles: bit s of byte l is the
//!   fifth bit of value l of sub-block s.
//! - Q6_K (210 B): 128 B low nibbles | 64 B high 2-bit pairs | 16 x i8 scales | f16 d;
//!   `(d * scale[v / 16]) * (q - 32)`.

use crate::ggml_type::GgmlType;

/// The f16 with these bits as an f32, exactly as numpy's `astype(np.float32)` converts it
/// (subnormals become normal f32 values; NaN payloads, signalling ones included, are kept).
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exp = u32::from(bits >> 10) & 0x1f;
    let man = u32::from(bits & 0x3ff);
    let magnitude = match (exp, man) {
        (0, 0) => 0,
        // man * 2^-24 is exact in f32 (a normal number there).
        (0, _) => (man as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        (0x1f, _) => 0x7f80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// The bf16 with these bits as an f32 (the upper half of its bits).
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// The little-endian u16 at byte `at`.
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The f16 at byte `at`, as f32.
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(le_u16(b, at))
}

/// The 8 six-bit scales and 8 six-bit mins packed in the 12 scale bytes of a Q4_K / Q5_K block:
/// bytes 0..4 hold scales 0..4 (low 6 bits) and the top 2 bits of scales 4..8, bytes 4..8 the
/// same for the mins, bytes 8..12 the low 4 bits of scales 4..8 (low nibble) and mins 4..8.
pub(crate) fn k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for i in 0..4 {
        sc[i] = s[i] & 0x3f;
        m[i] = s[4 + i] & 0x3f;
        sc[4 + i] = (s[8 + i] & 0x0f) | ((s[i] >> 2) & 0x30);
        m[4 + i] = (s[8 + i] >> 4) | ((s[4 + i] >> 2) & 0x30);
    }
    (sc, m)
}

/// The per-sub-block factors `d * sc[s]` and `dmin * m[s]` of a Q4_K / Q5_K block.
pub(crate) fn k_factors(block: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
    let (sc, m) = k_scales(&block[4..16]);
    (sc.map(|s| d * f32::from(s)), m.map(|v| dmin * f32::from(v)))
}

/// The per-16-value factors `d * scale[g]` of a Q6_K block.
pub(crate) fn q6k_factors(block: &[u8]) -> [f32; 16] {
    let d = f16_at(block, 208);
    std::array::from_fn(|g| d * f32::from(block[192 + g] as i8))
}

/// The 6-bit value `v` (0..256) of a Q6_K block, before the offset of 32.
pub(crate) fn q6k_quant(block: &[u8], v: usize) -> u8 {
    let (half, r) = (v / 128, v % 128);
    let low = (block[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
    let high = (block[128 + half * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
    low | (high << 4)
}

/// Dequantizes `bytes` (whole blocks of `ty`) into `out` (exactly their values).
pub(crate) fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let blocks = bytes
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(ty.block_len()));
    match ty {
        GgmlType::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in blocks {
                o[0] = f16_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, o) in blocks {
                o[0] = bf16_to_f32(le_u16(b, 0));
            }
        }
        GgmlType::Q4_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    o[j] = d * f32::from((b[2 + j] & 0x0f) as i8 - 8);
                    o[16 + j] = d * f32::from((b[2 + j] >> 4) as i8 - 8);
                }
            }
        }
        GgmlType::Q5_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let lo = (b[6 + j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
                    let hi = (b[6 + j] >> 4) | ((((qh >> (16 + j)) & 1) as u8) << 4);
                    o[j] = d * f32::from(lo as i8 - 16);
                    o[16 + j] = d * f32::from(hi as i8 - 16);
                }
            }
        }
        GgmlType::Q8_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for j in 0..32 {
                    o[j] = f32::from(b[2 + j] as i8) * d;
                }
            }
        }
        GgmlType::Q4K => {
            for (b, o) in blocks {
                let (d, m) = k_factors(b);
                for s in 0..8 {
                    let qs = &b[16 + 32 * (s / 2)..][..32];
                    for l in 0..32 {
                        let q = (qs[l] >> (4 * (s % 2))) & 0x0f;
                        o[32 * s + l] = d[s] * f32::from(q) - m[s];
                    }
                }
            }
        }
        GgmlType::Q5K => {
            for (b, o) in blocks {
                let (d, m) = k_factors(b);
                let qh = &b[16..48];
                for s in 0..8 {
                    let qs = &b[48 + 32 * (s / 2)..][..32];
                    for l in 0..32 {
                        let q = ((qs[l] >> (4 * (s % 2))) & 0x0f) | (((qh[l] >> s) & 1) << 4);
                        o[32 * s + l] = d[s] * f32::from(q) - m[s];
                    }
                }
            }
        }
        GgmlType::Q6K => {
            for (b, o) in blocks {
                let d = q6k_factors(b);
                for (v, out) in o.iter_mut().enumerate() {
                    *out = d[v / 16] * f32::from(q6k_quant(b, v) as i8 - 32);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_on_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
        // a signalling NaN keeps its payload, as numpy converts it
        assert_eq!(f16_to_f32(0x7c01).to_bits(), 0x7f80_2000);
    }

    #[test]
    fn k_scales_unpack_six_bit_fields() {
        // scale 5 = 0b10_0011 (low 4 bits in byte 9, top 2 in byte 1), min 6 = 0b01_0110
        let mut s = [0u8; 12];
        s[1] = 0b1000_0000;
        s[9] = 0b0000_0011;
        s[6] = 0b0100_0000;
        s[10] = 0b0110_0000;
        s[0] = 0b0001_0101;
        let (sc, m) = k_scales(&s);
        assert_eq!(sc[5], 0b10_0011);
        assert_eq!(m[6], 0b01_0110);
        assert_eq!(sc[0], 0b01_0101);
    }
}
