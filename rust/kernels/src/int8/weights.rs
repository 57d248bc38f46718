//! The integer form of a weight row in the int8 mode: for each 32-column activation block, the
//! weight's integer values, integer scales and float factors ([`IntBlock`]), read from the GGUF
//! bytes as ggml defines the layouts (see [`crate::int8`] for the formulas they enter). This is
//! the scalar reading the portable path computes with; the AVX2 panels hold the same integers.

use crate::dequant::dequantize_row_portable;
use crate::ggml_type::GgmlType;

use super::activations::ACTIVATION_BLOCK;

/// Activation blocks per K-quant super-block.
pub(crate) const SUB_BLOCKS: usize = 256 / ACTIVATION_BLOCK;

/// One activation block's worth of a weight row, as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IntBlock {
    /// The integer values `v_i` (offsets applied).
    pub(crate) v: [i8; ACTIVATION_BLOCK],
    /// Integer scales of the first and the second 16 values (1 where the format has none; the
    /// sub-block scale `sc` twice for Q4_K / Q5_K).
    pub(crate) scale_lo: i32,
    pub(crate) scale_hi: i32,
    /// The sub-block min `m` (Q4_K / Q5_K; 0 otherwise).
    pub(crate) min: i32,
    /// The float factor `D` and, for Q4_K / Q5_K, `Dmin`.
    pub(crate) d: f32,
    pub(crate) dmin: f32,
}

/// Whether the format has the min term (`acc = fma(-(Dmin * d_x), M, acc)` after the scale term).
pub(crate) fn has_min_term(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4K | GgmlType::Q5K)
}

/// The f16 at byte `at` of `b`, as f32 (exactly, by the crate's dequantizer).
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    let mut v = [0f32; 1];
    dequantize_row_portable(GgmlType::F16, &b[at..at + 2], &mut v)
        .expect("two bytes are one F16 value");
    v[0]
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K / Q5_K block:
/// sub-blocks 0..4 keep their 6 bits in the low bits of bytes `j` (scale) and `j + 4` (min);
/// sub-blocks 4..8 take their low 4 bits from byte `j + 4` (scale: low nibble, min: high
/// nibble) and their top 2 bits from the top of bytes `j - 4` (scale) and `j` (min).
pub(crate) fn k_scale_min(packed: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 0x3f, packed[j + 4] & 0x3f)
    } else {
        (
            (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

/// The 6-bit value `v` (0..256) of a Q6_K block, before its offset of 32: low 4 bits from
/// `ql` (bytes 0..128), high 2 bits from `qh` (bytes 128..192).
fn q6k_value(block: &[u8], v: usize) -> u8 {
    let (half, r) = (v / 128, v % 128);
    let low = (block[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
    let high = (block[128 + half * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
    low | (high << 4)
}

/// Activation block `t` of a weight row `row` (whole GGUF blocks of `ty`, an integer type).
pub(crate) fn int_block(ty: GgmlType, row: &[u8], t: usize) -> IntBlock {
    let mut out = IntBlock {
        v: [0; ACTIVATION_BLOCK],
        scale_lo: 1,
        scale_hi: 1,
        min: 0,
        d: 0.0,
        dmin: 0.0,
    };
    let j = t % SUB_BLOCKS;
    let block =
        &row[ty.block_bytes() * (t * ACTIVATION_BLOCK / ty.block_len())..][..ty.block_bytes()];
    match ty {
        GgmlType::Q8_0 => {
            out.d = f16_at(block, 0);
            for (v, &b) in out.v.iter_mut().zip(&block[2..34]) {
                *v = b as i8;
            }
        }
        GgmlType::Q4_0 => {
            out.d = f16_at(block, 0);
            for i in 0..16 {
                out.v[i] = (block[2 + i] & 0x0f) as i8 - 8;
                out.v[16 + i] = (block[2 + i] >> 4) as i8 - 8;
            }
        }
        GgmlType::Q5_0 => {
            out.d = f16_at(block, 0);
            let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
            let high = |i: usize| (((qh >> i) & 1) << 4) as u8;
            for i in 0..16 {
                out.v[i] = ((block[6 + i] & 0x0f) | high(i)) as i8 - 16;
                out.v[16 + i] = ((block[6 + i] >> 4) | high(16 + i)) as i8 - 16;
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            out.d = f16_at(block, 0);
            out.dmin = f16_at(block, 2);
            let (sc, m) = k_scale_min(&block[4..16], j);
            (out.scale_lo, out.scale_hi, out.min) = (sc.into(), sc.into(), m.into());
            let (qs, qh) = if ty == GgmlType::Q4K {
                (&block[16..144], None)
            } else {
                (&block[48..176], Some(&block[16..48]))
            };
            for (l, v) in out.v.iter_mut().enumerate() {
                let low = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
                let high = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
                *v = (low | high) as i8;
            }
        }
        GgmlType::Q6K => {
            out.d = f16_at(block, 208);
            out.scale_lo = (block[192 + 2 * j] as i8).into();
            out.scale_hi = (block[192 + 2 * j + 1] as i8).into();
            for (l, v) in out.v.iter_mut().enumerate() {
                *v = q6k_value(block, ACTIVATION_BLOCK * j + l) as i8 - 32;
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            unreachable!("float weights have no int8 form (callers check has_int8_form)")
        }
    }
    out
}
