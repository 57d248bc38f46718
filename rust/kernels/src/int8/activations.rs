//! Input rows quantized to int8 per block of 32 values ([`QuantizedRows`]), by the rule of the
//! int8 mode (see [`crate::int8`]): the scalar rule lives here and is the reference the AVX2
//! quantizer matches bit for bit.

use rayon::prelude::*;

use crate::error::KernelError;

/// Values per activation block.
pub const ACTIVATION_BLOCK: usize = 32;
/// The largest quantized magnitude.
const QMAX: f32 = 127.0;
/// Values quantized per rayon task at least: below this the rows are quantized on one thread.
const MIN_PARALLEL_VALUES: usize = 1 << 15;

/// `rows` input rows of `k` values (a multiple of 32), quantized: row `r`, block `t` has the 32
/// values `q[(r * blocks + t) * 32 ..]`, the scale `d[r * blocks + t]` and the half sums
/// `halves[r * blocks + t]` (`X_lo` in the low 16 bits, `X_hi` in the high 16 bits, as two
/// little-endian i16: the layout the AVX2 kernel broadcasts).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedRows {
    k: usize,
    rows: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    halves: Vec<i32>,
}

impl QuantizedRows {
    /// Values per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Input rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.k / ACTIVATION_BLOCK
    }

    /// The quantized values of row `r` (`k` values).
    pub fn values(&self, r: usize) -> &[i8] {
        &self.q[r * self.k..(r + 1) * self.k]
    }

    /// The block scales of row `r`.
    pub fn scales(&self, r: usize) -> &[f32] {
        &self.d[r * self.blocks()..(r + 1) * self.blocks()]
    }

    /// The packed half sums of row `r`'s blocks.
    pub fn packed_halves(&self, r: usize) -> &[i32] {
        &self.halves[r * self.blocks()..(r + 1) * self.blocks()]
    }

    /// `(X_lo, X_hi)` of block `t` of row `r`.
    pub fn halves(&self, r: usize, t: usize) -> (i32, i32) {
        unpack_halves(self.packed_halves(r)[t])
    }
}

/// The half sums packed as two little-endian i16 in one i32.
pub(crate) fn pack_halves(lo: i32, hi: i32) -> i32 {
    // |X| <= 16 * 127 fits an i16: the truncating casts are exact.
    (i32::from(hi as i16) << 16) | i32::from(lo as i16 as u16)
}

fn unpack_halves(packed: i32) -> (i32, i32) {
    (i32::from(packed as i16), packed >> 16)
}

/// How one block is quantized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BlockScale {
    /// Every `q_i` is 0 and the block's scale is `d`: NaN for a non-finite block, 0 when
    /// `max |x_i| / 127` is zero or subnormal.
    Zero { d: f32 },
    /// `q_i = clamp(round(x_i * inv), -127, 127)` with `inv = 1 / d`.
    Scaled { d: f32, inv: f32 },
}

impl BlockScale {
    /// The scale of a block whose largest magnitude has the bits `amax_bits` (`max |x_i|` as
    /// f32 bits with the sign cleared: as integers they order like the magnitudes, and NaNs
    /// come above infinity).
    pub(crate) fn from_amax_bits(amax_bits: u32) -> Self {
        if amax_bits >= f32::INFINITY.to_bits() {
            return BlockScale::Zero { d: f32::NAN };
        }
        let d = f32::from_bits(amax_bits) / QMAX;
        if d < f32::MIN_POSITIVE {
            return BlockScale::Zero { d: 0.0 };
        }
        BlockScale::Scaled { d, inv: 1.0 / d }
    }
}

/// Quantizes `x` (rows of `k` values) by the int8 mode's rule; `simd` picks the AVX2 quantizer
/// (only when [`crate::simd_available`] is true). Errors when `k` is not a positive multiple of
/// 32 or `x` is not whole rows. Large inputs are quantized on rayon's pool (each block's result
/// depends on its own values only).
pub(crate) fn quantize(x: &[f32], k: usize, simd: bool) -> Result<QuantizedRows, KernelError> {
    if k == 0 {
        return Err(KernelError::EmptyInner);
    }
    if !k.is_multiple_of(ACTIVATION_BLOCK) {
        return Err(KernelError::PartialBlock {
            ty: "int8 activation",
            len: k,
            block_bytes: ACTIVATION_BLOCK,
        });
    }
    if !x.len().is_multiple_of(k) {
        return Err(KernelError::InputShape { len: x.len(), k });
    }
    let blocks = x.len() / ACTIVATION_BLOCK;
    let mut out = QuantizedRows {
        k,
        rows: x.len() / k,
        q: vec![0; x.len()],
        d: vec![0.0; blocks],
        halves: vec![0; blocks],
    };
    let per_task = (MIN_PARALLEL_VALUES / ACTIVATION_BLOCK).max(1);
    x.par_chunks(per_task * ACTIVATION_BLOCK)
        .zip(out.q.par_chunks_mut(per_task * ACTIVATION_BLOCK))
        .zip(out.d.par_chunks_mut(per_task))
        .zip(out.halves.par_chunks_mut(per_task))
        .for_each(|(((x, q), d), h)| quantize_blocks(x, q, d, h, simd));
    Ok(out)
}

/// Quantizes input rows of `k` values (a multiple of 32) by the int8 mode's rule (AVX2 where
/// available).
pub fn quantize_activations(x: &[f32], k: usize) -> Result<QuantizedRows, KernelError> {
    quantize(x, k, crate::cpu::simd_available())
}

/// [`quantize_activations`] on the portable path, whatever the CPU (the reference of the tests).
pub fn quantize_activations_portable(x: &[f32], k: usize) -> Result<QuantizedRows, KernelError> {
    quantize(x, k, false)
}

/// Quantizes whole blocks: `x` and `q` hold `d.len()` blocks of 32 values.
fn quantize_blocks(x: &[f32], q: &mut [i8], d: &mut [f32], halves: &mut [i32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true on CPUs with AVX2 (the caller's contract); the slices hold
        // matching numbers of blocks.
        unsafe { super::activations_avx2::quantize_blocks(x, q, d, halves) };
        return;
    }
    let _ = simd;
    let blocks = x
        .chunks_exact(ACTIVATION_BLOCK)
        .zip(q.chunks_exact_mut(ACTIVATION_BLOCK));
    for (((x, q), d), h) in blocks.zip(d.iter_mut()).zip(halves.iter_mut()) {
        (*d, *h) = quantize_block(x, q);
    }
}

/// The scalar rule for one block: writes its 32 values, returns its scale and packed halves.
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax_bits = x
        .iter()
        .map(|v| v.to_bits() & 0x7fff_ffff)
        .max()
        .unwrap_or(0);
    let (d, id) = match BlockScale::from_amax_bits(amax_bits) {
        BlockScale::Scaled { d, inv } => (d, inv),
        BlockScale::Zero { d } => {
            q.fill(0);
            return (d, 0);
        }
    };
    for (q, &v) in q.iter_mut().zip(x) {
        // f32::round rounds half away from zero; the product is finite (|v| <= a, 1/d finite).
        *q = (v * id).round().clamp(-QMAX, QMAX) as i8;
    }
    let half = |r: &[i8]| r.iter().map(|&v| i32::from(v)).sum::<i32>();
    (d, pack_halves(half(&q[..16]), half(&q[16..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_trip() {
        for (lo, hi) in [(0, 0), (-2032, 2032), (2032, -2032), (-1, 1), (7, -9)] {
            assert_eq!(unpack_halves(pack_halves(lo, hi)), (lo, hi));
        }
    }

    #[test]
    fn scalar_rule_on_known_blocks() {
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -63.5; // a tie: away from zero
        x[2] = 0.49;
        x[31] = -127.0;
        let mut q = [0i8; 32];
        let (d, h) = quantize_block(&x, &mut q);
        assert_eq!(d, 1.0);
        assert_eq!((q[0], q[1], q[2], q[31]), (127, -64, 0, -127));
        assert_eq!(unpack_halves(h), (127 - 64, -127));
        x[5] = f32::NAN;
        assert!(quantize_block(&x, &mut q).0.is_nan());
        assert!(q.iter().all(|&v| v == 0));
        let tiny = [f32::from_bits(1); 32];
        assert_eq!(quantize_block(&tiny, &mut q), (0.0, 0));
    }
}
