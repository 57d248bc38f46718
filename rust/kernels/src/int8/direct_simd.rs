//! The int8 mode's x86 kernel for one to four input rows (decoding steps, small trees and the
//! first rows of a tree step's LM head): it reads each group of 8 weight rows straight from
//! their GGUF blocks and computes with them at once, instead of first building the 8-row panels
//! of [`super::panel_avx2`]. A panel is a transposed copy that pays for itself only when many
//! input rows use it; for one row, building it is most of the work.
//!
//! Per activation block and weight row, the exact integer dot products come from `maddubs`
//! (unsigned weight values, or for Q8_0 their magnitudes with the activations' signs flipped
//! where the weights are negative) and `madd` with ones: eight 32-bit partial sums, each of 4
//! adjacent columns. Horizontal adds then gather the partials of the group's 8 rows into one
//! vector, lane `a` for row `a`, and each lane runs the sequential f32 chain of the module docs
//! of [`crate::int8`], block after block. The integers are exact whatever the order they are
//! summed in, so this kernel gives the panels' bits.
//!
//! The kernel is compiled three times: for AVX2 + FMA + F16C; with AVX-512F/BW/VL on top
//! ([`Isa::Avx512`]), where Q5_0's fifth bits are added under a byte mask taken straight from
//! the block's 32 high bits (one instruction instead of a shuffle, a compare and two masks) and
//! the compiler has 32 vector registers; and with AVX-512 VNNI as well ([`Isa::Avx512Vnni`]),
//! where one `vpdpbusd` replaces each `maddubs` + `madd` pair (the same byte products, added
//! into the same 32-bit sums). All three run the same integer sums and the same f32 chain.

use std::arch::x86_64::*;
use std::ops::Range;

use crate::cpu::Isa;
use crate::ggml_type::GgmlType;
use crate::quant_matrix::QuantMatrix;

use super::activations::{ActivationBlock, QuantizedRows};
use super::driver::{SharedOut, PANEL_ROWS};
use super::simd_avx2::{
    f16_lanes, high4, low4, move_bits, store_lanes, Ahead, Rows, Q4K, Q4_0, Q5K, Q5_0, Q6K, Q8_0,
};
use super::weights::{k_scale_min, SUB_BLOCKS};

/// Input rows this kernel takes at most; more go through the panels, whose build is then shared
/// by all of them. At 3 rows the direct kernel was the faster in the default model's forward, at
/// 4 rows the two were even for the body and the direct kernel was much the faster for the LM
/// head (see the README's int8 notes).
pub(crate) const MAX_DIRECT_INPUTS: usize = 4;

/// Multiplies weight rows `rows` of `w` with every input row (at most [`MAX_DIRECT_INPUTS`]) on
/// `isa` (AVX-512 VNNI, AVX-512 or AVX2).
///
/// # Safety
/// The CPU must support `isa` (AVX2, FMA and F16C at least); `w` is of an integer type with
/// `w.cols() == x.k()`; `out` points to `x.rows() * w.rows()` values, whose columns `rows` no
/// other thread writes meanwhile; `x.rows()` is 1 to [`MAX_DIRECT_INPUTS`].
pub(super) unsafe fn chunk_product(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    out: SharedOut,
    isa: Isa,
) {
    // SAFETY (all): forwarded; the CPU has the path's features.
    unsafe {
        match isa {
            Isa::Avx512Vnni => chunk_product_vnni(x, w, rows, out),
            Isa::Avx512 => chunk_product_avx512(x, w, rows, out),
            _ => chunk_product_avx2(x, w, rows, out),
        }
    }
}

/// # Safety
/// As [`chunk_product`], on an AVX2 + FMA + F16C CPU.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_product_avx2(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    out: SharedOut,
) {
    // SAFETY: forwarded.
    unsafe { formats::<false, false>(x, w, rows, out) }
}

/// # Safety
/// As [`chunk_product`], on a CPU with AVX-512F, BW and VL as well.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn chunk_product_avx512(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    out: SharedOut,
) {
    // SAFETY: forwarded.
    unsafe { formats::<true, false>(x, w, rows, out) }
}

/// # Safety
/// As [`chunk_product`], on a CPU with AVX-512F/BW/VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn chunk_product_vnni(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    out: SharedOut,
) {
    // SAFETY: forwarded.
    unsafe { formats::<true, true>(x, w, rows, out) }
}

// Everything below is inlined into the three entry points above (`WIDE`: the AVX-512 ones,
// `VNNI`: the one with AVX-512 VNNI, always `WIDE` too), so it is compiled with their features.

/// # Safety
/// As [`chunk_product`]; the CPU has AVX-512F/BW/VL if `WIDE`, and AVX-512 VNNI if `VNNI`.
#[inline(always)]
unsafe fn formats<const WIDE: bool, const VNNI: bool>(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    out: SharedOut,
) {
    // SAFETY (all): forwarded.
    unsafe {
        match w.ty() {
            GgmlType::Q8_0 => chunk_inputs::<Q8_0, WIDE, VNNI>(x, w, rows, out),
            GgmlType::Q4_0 => chunk_inputs::<Q4_0, WIDE, VNNI>(x, w, rows, out),
            GgmlType::Q5_0 => chunk_inputs::<Q5_0, WIDE, VNNI>(x, w, rows, out),
            GgmlType::Q4K => chunk_inputs::<Q4K, WIDE, VNNI>(x, w, rows, out),
            GgmlType::Q5K => chunk_inputs::<Q5K, WIDE, VNNI>(x, w, rows, out),
            GgmlType::Q6K => chunk_inputs::<Q6K, WIDE, VNNI>(x, w, rows, out),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
        }
    }
}

/// # Safety
/// As [`formats`], for weights of format `F`.
#[inline(always)]
unsafe fn chunk_inputs<const F: u8, const WIDE: bool, const VNNI: bool>(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    out: SharedOut,
) {
    // SAFETY (all): forwarded.
    unsafe {
        match x.rows() {
            1 => chunk::<F, 1, WIDE, VNNI>(x, w, rows, out),
            2 => chunk::<F, 2, WIDE, VNNI>(x, w, rows, out),
            3 => chunk::<F, 3, WIDE, VNNI>(x, w, rows, out),
            _ => chunk::<F, 4, WIDE, VNNI>(x, w, rows, out),
        }
    }
}

/// # Safety
/// As [`formats`], with `x.rows() == NX`.
#[inline(always)]
unsafe fn chunk<const F: u8, const NX: usize, const WIDE: bool, const VNNI: bool>(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    out: SharedOut,
) {
    let n = w.rows();
    let units = match F {
        Q4K | Q5K | Q6K => x.blocks() / SUB_BLOCKS,
        _ => x.blocks(),
    };
    let mut inputs = [std::ptr::null(); NX];
    for (b, input) in inputs.iter_mut().enumerate() {
        *input = x.row(b).as_ptr();
    }
    for first in rows.clone().step_by(PANEL_ROWS) {
        let valid = (rows.end - first).min(PANEL_ROWS);
        // rows past the end of the chunk repeat its first row (their outputs are dropped)
        let mut group: Rows = [w.row(first).as_ptr(); PANEL_ROWS];
        for (a, row) in group.iter_mut().enumerate().take(valid) {
            *row = w.row(first + a).as_ptr();
        }
        // the next group's rows (contiguous bytes) are fetched while this one is computed
        let next = (first + PANEL_ROWS).min(n)..(first + 2 * PANEL_ROWS).min(n);
        let mut ahead = Ahead::new(
            &w.data()[next.start * w.row_bytes()..next.end * w.row_bytes()],
            units,
        );
        // SAFETY: every group row addresses a whole weight row of `x.blocks()` activation
        // blocks, as does every input row.
        let acc = unsafe {
            match F {
                Q4K | Q5K => k_group::<F, NX, VNNI>(&group, units, inputs, &mut ahead),
                Q6K => q6k_group::<NX, VNNI>(&group, units, inputs, &mut ahead),
                _ => simple_group::<F, NX, WIDE, VNNI>(&group, units, inputs, &mut ahead),
            }
        };
        for (b, acc) in acc.into_iter().enumerate() {
            let dst = out.0.wrapping_add(b * n + first);
            // SAFETY: output row b, columns first .. first + valid: ours (caller's contract).
            unsafe { store_lanes(dst, valid, acc) };
        }
    }
}

/// The 32 quantized values of an activation block.
///
/// # Safety
/// `block` must point to an activation block.
#[inline(always)]
unsafe fn activation_values(block: *const ActivationBlock) -> __m256i {
    // SAFETY: the values are the block's first 32 bytes.
    unsafe { _mm256_loadu_si256(block.cast()) }
}

/// Eight 32-bit partial sums of `v · x` (4 adjacent columns each): `v` holds unsigned values
/// below 64, or for Q8_0 the signed weights. The byte products are multiplied as unsigned times
/// signed: for Q8_0 the weights' magnitudes (at most 128) times the activations with their signs
/// flipped where the weights are negative. A pair of them is at most 2 * 128 * 127 in
/// magnitude, so `maddubs`'s 16-bit sums never saturate and both ways give the exact sums.
///
/// # Safety
/// The CPU has AVX2, and AVX-512 VNNI and VL if `VNNI`.
#[inline(always)]
unsafe fn partial_dot<const F: u8, const VNNI: bool>(v: __m256i, x: __m256i) -> __m256i {
    // SAFETY (all): the caller's contract.
    unsafe {
        let (magnitudes, signed) = if F == Q8_0 {
            (_mm256_sign_epi8(v, v), _mm256_sign_epi8(x, v))
        } else {
            (v, x)
        };
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), magnitudes, signed)
        } else {
            let product = _mm256_maddubs_epi16(magnitudes, signed);
            _mm256_madd_epi16(product, _mm256_set1_epi16(1))
        }
    }
}

/// The partial sums of 8 rows gathered by halves: lane `a` of the first result is the sum of
/// row `a`'s first four lanes (columns 0..16), of the second its last four (columns 16..32).
#[target_feature(enable = "avx2,fma,f16c")]
fn gather_halves(p: &[__m256i; PANEL_ROWS]) -> (__m256i, __m256i) {
    let t0 = _mm256_hadd_epi32(p[0], p[1]);
    let t1 = _mm256_hadd_epi32(p[2], p[3]);
    let t2 = _mm256_hadd_epi32(p[4], p[5]);
    let t3 = _mm256_hadd_epi32(p[6], p[7]);
    // rows 0..4 (u0) and 4..8 (u1): first halves in the low 128 bits, last in the high
    let u0 = _mm256_hadd_epi32(t0, t1);
    let u1 = _mm256_hadd_epi32(t2, t3);
    (
        _mm256_permute2x128_si256::<0x20>(u0, u1),
        _mm256_permute2x128_si256::<0x31>(u0, u1),
    )
}

/// Lane `a` = the sum of all 8 lanes of `p[a]`.
#[target_feature(enable = "avx2,fma,f16c")]
fn gather(p: &[__m256i; PANEL_ROWS]) -> __m256i {
    let (lo, hi) = gather_halves(p);
    _mm256_add_epi32(lo, hi)
}

/// `acc = fma(D * d_x, I, acc)`: the chain step every format makes once per block.
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_step(acc: __m256, d: __m256, block: &ActivationBlock, int: __m256i) -> __m256 {
    let factor = _mm256_mul_ps(d, _mm256_set1_ps(block.scale()));
    _mm256_fmadd_ps(factor, _mm256_cvtepi32_ps(int), acc)
}

/// The 32 values of a Q4_0 / Q5_0 block's 16 nibble bytes: low nibbles are values 0..16, high
/// nibbles 16..32.
///
/// # Safety
/// 16 readable bytes at `p`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibble_values(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    let bytes = unsafe { _mm_loadu_si128(p.cast()) };
    let mask = _mm_set1_epi8(0x0f);
    let low = _mm_and_si128(bytes, mask);
    let high = _mm_and_si128(_mm_srli_epi16::<4>(bytes), mask);
    _mm256_set_m128i(high, low)
}

/// Byte `i` = 16 where bit `i` of `bits` is set, else 0 (Q5_0's fifth bits).
#[target_feature(enable = "avx2,fma,f16c")]
fn fifth_bits(bits: u32) -> __m256i {
    let copies = _mm256_set1_epi32(bits as i32);
    // byte i takes byte i / 8 of the 32 bits (the same 4 bytes are in both 128-bit halves)
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bytes = _mm256_shuffle_epi8(copies, spread);
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, select), select);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The 32 values of weight block `j` (of 32 values) of a row's block or super-block at `block`:
/// unsigned values below 64, or for Q8_0 the signed weights. For the simple formats `j` is 0.
///
/// # Safety
/// `block` points to a whole block (super-block) of format `F`; `j <` [`SUB_BLOCKS`].
#[inline(always)]
unsafe fn weight_values<const F: u8, const WIDE: bool>(block: *const u8, j: usize) -> __m256i {
    // SAFETY (every arm): the bytes read lie inside the block (the caller's contract).
    unsafe {
        match F {
            Q8_0 => _mm256_loadu_si256(block.add(2).cast()),
            Q4_0 => nibble_values(block.add(2)),
            Q5_0 => {
                let low = nibble_values(block.add(6));
                let high = block.add(2).cast::<u32>().read_unaligned();
                if WIDE {
                    // low < 16: adding 16 where the bit is set is or-ing it in
                    _mm256_mask_add_epi8(low, high, low, _mm256_set1_epi8(0x10))
                } else {
                    _mm256_or_si256(low, fifth_bits(high))
                }
            }
            Q4K | Q5K => {
                // blocks 2c and 2c + 1 are the low and high nibbles of the same 32 bytes;
                // Q5_K's fifth bits are bit j of 32 bytes
                let qs_at = if F == Q5K { 48 } else { 16 };
                let packed = _mm256_loadu_si256(block.add(qs_at + 32 * (j / 2)).cast());
                let low = if j.is_multiple_of(2) {
                    low4(packed)
                } else {
                    high4(packed)
                };
                if F == Q5K {
                    let high = _mm256_loadu_si256(block.add(16).cast());
                    _mm256_or_si256(low, move_bits(high, j, 4, 0x10))
                } else {
                    low
                }
            }
            _ => {
                // Q6_K: low 4 bits from ql[64 (j / 4) + 32 (j % 2) ..], shifted by 4 ((j % 4) /
                // 2); high 2 bits from bits 2 (j % 4) of qh[32 (j / 4) ..]
                let (half, quarter) = (j / 4, j % 4);
                let ql = _mm256_loadu_si256(block.add(64 * half + 32 * (quarter % 2)).cast());
                let low = if quarter < 2 { low4(ql) } else { high4(ql) };
                let qh = _mm256_loadu_si256(block.add(128 + 32 * half).cast());
                _mm256_or_si256(low, move_bits(qh, 2 * quarter, 4, 0x30))
            }
        }
    }
}

/// For each input row, the partial sums ([`partial_dot`]) of the group's 8 weight rows, block
/// `j` of their block (super-block) at byte `at`, with the input row's current block: lane
/// vector `a` for weight row `a`.
///
/// # Safety
/// As [`weight_values`] for every row's block at `at`; every input points to an activation block;
/// the CPU has AVX-512 VNNI and VL if `VNNI`.
#[inline(always)]
unsafe fn block_partials<const F: u8, const NX: usize, const WIDE: bool, const VNNI: bool>(
    rows: &Rows,
    at: usize,
    j: usize,
    x: &[*const ActivationBlock; NX],
) -> [[__m256i; PANEL_ROWS]; NX] {
    let mut xv = [_mm256_setzero_si256(); NX];
    for (v, &input) in xv.iter_mut().zip(x) {
        // SAFETY: the input row's current block.
        *v = unsafe { activation_values(input) };
    }
    let mut parts = [[_mm256_setzero_si256(); PANEL_ROWS]; NX];
    for (a, &row) in rows.iter().enumerate() {
        // SAFETY: the row's block at `at` (the caller's contract).
        let v = unsafe { weight_values::<F, WIDE>(row.add(at), j) };
        for (part, &xv) in parts.iter_mut().zip(&xv) {
            // SAFETY: the caller's contract (VNNI).
            part[a] = unsafe { partial_dot::<F, VNNI>(v, xv) };
        }
    }
    parts
}

/// Q8_0, Q4_0 and Q5_0: one scale per block of 32.
///
/// # Safety
/// Every row addresses `blocks` blocks of format `F`; every input row `blocks` activation blocks;
/// the CPU has AVX-512 VNNI and VL if `VNNI`.
#[inline(always)]
unsafe fn simple_group<const F: u8, const NX: usize, const WIDE: bool, const VNNI: bool>(
    rows: &Rows,
    blocks: usize,
    mut x: [*const ActivationBlock; NX],
    ahead: &mut Ahead,
) -> [__m256; NX] {
    let size = match F {
        Q8_0 => 34,
        Q4_0 => 18,
        _ => 22,
    };
    let mut acc = [_mm256_setzero_ps(); NX];
    for t in 0..blocks {
        ahead.step();
        let at = t * size;
        // SAFETY: block t of every row; the input rows' block t.
        let parts = unsafe { block_partials::<F, NX, WIDE, VNNI>(rows, at, 0, &x) };
        // SAFETY: the scales of block t.
        let d = _mm256_castsi256_ps(unsafe { f16_lanes(rows, at) });
        for ((acc, part), input) in acc.iter_mut().zip(&parts).zip(&mut x) {
            // SAFETY: the input row's block t.
            let block = unsafe { &**input };
            let sum = gather(part);
            // the unsigned values' offsets (8 or 16 per value), taken off exactly
            let int = match F {
                Q4_0 => _mm256_sub_epi32(sum, _mm256_set1_epi32(8 * block.sum())),
                Q5_0 => _mm256_sub_epi32(sum, _mm256_set1_epi32(16 * block.sum())),
                _ => sum,
            };
            *acc = scale_step(*acc, d, block, int);
            *input = input.wrapping_add(1);
        }
    }
    acc
}

/// Q4_K and Q5_K: super-blocks of 256, a 6-bit scale and min per 32 values.
///
/// # Safety
/// As [`simple_group`], with `super_blocks` super-blocks per row.
#[inline(always)]
unsafe fn k_group<const F: u8, const NX: usize, const VNNI: bool>(
    rows: &Rows,
    super_blocks: usize,
    mut x: [*const ActivationBlock; NX],
    ahead: &mut Ahead,
) -> [__m256; NX] {
    let size = if F == Q5K { 176 } else { 144 };
    let mut acc = [_mm256_setzero_ps(); NX];
    for sb in 0..super_blocks {
        ahead.step();
        let at = sb * size;
        let mut sc = [[0i32; PANEL_ROWS]; SUB_BLOCKS];
        let mut m = [[0f32; PANEL_ROWS]; SUB_BLOCKS];
        for (a, row) in rows.iter().enumerate() {
            // SAFETY: the 12 scale bytes of super-block sb.
            let packed = unsafe { std::slice::from_raw_parts(row.add(at + 4), 12) };
            for j in 0..SUB_BLOCKS {
                let (s, mm) = k_scale_min(packed, j);
                (sc[j][a], m[j][a]) = (s.into(), mm.into());
            }
        }
        // SAFETY (both): the factors of super-block sb.
        let d = _mm256_castsi256_ps(unsafe { f16_lanes(rows, at) });
        let dmin = _mm256_castsi256_ps(unsafe { f16_lanes(rows, at + 2) });
        for j in 0..SUB_BLOCKS {
            // SAFETY: super-block sb of every row; the input rows' current block.
            let parts = unsafe { block_partials::<F, NX, false, VNNI>(rows, at, j, &x) };
            // SAFETY (both): 8 readable values each.
            let scale = unsafe { _mm256_loadu_si256(sc[j].as_ptr().cast()) };
            let mins = unsafe { _mm256_loadu_ps(m[j].as_ptr()) };
            // -(Dmin * m): the product is exact, the negation too
            let negative_min = _mm256_xor_ps(_mm256_mul_ps(dmin, mins), _mm256_set1_ps(-0.0));
            for ((acc, part), input) in acc.iter_mut().zip(&parts).zip(&mut x) {
                // SAFETY: the input row's current block.
                let block = unsafe { &**input };
                let int = _mm256_mullo_epi32(gather(part), scale);
                *acc = scale_step(*acc, d, block, int);
                *acc = _mm256_fmadd_ps(negative_min, _mm256_set1_ps(block.scaled_sum()), *acc);
                *input = input.wrapping_add(1);
            }
        }
    }
    acc
}

/// Q6_K: super-blocks of 256, an 8-bit scale per 16 values.
///
/// # Safety
/// As [`simple_group`], with `super_blocks` super-blocks per row.
#[inline(always)]
unsafe fn q6k_group<const NX: usize, const VNNI: bool>(
    rows: &Rows,
    super_blocks: usize,
    mut x: [*const ActivationBlock; NX],
    ahead: &mut Ahead,
) -> [__m256; NX] {
    let mut acc = [_mm256_setzero_ps(); NX];
    for sb in 0..super_blocks {
        ahead.step();
        let at = sb * 210;
        // SAFETY: the scale of super-block sb.
        let d = _mm256_castsi256_ps(unsafe { f16_lanes(rows, at + 208) });
        for j in 0..SUB_BLOCKS {
            let mut scale_lo = [0i32; PANEL_ROWS];
            let mut scale_hi = [0i32; PANEL_ROWS];
            for (a, &row) in rows.iter().enumerate() {
                // SAFETY: the two scales of block j in super-block sb of the row.
                unsafe {
                    scale_lo[a] = (*row.add(at + 192 + 2 * j) as i8).into();
                    scale_hi[a] = (*row.add(at + 193 + 2 * j) as i8).into();
                }
            }
            // SAFETY: super-block sb of every row; the input rows' current block.
            let parts = unsafe { block_partials::<Q6K, NX, false, VNNI>(rows, at, j, &x) };
            // SAFETY (both): 8 readable values each.
            let scale_lo = unsafe { _mm256_loadu_si256(scale_lo.as_ptr().cast()) };
            let scale_hi = unsafe { _mm256_loadu_si256(scale_hi.as_ptr().cast()) };
            for ((acc, part), input) in acc.iter_mut().zip(&parts).zip(&mut x) {
                // SAFETY: the input row's current block.
                let block = unsafe { &**input };
                let (lo, hi) = gather_halves(part);
                let (x_lo, x_hi) = block.halves();
                // the offset of 32 per value, taken off exactly through the half sums
                let offset = _mm256_add_epi32(
                    _mm256_mullo_epi32(scale_lo, _mm256_set1_epi32(32 * x_lo)),
                    _mm256_mullo_epi32(scale_hi, _mm256_set1_epi32(32 * x_hi)),
                );
                let int = _mm256_sub_epi32(
                    _mm256_add_epi32(
                        _mm256_mullo_epi32(lo, scale_lo),
                        _mm256_mullo_epi32(hi, scale_hi),
                    ),
                    offset,
                );
                *acc = scale_step(*acc, d, block, int);
                *input = input.wrapping_add(1);
            }
        }
    }
    acc
}
