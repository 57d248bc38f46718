//! Input rows quantized to int8 per block of 32 values ([`QuantizedRows`] of
//! [`ActivationBlock`]s), by the rule of the int8 mode (see [`crate::int8`]): the scalar rule
//! lives here and is the reference the AVX2 quantizer matches bit for bit.

use rayon::prelude::*;

use crate::error::KernelError;

/// Values per activation block.
pub const ACTIVATION_BLOCK: usize = 32;
/// The largest quantized magnitude.
const QMAX: f32 = 127.0;
/// Blocks quantized per rayon task at least: below this the rows are quantized on one thread.
const MIN_PARALLEL_BLOCKS: usize = 1 << 10;

/// One quantized block of 32 input values and what the kernels need of it, in one record (so
/// that a kernel follows one pointer per input row).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
pub struct ActivationBlock {
    q: [i8; ACTIVATION_BLOCK],
    d: f32,
    /// `X_lo` (low 16 bits) and `X_hi` (high 16 bits) as two little-endian i16: the layout the
    /// AVX2 kernel broadcasts.
    halves: i32,
    sum: i32,
    scaled_sum: f32,
}

impl ActivationBlock {
    const ZERO: ActivationBlock = ActivationBlock {
        q: [0; ACTIVATION_BLOCK],
        d: 0.0,
        halves: 0,
        sum: 0,
        scaled_sum: 0.0,
    };

    /// A block of values `q` with scale `d`; the sums are derived from them.
    pub(crate) fn new(q: [i8; ACTIVATION_BLOCK], d: f32) -> Self {
        let half = |r: &[i8]| r.iter().map(|&v| i32::from(v)).sum::<i32>();
        let (lo, hi) = (half(&q[..16]), half(&q[16..]));
        // |X| <= 32 * 127: exact in f32, and `d * X` is one rounded product.
        let sum = lo + hi;
        ActivationBlock {
            q,
            d,
            halves: pack_halves(lo, hi),
            sum,
            scaled_sum: d * sum as f32,
        }
    }

    /// The quantized values `q_i`.
    pub fn values(&self) -> &[i8; ACTIVATION_BLOCK] {
        &self.q
    }

    /// The scale `d` (NaN for a block with a non-finite value).
    pub fn scale(&self) -> f32 {
        self.d
    }

    /// `(X_lo, X_hi)`: the sums of the first and the last 16 values.
    pub fn halves(&self) -> (i32, i32) {
        (i32::from(self.halves as i16), self.halves >> 16)
    }

    /// The half sums as packed (for the AVX2 kernel's broadcast).
    pub(crate) fn packed_halves(&self) -> i32 {
        self.halves
    }

    /// `X = Σ q_i`.
    pub fn sum(&self) -> i32 {
        self.sum
    }

    /// `d * X` (an f32 product): the factor of the K-quants' min term.
    pub fn scaled_sum(&self) -> f32 {
        self.scaled_sum
    }
}

/// `rows` input rows of `k` values (a multiple of 32), quantized block by block.
#[derive(Debug, Clone)]
pub struct QuantizedRows {
    k: usize,
    rows: usize,
    blocks: Vec<ActivationBlock>,
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

    /// The blocks of row `r`.
    pub fn row(&self, r: usize) -> &[ActivationBlock] {
        &self.blocks[r * self.blocks()..(r + 1) * self.blocks()]
    }
}

/// The half sums packed as two little-endian i16 in one i32.
fn pack_halves(lo: i32, hi: i32) -> i32 {
    // |X| <= 16 * 127 fits an i16: the truncating casts are exact.
    (i32::from(hi as i16) << 16) | i32::from(lo as i16 as u16)
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
    let mut blocks = vec![ActivationBlock::ZERO; x.len() / ACTIVATION_BLOCK];
    x.par_chunks(MIN_PARALLEL_BLOCKS * ACTIVATION_BLOCK)
        .zip(blocks.par_chunks_mut(MIN_PARALLEL_BLOCKS))
        .for_each(|(x, out)| quantize_blocks(x, out, simd));
    Ok(QuantizedRows {
        k,
        rows: x.len() / k,
        blocks,
    })
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

/// Quantizes whole blocks: `x` holds `out.len()` blocks of 32 values.
fn quantize_blocks(x: &[f32], out: &mut [ActivationBlock], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true on CPUs with AVX2 (the caller's contract); the slices hold
        // matching numbers of blocks.
        unsafe { super::activations_avx2::quantize_blocks(x, out) };
        return;
    }
    let _ = simd;
    for (x, out) in x.chunks_exact(ACTIVATION_BLOCK).zip(out) {
        *out = quantize_block(x);
    }
}

/// The scalar rule for one block of 32 values.
fn quantize_block(x: &[f32]) -> ActivationBlock {
    let amax_bits = x
        .iter()
        .map(|v| v.to_bits() & 0x7fff_ffff)
        .max()
        .unwrap_or(0);
    let mut q = [0i8; ACTIVATION_BLOCK];
    match BlockScale::from_amax_bits(amax_bits) {
        BlockScale::Zero { d } => ActivationBlock::new(q, d),
        BlockScale::Scaled { d, inv } => {
            for (q, &v) in q.iter_mut().zip(x) {
                // f32::round rounds half away from zero; the product is finite (|v| <= a and
                // 1/d is finite).
                *q = (v * inv).round().clamp(-QMAX, QMAX) as i8;
            }
            ActivationBlock::new(q, d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_trip() {
        for (lo, hi) in [(0, 0), (-2032, 2032), (2032, -2032), (-1, 1), (7, -9)] {
            let b = ActivationBlock {
                halves: pack_halves(lo, hi),
                ..ActivationBlock::ZERO
            };
            assert_eq!(b.halves(), (lo, hi));
        }
    }

    #[test]
    fn scalar_rule_on_known_blocks() {
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -63.5; // a tie: away from zero
        x[2] = 0.49;
        x[31] = -127.0;
        let b = quantize_block(&x);
        assert_eq!(b.scale(), 1.0);
        let q = b.values();
        assert_eq!((q[0], q[1], q[2], q[31]), (127, -64, 0, -127));
        assert_eq!(b.halves(), (127 - 64, -127));
        assert_eq!((b.sum(), b.scaled_sum()), (-64, -64.0));
        x[5] = f32::NAN;
        let b = quantize_block(&x);
        assert!(b.scale().is_nan() && b.scaled_sum().is_nan());
        assert!(b.values().iter().all(|&v| v == 0));
        let tiny = quantize_block(&[f32::from_bits(1); 32]);
        assert_eq!((tiny.scale(), tiny.sum()), (0.0, 0));
    }
}
