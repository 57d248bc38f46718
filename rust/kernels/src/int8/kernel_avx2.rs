//! The int8 mode's AVX2 kernel: a panel of 8 weight rows (see [`super::panel_avx2`]) times a few
//! quantized input rows, over all of the row's blocks.
//!
//! Output element (input row `b`, weight row `a`) lives in lane `a` of accumulator `b`, so each
//! lane runs exactly the sequential chain of f32 operations of the module docs of
//! [`crate::int8`], block after block. The integer dot products are exact: `maddubs` multiplies
//! the unsigned weight values (or, for Q8_0, their magnitudes, with the activations' signs
//! flipped where the weights are negative) with 4 broadcast activation bytes; the 16-bit sums are
//! added only as many times as cannot overflow for the format's value range (8 for 4-bit
//! values, 4 for 5-bit, 2 for 6-bit, none for 8-bit), then widened to 32 bits by `madd` with the
//! integer scales; offsets (`- 8`, `- 16`, `- 32` per value) are taken off exactly through the
//! activation block's half sums.
//!
//! For [`Isa::Avx512Vnni`] (CPUs with AVX-512 VNNI and F/BW/VL) the kernel is also built with
//! `vpdpbusd`, which adds the same products straight into 32-bit sums; the integer scales
//! then multiply the sums. The integers are the same, so the bits are too.

use std::arch::x86_64::*;
use std::ops::Range;

use crate::cpu::Isa;
use crate::ggml_type::GgmlType;
use crate::quant_matrix::QuantMatrix;

use super::activations::{ActivationBlock, QuantizedRows};
use super::driver::{SharedOut, PANEL_ROWS};
use super::panel_avx2::{Panels, GROUPS};
use super::simd_avx2::{store_lanes, Q4K, Q4_0, Q5K, Q5_0, Q6K, Q8_0};

/// How many 4-value groups of format `f` may be summed in 16-bit lanes: a `maddubs` lane holds
/// two products of a value (< 2^bits) and an activation (|q| <= 127), and the sum of `run` such
/// lanes must stay within i16.
const fn run_len(f: u8) -> usize {
    match f {
        Q8_0 => 1,
        Q4_0 | Q4K => 8, // 8 * 2 * 15 * 127 = 30480
        Q5_0 | Q5K => 4, // 4 * 2 * 31 * 127 = 31496
        _ => 2,          // 2 * 2 * 63 * 127 = 32004
    }
}

/// Input rows per kernel call at most for format `f`: as many as keep the accumulators (and,
/// where the 16-bit sums are flushed more than once per block, the 32-bit sums) in registers.
const fn max_inputs(f: u8) -> usize {
    match f {
        Q4_0 | Q4K => 4,
        _ => 4,
    }
}

/// Multiplies the chunk `rows` of `w` with every input row: builds the chunk's panels during
/// the first input tile, then runs tile after tile of `tile` input rows over them. On
/// [`Isa::Avx512Vnni`] the integer sums come from `vpdpbusd` (see [`block_sums`]); on every
/// other path from the AVX2 instructions.
///
/// # Safety
/// The CPU must support `isa` (AVX2, FMA and F16C at least); `w` is of an integer type with
/// `w.cols() == x.k()`; `out` points to `x.rows() * w.rows()` values, whose columns `rows` no
/// other thread writes meanwhile.
pub(super) unsafe fn chunk_product(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    tile: usize,
    out: SharedOut,
    panels: &mut Panels,
    isa: Isa,
) {
    // SAFETY (both): forwarded; the VNNI build only where the CPU has its features.
    unsafe {
        if isa == Isa::Avx512Vnni {
            chunk_product_vnni(x, w, rows, tile, out, panels)
        } else {
            chunk_product_avx2(x, w, rows, tile, out, panels)
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
    tile: usize,
    out: SharedOut,
    panels: &mut Panels,
) {
    // SAFETY: forwarded.
    unsafe { chunk_body::<false>(x, w, rows, tile, out, panels) }
}

/// # Safety
/// As [`chunk_product`], on a CPU with AVX-512F/BW/VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn chunk_product_vnni(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    tile: usize,
    out: SharedOut,
    panels: &mut Panels,
) {
    // SAFETY: forwarded.
    unsafe { chunk_body::<true>(x, w, rows, tile, out, panels) }
}

// Everything below is inlined into the two entry points above (`VNNI`: the AVX-512 VNNI one), so
// it is compiled with their features.

/// # Safety
/// As [`chunk_product`]; the CPU has AVX-512 VNNI if `VNNI`.
#[inline(always)]
unsafe fn chunk_body<const VNNI: bool>(
    x: &QuantizedRows,
    w: &QuantMatrix,
    rows: Range<usize>,
    tile: usize,
    out: SharedOut,
    panels: &mut Panels,
) {
    let count = rows.len().div_ceil(PANEL_ROWS);
    panels.prepare(w, x.blocks(), count);
    let mut start = 0;
    while start < x.rows() {
        let end = (start + tile).min(x.rows());
        for p in 0..count {
            let first = rows.start + p * PANEL_ROWS;
            let target = Target {
                out,
                n: w.rows(),
                first,
                valid: (rows.end - first).min(PANEL_ROWS),
            };
            // SAFETY: the caller's contract; panel p is built before its first use.
            unsafe {
                if start == 0 {
                    panels.build(w, p, first);
                }
                panel_product::<VNNI>(w.ty(), panels, p, x, start..end, target);
            }
        }
        start = end;
    }
}

/// Where a panel's outputs go: columns `first .. first + valid` of each output row (`n` wide).
#[derive(Clone, Copy)]
struct Target {
    out: SharedOut,
    n: usize,
    first: usize,
    valid: usize,
}

/// # Safety
/// As [`chunk_body`]; panel `p` is built.
#[inline(always)]
unsafe fn panel_product<const VNNI: bool>(
    ty: GgmlType,
    panels: &Panels,
    p: usize,
    x: &QuantizedRows,
    inputs: Range<usize>,
    target: Target,
) {
    // SAFETY: forwarded.
    unsafe {
        match ty {
            GgmlType::Q8_0 => panel_rows::<Q8_0, VNNI>(panels, p, x, inputs, target),
            GgmlType::Q4_0 => panel_rows::<Q4_0, VNNI>(panels, p, x, inputs, target),
            GgmlType::Q5_0 => panel_rows::<Q5_0, VNNI>(panels, p, x, inputs, target),
            GgmlType::Q4K => panel_rows::<Q4K, VNNI>(panels, p, x, inputs, target),
            GgmlType::Q5K => panel_rows::<Q5K, VNNI>(panels, p, x, inputs, target),
            GgmlType::Q6K => panel_rows::<Q6K, VNNI>(panels, p, x, inputs, target),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {}
        }
    }
}

/// # Safety
/// As [`panel_product`].
#[inline(always)]
unsafe fn panel_rows<const F: u8, const VNNI: bool>(
    panels: &Panels,
    p: usize,
    x: &QuantizedRows,
    inputs: Range<usize>,
    target: Target,
) {
    let mut r = inputs.start;
    while r < inputs.end {
        let group = (inputs.end - r).min(max_inputs(F));
        // SAFETY: forwarded; rows r .. r + group are input rows.
        unsafe {
            match group {
                1 => input_group::<F, 1, VNNI>(panels, p, x, r, target),
                2 => input_group::<F, 2, VNNI>(panels, p, x, r, target),
                3 => input_group::<F, 3, VNNI>(panels, p, x, r, target),
                _ => input_group::<F, 4, VNNI>(panels, p, x, r, target),
            }
        }
        r += group;
    }
}

/// Input rows `first .. first + NX` times panel `p`, written to the target.
///
/// # Safety
/// As [`panel_product`]; `first + NX <= x.rows()`.
#[inline(always)]
unsafe fn input_group<const F: u8, const NX: usize, const VNNI: bool>(
    panels: &Panels,
    p: usize,
    x: &QuantizedRows,
    first: usize,
    target: Target,
) {
    let mut inputs = [std::ptr::null(); NX];
    for (b, input) in inputs.iter_mut().enumerate() {
        *input = x.row(first + b).as_ptr();
    }
    // SAFETY: the panel holds `blocks` blocks of values and factors; each input row holds
    // `blocks` activation blocks.
    let acc = unsafe {
        kernel::<F, NX, VNNI>(
            panels.values(p),
            panels.factors(p),
            panels.factors_per_block(),
            panels.blocks(),
            inputs,
        )
    };
    for (b, acc) in acc.into_iter().enumerate() {
        let dst = target
            .out
            .0
            .wrapping_add((first + b) * target.n + target.first);
        // SAFETY: output row first + b, columns first .. first + valid: ours (caller's contract).
        unsafe { store_lanes(dst, target.valid, acc) };
    }
}

/// Vector `i` after `p`.
///
/// # Safety
/// 32 readable bytes there.
#[inline(always)]
unsafe fn load(p: *const __m256i, i: usize) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe { _mm256_loadu_si256(p.add(i)) }
}

/// The 4 activation values `4g .. 4g + 4` of a block, in every 32-bit lane.
///
/// # Safety
/// `block` must point to an activation block; `g < 8`.
#[inline(always)]
unsafe fn broadcast_values(block: *const ActivationBlock, g: usize) -> __m256i {
    // SAFETY: the caller's contract; the values are the block's first 32 bytes.
    _mm256_set1_epi32(unsafe { block.cast::<i32>().add(g).read_unaligned() })
}

/// The exact integer sums of one activation block for `NX` input rows: lane `a` of result `b`
/// is `I` (Q8_0, Q4_0, Q5_0, Q6_K) or `S` (Q4_K, Q5_K) of weight row `a` and input `b`.
///
/// # Safety
/// As [`kernel`], for block `t` (`v` and `f` its value and factor vectors, `x[b]` the input
/// rows' block `t`).
#[inline(always)]
unsafe fn block_sums<const F: u8, const NX: usize, const VNNI: bool>(
    v: *const __m256i,
    f: *const __m256i,
    x: &[*const ActivationBlock; NX],
) -> [__m256i; NX] {
    let mut ints = if VNNI {
        // SAFETY: forwarded.
        unsafe { scaled_sums_vnni::<F, NX>(v, f, x) }
    } else {
        // SAFETY: forwarded.
        unsafe { scaled_sums::<F, NX>(v, f, x) }
    };
    // the offsets of the unsigned values, taken off exactly
    for (int, &input) in ints.iter_mut().zip(x) {
        // SAFETY: the input row's block t.
        let block = unsafe { &*input };
        let sum = || _mm256_set1_epi32(block.sum());
        *int = match F {
            Q4_0 => _mm256_sub_epi32(*int, _mm256_slli_epi32::<3>(sum())),
            Q5_0 => _mm256_sub_epi32(*int, _mm256_slli_epi32::<4>(sum())),
            Q6K => {
                let halves = _mm256_set1_epi32(block.packed_halves());
                // SAFETY: block t's factors.
                _mm256_sub_epi32(*int, _mm256_madd_epi16(halves, unsafe { load(f, 3) }))
            }
            _ => *int,
        };
    }
    ints
}

/// [`block_sums`] before the offsets, with the integer scales applied, from AVX2 instructions:
/// 16-bit `maddubs` sums, added as often as cannot overflow, widened by `madd` with the scales.
///
/// # Safety
/// As [`block_sums`].
#[inline(always)]
unsafe fn scaled_sums<const F: u8, const NX: usize>(
    v: *const __m256i,
    f: *const __m256i,
    x: &[*const ActivationBlock; NX],
) -> [__m256i; NX] {
    let run = run_len(F);
    let ones = _mm256_set1_epi16(1);
    // SAFETY (factor loads): block t's factors (contract).
    let (scale_lo, scale_hi) = match F {
        Q4K | Q5K => unsafe { (load(f, 2), load(f, 2)) },
        Q6K => unsafe { (load(f, 1), load(f, 2)) },
        _ => (ones, ones),
    };
    let mut ints = [_mm256_setzero_si256(); NX];
    for r in 0..GROUPS / run {
        let mut sums = [_mm256_setzero_si256(); NX];
        for step in 0..run {
            let g = r * run + step;
            // SAFETY: group g of the block.
            let w = unsafe { load(v, g) };
            let magnitude = if F == Q8_0 { _mm256_sign_epi8(w, w) } else { w };
            for (sum, &input) in sums.iter_mut().zip(x) {
                // SAFETY: the input row's block t.
                let xb = unsafe { broadcast_values(input, g) };
                let xs = if F == Q8_0 {
                    _mm256_sign_epi8(xb, w)
                } else {
                    xb
                };
                let product = _mm256_maddubs_epi16(magnitude, xs);
                *sum = if step == 0 {
                    product
                } else {
                    _mm256_add_epi16(*sum, product)
                };
            }
        }
        let scale = if r * run < GROUPS / 2 {
            scale_lo
        } else {
            scale_hi
        };
        for (int, sum) in ints.iter_mut().zip(sums) {
            let widened = _mm256_madd_epi16(sum, scale);
            *int = if r == 0 {
                widened
            } else {
                _mm256_add_epi32(*int, widened)
            };
        }
    }
    ints
}

/// [`scaled_sums`] from AVX-512 VNNI: `vpdpbusd` adds each group's products straight into
/// 32-bit sums (no 16-bit stage), one sum per half block for Q6_K's two scales; the integer
/// scales then multiply the sums. The same integers as [`scaled_sums`].
///
/// # Safety
/// As [`block_sums`]; the CPU has AVX-512 VNNI and VL.
#[inline(always)]
unsafe fn scaled_sums_vnni<const F: u8, const NX: usize>(
    v: *const __m256i,
    f: *const __m256i,
    x: &[*const ActivationBlock; NX],
) -> [__m256i; NX] {
    let mut lo = [_mm256_setzero_si256(); NX];
    let mut hi = [_mm256_setzero_si256(); NX];
    for g in 0..GROUPS {
        // SAFETY: group g of the block.
        let w = unsafe { load(v, g) };
        let magnitude = if F == Q8_0 { _mm256_sign_epi8(w, w) } else { w };
        // Q6_K's halves (columns 0..16 and 16..32) have scales of their own
        let sums = if F == Q6K && g >= GROUPS / 2 {
            &mut hi
        } else {
            &mut lo
        };
        for (sum, &input) in sums.iter_mut().zip(x) {
            // SAFETY: the input row's block t.
            let xb = unsafe { broadcast_values(input, g) };
            let xs = if F == Q8_0 {
                _mm256_sign_epi8(xb, w)
            } else {
                xb
            };
            // SAFETY: the caller's contract (VNNI).
            *sum = unsafe { _mm256_dpbusd_epi32(*sum, magnitude, xs) };
        }
    }
    // the scales as i32: the high i16 of each factor pair
    // SAFETY (factor loads): block t's factors (contract).
    match F {
        Q4K | Q5K => {
            let scale = _mm256_srai_epi32::<16>(unsafe { load(f, 2) });
            lo.map(|sum| _mm256_mullo_epi32(sum, scale))
        }
        Q6K => {
            let (scale_lo, scale_hi) = unsafe {
                (
                    _mm256_srai_epi32::<16>(load(f, 1)),
                    _mm256_srai_epi32::<16>(load(f, 2)),
                )
            };
            let mut ints = lo;
            for (int, sum) in ints.iter_mut().zip(hi) {
                *int = _mm256_add_epi32(
                    _mm256_mullo_epi32(*int, scale_lo),
                    _mm256_mullo_epi32(sum, scale_hi),
                );
            }
            ints
        }
        _ => lo,
    }
}

/// The panel (values, factors; `blocks` blocks) times `NX` input rows: lane `a` of result `b`
/// is output (input `b`, weight row `a`), computed as the module docs of [`crate::int8`] say.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the panel pointers address `blocks` blocks of a panel of
/// format `F`, and every input row `blocks` activation blocks.
#[inline(always)]
unsafe fn kernel<const F: u8, const NX: usize, const VNNI: bool>(
    values: *const __m256i,
    factors: *const __m256i,
    factors_per_block: usize,
    blocks: usize,
    mut x: [*const ActivationBlock; NX],
) -> [__m256; NX] {
    let mut acc = [_mm256_setzero_ps(); NX];
    let (mut v, mut f) = (values, factors);
    for _ in 0..blocks {
        // SAFETY: the current block of the panel and of every input row (contract).
        let ints = unsafe { block_sums::<F, NX, VNNI>(v, f, &x) };
        // SAFETY: the block's factors.
        let d = _mm256_castsi256_ps(unsafe { load(f, 0) });
        for ((acc, int), input) in acc.iter_mut().zip(ints).zip(&mut x) {
            // SAFETY: the input row's current block.
            let block = unsafe { &**input };
            let dx = _mm256_set1_ps(block.scale());
            *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(int), *acc);
            if F == Q4K || F == Q5K {
                // SAFETY: the block's factors: -(Dmin * m) per lane.
                let negative_min = _mm256_castsi256_ps(unsafe { load(f, 1) });
                *acc = _mm256_fmadd_ps(negative_min, _mm256_set1_ps(block.scaled_sum()), *acc);
            }
            *input = input.wrapping_add(1);
        }
        v = v.wrapping_add(GROUPS);
        f = f.wrapping_add(factors_per_block);
    }
    acc
}
