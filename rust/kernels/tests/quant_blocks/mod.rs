//! Random test data for the quantized kernels: valid GGUF blocks of every supported type (finite
//! f16 scales, arbitrary quant bits), f32 inputs, and bit-level comparison helpers.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use hierdraft_kernels::{dequantize_row, GgmlType, QuantMatrix};

/// A xorshift generator: deterministic data from a proptest seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-0.5, 0.5).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// A finite f16 bit pattern (normal or subnormal, either sign): exponent never all ones.
    pub fn finite_f16(&mut self) -> u16 {
        let bits = self.next() as u16;
        if bits & 0x7c00 == 0x7c00 {
            bits & 0xbfff
        } else {
            bits
        }
    }

    /// A finite f16 bit pattern of moderate size (|v| in [2^-9, 2^-1)) for products.
    pub fn moderate_f16(&mut self) -> u16 {
        let bits = self.next() as u16;
        (bits & 0x83ff) | (((bits >> 10) % 8 + 6) << 10)
    }
}

/// Byte offsets of the f16 scales inside one block of `ty` (for the float types: the value).
pub fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::F32 => &[],
        GgmlType::F16 | GgmlType::BF16 => &[0],
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
    }
}

/// `blocks` random valid blocks of `ty`. `moderate` keeps scales (and float values) in a range
/// where products with inputs of magnitude <= 0.5 stay far from overflow.
pub fn random_blocks(ty: GgmlType, blocks: usize, moderate: bool, rng: &mut Rng) -> Vec<u8> {
    let size = ty.block_bytes();
    let mut data = Vec::with_capacity(blocks * size);
    for _ in 0..blocks {
        let start = data.len();
        if ty == GgmlType::F32 {
            let v = rng.unit() * 8.0;
            data.extend_from_slice(&v.to_le_bytes());
            continue;
        }
        data.extend((0..size).map(|_| rng.next() as u8));
        for &at in scale_offsets(ty) {
            let bits = if ty == GgmlType::BF16 {
                // the upper half of an f32 in [-4, 4): finite
                ((rng.unit() * 8.0).to_bits() >> 16) as u16
            } else if moderate {
                rng.moderate_f16()
            } else {
                rng.finite_f16()
            };
            data[start + at..start + at + 2].copy_from_slice(&bits.to_le_bytes());
        }
    }
    data
}

/// A random `rows x cols` matrix of `ty` (cols a whole number of blocks).
pub fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> QuantMatrix {
    let blocks = rows * cols / ty.block_len();
    QuantMatrix::from_vec(ty, rows, cols, random_blocks(ty, blocks, true, rng)).unwrap()
}

/// `len` inputs in [-0.5, 0.5).
pub fn inputs(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| rng.unit()).collect()
}

/// The matrix, dequantized (the public, default path).
pub fn dequantized(m: &QuantMatrix) -> Vec<f32> {
    let mut out = vec![f32::NAN; m.rows() * m.cols()];
    for r in 0..m.rows() {
        dequantize_row(m.ty(), m.row(r), &mut out[r * m.cols()..(r + 1) * m.cols()]).unwrap();
    }
    out
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Column counts valid for `ty`: whole blocks, and for the float types any width (tails too).
pub fn cols_for(ty: GgmlType, units: usize, tail: usize) -> usize {
    if ty.block_len() == 1 {
        units * 8 + tail
    } else {
        units.div_ceil(ty.block_len() / 8).max(1) * ty.block_len()
    }
}
