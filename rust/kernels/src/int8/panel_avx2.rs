//! Panels: the int8 mode's AVX2 form of 8 weight rows, built once per call from their GGUF
//! blocks. For every 32-column activation block `t` a panel holds
//! - 8 value vectors: vector `g` has, in its 32-bit lane `a`, the 4 integer values of weight row
//!   `a` at columns `32t + 4g .. 32t + 4g + 4` (unsigned 4/5/6-bit values before their offset
//!   for Q4_0, Q5_0, Q4_K, Q5_K and Q6_K; the signed bytes for Q8_0), so that one broadcast of
//!   4 activation bytes meets all 8 rows in one `maddubs`;
//! - the block's factor vectors ([`factors_per_block`]): `D` per lane as f32 first, then
//!   per-format integer scales as i16 pairs (lane `a` = elements `2a`, `2a + 1`):
//!   Q4_K / Q5_K `[D, -(Dmin * m) as f32, (sc, sc)]`, Q6_K `[D, (s_lo, s_lo), (s_hi, s_hi),
//!   (32 s_lo, 32 s_hi)]`, the others `[D]`.
//!
//! The values are those of [`super::weights`] (the offsets are applied by the kernel, exactly,
//! in integers). Rows past the end of the matrix are zero rows (their outputs are dropped).

use std::arch::x86_64::*;

use crate::ggml_type::GgmlType;
use crate::quant_matrix::QuantMatrix;

use super::driver::PANEL_ROWS;
use super::simd_avx2::{f16_lanes, high4, low4, move_bits, zero_vector, Ahead, Rows};
use super::weights::{k_scale_min, SUB_BLOCKS};

/// Value vectors per activation block.
pub(crate) const GROUPS: usize = 8;

/// Factor vectors per activation block for weights of type `ty`.
pub(crate) fn factors_per_block(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4K | GgmlType::Q5K => 3,
        GgmlType::Q6K => 4,
        _ => 1,
    }
}

/// The panels of one chunk of weight rows (a task's scratch, reused across calls).
#[derive(Default)]
pub(crate) struct Panels {
    blocks: usize,
    factors_per_block: usize,
    /// Panel `p`, block `t`, group `g` at `(p * blocks + t) * GROUPS + g`.
    values: Vec<__m256i>,
    /// Panel `p`, block `t`, factor `f` at `(p * blocks + t) * factors_per_block + f`.
    factors: Vec<__m256i>,
    /// One zero weight row, standing in for the rows past the end of the matrix.
    zero_row: Vec<u8>,
}

impl Panels {
    /// Makes room for `panels` panels of `w` (`blocks` activation blocks per row).
    pub(crate) fn prepare(&mut self, w: &QuantMatrix, blocks: usize, panels: usize) {
        self.blocks = blocks;
        self.factors_per_block = factors_per_block(w.ty());
        let zero = zero_vector();
        self.values.resize(panels * blocks * GROUPS, zero);
        self.factors
            .resize(panels * blocks * self.factors_per_block, zero);
        self.zero_row.clear();
        self.zero_row.resize(w.row_bytes(), 0);
    }

    pub(crate) fn blocks(&self) -> usize {
        self.blocks
    }

    pub(crate) fn factors_per_block(&self) -> usize {
        self.factors_per_block
    }

    /// The value vectors of panel `p` (block after block).
    pub(crate) fn values(&self, p: usize) -> *const __m256i {
        self.values[p * self.blocks * GROUPS..].as_ptr()
    }

    /// The factor vectors of panel `p` (block after block).
    pub(crate) fn factors(&self, p: usize) -> *const __m256i {
        self.factors[p * self.blocks * self.factors_per_block..].as_ptr()
    }

    /// Builds panel `p` from weight rows `first .. first + 8` of `w` (those that exist).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; [`Panels::prepare`] must have been called for
    /// `w` with more than `p` panels; `first < w.rows()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn build(&mut self, w: &QuantMatrix, p: usize, first: usize) {
        let mut rows = [self.zero_row.as_ptr(); PANEL_ROWS];
        for (a, row) in rows.iter_mut().enumerate() {
            if first + a < w.rows() {
                *row = w.row(first + a).as_ptr();
            }
        }
        // the next panel's rows (contiguous bytes) are fetched while this one is built
        let next = (first + PANEL_ROWS).min(w.rows())..(first + 2 * PANEL_ROWS).min(w.rows());
        let next = &w.data()[next.start * w.row_bytes()..next.end * w.row_bytes()];
        let units = match w.ty() {
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => self.blocks / SUB_BLOCKS,
            _ => self.blocks,
        };
        let mut ahead = Ahead::new(next, units);
        let start = p * self.blocks;
        let out = Out {
            values: self.values[start * GROUPS..(start + self.blocks) * GROUPS].as_mut_ptr(),
            factors: self.factors
                [start * self.factors_per_block..(start + self.blocks) * self.factors_per_block]
                .as_mut_ptr(),
            factors_per_block: self.factors_per_block,
        };
        // SAFETY: every row pointer addresses `row_bytes` readable bytes (a matrix row or the
        // zero row), which hold `blocks` activation blocks; `out` has room for the panel.
        unsafe {
            match w.ty() {
                GgmlType::Q8_0 => q8_0(&rows, units, out, &mut ahead),
                GgmlType::Q4_0 => q4_0(&rows, units, out, &mut ahead),
                GgmlType::Q5_0 => q5_0(&rows, units, out, &mut ahead),
                GgmlType::Q4K => q4k_q5k(&rows, units, false, out, &mut ahead),
                GgmlType::Q5K => q4k_q5k(&rows, units, true, out, &mut ahead),
                GgmlType::Q6K => q6k(&rows, units, out, &mut ahead),
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
            }
        }
    }
}

/// Where one panel's vectors go.
#[derive(Clone, Copy)]
struct Out {
    values: *mut __m256i,
    factors: *mut __m256i,
    factors_per_block: usize,
}

impl Out {
    /// # Safety
    /// `t` must be a block of the panel.
    #[inline(always)]
    unsafe fn value(self, t: usize, g: usize, v: __m256i) {
        // SAFETY: the caller's contract; the panel has `blocks * GROUPS` value vectors.
        unsafe { _mm256_storeu_si256(self.values.add(t * GROUPS + g), v) }
    }

    /// # Safety
    /// `t` must be a block of the panel and `f < factors_per_block`.
    #[inline(always)]
    unsafe fn factor(self, t: usize, f: usize, v: __m256i) {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_si256(self.factors.add(t * self.factors_per_block + f), v) }
    }
}

/// The 32 bytes at `at` of every row.
///
/// # Safety
/// Each row must have 32 readable bytes at `at`.
#[inline(always)]
unsafe fn load32(rows: &Rows, at: usize) -> [__m256i; 8] {
    let mut r = [zero_vector(); 8];
    for (v, row) in r.iter_mut().zip(rows) {
        // SAFETY: the caller's contract.
        *v = unsafe { _mm256_loadu_si256(row.add(at).cast()) };
    }
    r
}

/// The 16 bytes at `at` of rows `a` and `a + 4` in vector `a` (low and high half).
///
/// # Safety
/// Each row must have 16 readable bytes at `at`.
#[inline(always)]
unsafe fn load16_pairs(rows: &Rows, at: usize) -> [__m256i; 4] {
    let mut r = [zero_vector(); 4];
    for (a, v) in r.iter_mut().enumerate() {
        // SAFETY: the caller's contract.
        *v = unsafe { _mm256_loadu2_m128i(rows[a + 4].add(at).cast(), rows[a].add(at).cast()) };
    }
    r
}

/// An 8 x 8 transpose of 32-bit elements: lane `a` of output `g` = lane `g` of input `a`.
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    // u_g (rows 0..4) and v_g (rows 4..8): elements g (low half) and g + 4 (high half)
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let v0 = _mm256_unpacklo_epi64(t4, t6);
    let v1 = _mm256_unpackhi_epi64(t4, t6);
    let v2 = _mm256_unpacklo_epi64(t5, t7);
    let v3 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(u0, v0),
        _mm256_permute2x128_si256::<0x20>(u1, v1),
        _mm256_permute2x128_si256::<0x20>(u2, v2),
        _mm256_permute2x128_si256::<0x20>(u3, v3),
        _mm256_permute2x128_si256::<0x31>(u0, v0),
        _mm256_permute2x128_si256::<0x31>(u1, v1),
        _mm256_permute2x128_si256::<0x31>(u2, v2),
        _mm256_permute2x128_si256::<0x31>(u3, v3),
    ]
}

/// 4 x 4 transposes of 32-bit elements in each half: from `load16_pairs` (rows `a` | `a + 4`),
/// output `g` has element `g` of rows 0..8 in lanes 0..8.
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8x4(r: [__m256i; 4]) -> [__m256i; 4] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// i16 pairs `(lo[a], hi[a])` in lane `a`.
#[target_feature(enable = "avx2,fma,f16c")]
fn pairs(lo: [i16; 8], hi: [i16; 8]) -> __m256i {
    let mut e = [0i16; 16];
    for a in 0..8 {
        e[2 * a] = lo[a];
        e[2 * a + 1] = hi[a];
    }
    // SAFETY: 32 readable bytes.
    unsafe { _mm256_loadu_si256(e.as_ptr().cast()) }
}

/// # Safety
/// As [`Panels::build`]: `blocks` Q8_0 blocks per row, room for them in `out`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(rows: &Rows, blocks: usize, out: Out, ahead: &mut Ahead) {
    for t in 0..blocks {
        ahead.step();
        let at = t * 34;
        // SAFETY (all): block t of every row lies in the row; t is a block of the panel.
        unsafe {
            out.factor(t, 0, f16_lanes(rows, at));
            let v = transpose8(load32(rows, at + 2));
            for (g, v) in v.into_iter().enumerate() {
                out.value(t, g, v);
            }
        }
    }
}

/// # Safety
/// As [`q8_0`], for Q4_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0(rows: &Rows, blocks: usize, out: Out, ahead: &mut Ahead) {
    for t in 0..blocks {
        ahead.step();
        let at = t * 18;
        // SAFETY (all): block t of every row lies in the row; t is a block of the panel.
        unsafe {
            out.factor(t, 0, f16_lanes(rows, at));
            // byte j holds value j (low nibble) and value 16 + j (high nibble)
            let v = transpose8x4(load16_pairs(rows, at + 2));
            for (i, v) in v.into_iter().enumerate() {
                out.value(t, i, low4(v));
                out.value(t, 4 + i, high4(v));
            }
        }
    }
}

/// # Safety
/// As [`q8_0`], for Q5_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0(rows: &Rows, blocks: usize, out: Out, ahead: &mut Ahead) {
    for t in 0..blocks {
        ahead.step();
        let at = t * 22;
        let mut qh = [0i32; 8];
        for (h, row) in qh.iter_mut().zip(rows) {
            // SAFETY: the 4 high-bit bytes of block t.
            *h = unsafe { row.add(at + 2).cast::<i32>().read_unaligned() };
        }
        // SAFETY: 32 readable bytes.
        let qh = unsafe { _mm256_loadu_si256(qh.as_ptr().cast()) };
        // SAFETY (all): block t of every row lies in the row; t is a block of the panel.
        unsafe {
            out.factor(t, 0, f16_lanes(rows, at));
            let v = transpose8x4(load16_pairs(rows, at + 6));
            for g in 0..GROUPS {
                let low = if g < 4 { low4(v[g]) } else { high4(v[g - 4]) };
                out.value(t, g, _mm256_or_si256(low, q5_0_high_bits(qh, g)));
            }
        }
    }
}

/// Bit 4 of value `4g + m` (m = byte of the lane) from lane `a`'s 32 high bits: bits
/// `4g .. 4g + 4` of each lane, spread over its 4 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_high_bits(qh: __m256i, g: usize) -> __m256i {
    let byte = (g / 2) as i8;
    let spread = _mm256_setr_epi8(
        byte,
        byte,
        byte,
        byte,
        4 + byte,
        4 + byte,
        4 + byte,
        4 + byte,
        8 + byte,
        8 + byte,
        8 + byte,
        8 + byte,
        12 + byte,
        12 + byte,
        12 + byte,
        12 + byte,
        byte,
        byte,
        byte,
        byte,
        4 + byte,
        4 + byte,
        4 + byte,
        4 + byte,
        8 + byte,
        8 + byte,
        8 + byte,
        8 + byte,
        12 + byte,
        12 + byte,
        12 + byte,
        12 + byte,
    );
    let bytes = _mm256_shuffle_epi8(qh, spread);
    // byte m tests bit m (even g) or bit 4 + m (odd g) of its copy
    let mask = _mm256_set1_epi32(if g.is_multiple_of(2) {
        0x0804_0201
    } else {
        0x8040_2010_u32 as i32
    });
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// # Safety
/// As [`q8_0`], for `super_blocks` Q4_K (`high_bits` false) or Q5_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_q5k(rows: &Rows, super_blocks: usize, high_bits: bool, out: Out, ahead: &mut Ahead) {
    let (size, qs_at) = if high_bits { (176, 48) } else { (144, 16) };
    for sb in 0..super_blocks {
        ahead.step();
        let at = sb * size;
        let t0 = sb * SUB_BLOCKS;
        let mut sc = [[0i16; 8]; SUB_BLOCKS];
        let mut m = [[0i16; 8]; SUB_BLOCKS];
        for (a, row) in rows.iter().enumerate() {
            // SAFETY: the 12 scale bytes of super-block sb.
            let packed = unsafe { std::slice::from_raw_parts(row.add(at + 4), 12) };
            for j in 0..SUB_BLOCKS {
                let (s, mm) = k_scale_min(packed, j);
                (sc[j][a], m[j][a]) = (s.into(), mm.into());
            }
        }
        // SAFETY (all): super-block sb of every row lies in the row; its blocks are the panel's.
        unsafe {
            let d = f16_lanes(rows, at);
            let dmin = _mm256_castsi256_ps(f16_lanes(rows, at + 2));
            let qh = if high_bits {
                transpose8(load32(rows, at + 16))
            } else {
                [_mm256_setzero_si256(); 8]
            };
            for j in 0..SUB_BLOCKS {
                let mut mins = [0i32; 8];
                for (v, &m) in mins.iter_mut().zip(&m[j]) {
                    *v = m.into();
                }
                let mins = _mm256_cvtepi32_ps(_mm256_loadu_si256(mins.as_ptr().cast()));
                // -(Dmin * m): the product is exact, the negation too
                let negative_min = _mm256_xor_ps(_mm256_mul_ps(dmin, mins), _mm256_set1_ps(-0.0));
                out.factor(t0 + j, 0, d);
                out.factor(t0 + j, 1, _mm256_castps_si256(negative_min));
                out.factor(t0 + j, 2, pairs(sc[j], sc[j]));
            }
            // sub-blocks 2c and 2c + 1: low and high nibbles of the same 32 bytes
            for c in 0..SUB_BLOCKS / 2 {
                let v = transpose8(load32(rows, at + qs_at + 32 * c));
                for (g, v) in v.into_iter().enumerate() {
                    for (j, low) in [(2 * c, low4(v)), (2 * c + 1, high4(v))] {
                        let value = if high_bits {
                            _mm256_or_si256(low, move_bits(qh[g], j, 4, 0x10))
                        } else {
                            low
                        };
                        out.value(t0 + j, g, value);
                    }
                }
            }
        }
    }
}

/// # Safety
/// As [`q8_0`], for `super_blocks` Q6_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k(rows: &Rows, super_blocks: usize, out: Out, ahead: &mut Ahead) {
    for sb in 0..super_blocks {
        ahead.step();
        let at = sb * 210;
        let t0 = sb * SUB_BLOCKS;
        // SAFETY (all): super-block sb of every row lies in the row; its blocks are the panel's.
        unsafe {
            let d = f16_lanes(rows, at + 208);
            for j in 0..SUB_BLOCKS {
                let mut lo = [0i16; 8];
                let mut hi = [0i16; 8];
                for (a, row) in rows.iter().enumerate() {
                    lo[a] = (*row.add(at + 192 + 2 * j) as i8).into();
                    hi[a] = (*row.add(at + 193 + 2 * j) as i8).into();
                }
                out.factor(t0 + j, 0, d);
                out.factor(t0 + j, 1, pairs(lo, lo));
                out.factor(t0 + j, 2, pairs(hi, hi));
                out.factor(t0 + j, 3, pairs(lo.map(|s| 32 * s), hi.map(|s| 32 * s)));
            }
            for half in 0..2 {
                let first = transpose8(load32(rows, at + 64 * half));
                let second = transpose8(load32(rows, at + 64 * half + 32));
                let qh = transpose8(load32(rows, at + 128 + 32 * half));
                for g in 0..GROUPS {
                    // block 4 half + j: low nibbles of ql[64 half + 32 (j % 2) ..], shifted by
                    // 4 (j / 2); high bits 2j, 2j + 1 of qh[32 half ..]
                    let lows = [
                        low4(first[g]),
                        low4(second[g]),
                        high4(first[g]),
                        high4(second[g]),
                    ];
                    for (j, low) in lows.into_iter().enumerate() {
                        let high = move_bits(qh[g], 2 * j, 4, 0x30);
                        out.value(t0 + 4 * half + j, g, _mm256_or_si256(low, high));
                    }
                }
            }
        }
    }
}
