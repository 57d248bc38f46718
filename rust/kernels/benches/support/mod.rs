//! Inputs shared by the kernels' criterion benches: the default model's matrix shapes, random
//! valid GGUF-block matrices and deterministic input rows.

// Each bench compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use hierdraft_kernels::{GgmlType, QuantMatrix};

/// The LM head of the default model (Gemma 3 270M): type, rows, columns.
pub const HEAD: (GgmlType, usize, usize) = (GgmlType::Q8_0, 262_144, 640);

/// The default model's body projections in the types its GGUF file stores them in, plus the
/// other common GGUF types on the same shapes.
pub const BODY: [(GgmlType, usize, usize); 10] = [
    (GgmlType::Q5_0, 2048, 640),
    (GgmlType::Q5_0, 1024, 640),
    (GgmlType::Q8_0, 256, 640),
    (GgmlType::Q4K, 640, 1024),
    (GgmlType::Q6K, 640, 2048),
    (GgmlType::Q4K, 640, 2048),
    (GgmlType::Q4_0, 2048, 640),
    (GgmlType::Q5K, 640, 2048),
    (GgmlType::F16, 2048, 640),
    (GgmlType::BF16, 2048, 640),
];

/// Random quant bytes with every f16 scale set to 2^-6 (finite, moderate).
pub fn matrix(ty: GgmlType, rows: usize, cols: usize) -> QuantMatrix {
    let len = ty.row_bytes(cols).expect("whole blocks") * rows;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut data: Vec<u8> = (0..len)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (s >> 56) as u8
        })
        .collect();
    let scales: &[usize] = match ty {
        GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
        GgmlType::F32 => &[],
        _ => &[0],
    };
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in scales {
            block[at..at + 2].copy_from_slice(&0x2400u16.to_le_bytes());
        }
    }
    QuantMatrix::from_vec(ty, rows, cols, data).expect("valid matrix")
}

pub fn inputs(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0 - 0.5)
        .collect()
}
