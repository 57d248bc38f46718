//! Vector helpers shared by the int8 mode's AVX2 code (the panel builder and the direct
//! kernel): software prefetch of the weight rows coming next, the f16 scales of 8 weight rows as
//! f32 lanes, and nibble and bit extraction from packed bytes.

use std::arch::x86_64::*;

use super::driver::PANEL_ROWS;

/// The integer formats, as const parameters of the kernels.
pub(crate) const Q8_0: u8 = 0;
pub(crate) const Q4_0: u8 = 1;
pub(crate) const Q5_0: u8 = 2;
pub(crate) const Q4K: u8 = 3;
pub(crate) const Q5K: u8 = 4;
pub(crate) const Q6K: u8 = 5;

/// Prefetches a byte range a slice at a time: one call of [`Ahead::step`] per unit of work
/// (a block or a super-block of the rows being read) covers the range over `units` calls.
pub(crate) struct Ahead {
    next: *const u8,
    end: *const u8,
    per_step: usize,
}

impl Ahead {
    const LINE: usize = 64;

    pub(crate) fn new(bytes: &[u8], units: usize) -> Self {
        let lines = bytes.len().div_ceil(Self::LINE);
        Ahead {
            next: bytes.as_ptr(),
            end: bytes.as_ptr_range().end,
            per_step: lines.div_ceil(units.max(1)) * Self::LINE,
        }
    }

    #[inline(always)]
    pub(crate) fn step(&mut self) {
        let stop = self.next.wrapping_add(self.per_step).min(self.end);
        while self.next < stop {
            // SAFETY: a prefetch is a hint that never faults; the address is inside the range.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.next.cast()) };
            self.next = self.next.wrapping_add(Self::LINE);
        }
    }
}

/// A zero vector outside any target-feature context (for `Vec::resize`).
pub(crate) fn zero_vector() -> __m256i {
    // SAFETY: __m256i is plain bits; all-zero bits are a valid value.
    unsafe { std::mem::zeroed() }
}

/// One pointer per weight row of a group of 8 (a panel, or the direct kernel's group).
pub(crate) type Rows = [*const u8; PANEL_ROWS];

/// The f16 at byte `at` of every row, as 8 f32 lanes (exact conversions).
///
/// # Safety
/// Each row must have 2 readable bytes at `at`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_lanes(rows: &Rows, at: usize) -> __m256i {
    let mut bits = [0u16; 8];
    for (b, row) in bits.iter_mut().zip(rows) {
        // SAFETY: the caller's contract.
        *b = unsafe { row.add(at).cast::<u16>().read_unaligned() };
    }
    // SAFETY: 16 readable bytes.
    let h = unsafe { _mm_loadu_si128(bits.as_ptr().cast()) };
    _mm256_castps_si256(_mm256_cvtph_ps(h))
}

/// Low nibbles.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn low4(v: __m256i) -> __m256i {
    _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
}

/// High nibbles, moved down.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn high4(v: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16::<4>(v), _mm256_set1_epi8(0x0f))
}

/// Bit `from` of every byte of `v` moved to bit `to` (all other bits cleared); `from` and
/// `to` in 0..8, `mask` the bits wanted at the destination. 16-bit shifts are enough: the bits
/// kept never cross a byte.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn move_bits(v: __m256i, from: usize, to: usize, mask: i8) -> __m256i {
    let moved = if from >= to {
        _mm256_srl_epi16(v, _mm_cvtsi32_si128((from - to) as i32))
    } else {
        _mm256_sll_epi16(v, _mm_cvtsi32_si128((to - from) as i32))
    };
    _mm256_and_si256(moved, _mm256_set1_epi8(mask))
}

/// Writes the first `valid` lanes of `v` (all 8 when `valid` is 8) to `dst`.
///
/// # Safety
/// `dst` must have `valid` (at most 8) writable values.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn store_lanes(dst: *mut f32, valid: usize, v: __m256) {
    // SAFETY (both): the caller's contract.
    unsafe {
        if valid == PANEL_ROWS {
            _mm256_storeu_ps(dst, v);
        } else {
            let mut lanes = [0f32; PANEL_ROWS];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, valid);
        }
    }
}
