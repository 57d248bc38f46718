//! The dequantizers: the default (AVX2 where available) path equals the portable reference bit
//! for bit on random valid blocks of every type, for any number of blocks; whole-matrix and
//! row-selecting dequantization give the rows of `dequantize_row`; bad shapes are errors.

mod quant_blocks;

use hierdraft_kernels::{
    dequantize_row, dequantize_row_portable, dequantize_rows, GgmlType, KernelError, QuantMatrix,
};
use proptest::prelude::*;
use quant_blocks::{bits, dequantized, random_blocks, random_matrix, Rng};

fn both_paths(ty: GgmlType, data: &[u8]) -> (Vec<f32>, Vec<f32>) {
    let values = data.len() / ty.block_bytes() * ty.block_len();
    let (mut fast, mut portable) = (vec![0f32; values], vec![1f32; values]);
    dequantize_row(ty, data, &mut fast).unwrap();
    dequantize_row_portable(ty, data, &mut portable).unwrap();
    (fast, portable)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn simd_and_portable_dequantization_agree_bitwise(
        type_index in 0..GgmlType::ALL.len(), blocks in 1usize..40, seed in any::<u64>()
    ) {
        let ty = GgmlType::ALL[type_index];
        let data = random_blocks(ty, blocks, false, &mut Rng::new(seed));
        let (fast, portable) = both_paths(ty, &data);
        prop_assert_eq!(bits(&fast), bits(&portable), "{}", ty.name());
    }
}

#[test]
fn every_f16_and_bf16_pattern_agrees_bitwise() {
    let data: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let (fast, portable) = both_paths(ty, &data);
        assert_eq!(bits(&fast), bits(&portable), "{}", ty.name());
    }
    // the conversions are exact: every non-NaN f16 survives a round trip through f64
    let (f16, _) = both_paths(GgmlType::F16, &data);
    assert_eq!(f16[0x3c00], 1.0);
    assert_eq!(f16[0x0001], 2f32.powi(-24));
    assert_eq!(
        f16[0x7c01].to_bits(),
        0x7f80_2000,
        "signalling NaN kept as numpy keeps it"
    );
}

#[test]
fn known_blocks_give_known_values() {
    // Q8_0: d = 0.5 (f16 0x3800), quants 0, 1, -1, 127, -128, ...
    let mut q8 = vec![0x00, 0x38];
    q8.extend((0..32).map(|j| [0u8, 1, 255, 127, 128][j % 5]));
    let (v, _) = both_paths(GgmlType::Q8_0, &q8);
    assert_eq!(&v[..5], &[0.0, 0.5, -0.5, 63.5, -64.0]);
    // Q4_0: d = 2, byte j = 0x?F: low nibbles 15 -> 14, high nibble of byte 0 = 0 -> -16
    let mut q4 = vec![0x00, 0x40];
    q4.extend([0x0f; 16]);
    let (v, _) = both_paths(GgmlType::Q4_0, &q4);
    assert_eq!((v[0], v[15], v[16], v[31]), (14.0, 14.0, -16.0, -16.0));
    // Q5_0: d = 1, high bits set for values 0 and 16 only
    let mut q5 = vec![0x00, 0x3c];
    q5.extend(0x0001_0001u32.to_le_bytes());
    q5.extend([0x00; 16]);
    let (v, _) = both_paths(GgmlType::Q5_0, &q5);
    assert_eq!((v[0], v[1], v[16], v[17]), (0.0, -16.0, 0.0, -16.0));
}

#[test]
fn matrix_and_row_dequantization_agree_with_rows() {
    let mut rng = Rng::new(11);
    for ty in GgmlType::ALL {
        let m = random_matrix(ty, 37, 2 * ty.block_len().max(32), &mut rng);
        let want = dequantized(&m);
        let mut all = vec![0f32; want.len()];
        m.dequantize_into(&mut all).unwrap();
        assert_eq!(bits(&all), bits(&want), "{}", ty.name());
        let ids = [36usize, 0, 5, 5];
        let mut picked = vec![0f32; ids.len() * m.cols()];
        dequantize_rows(&m, &ids, &mut picked).unwrap();
        for (j, &r) in ids.iter().enumerate() {
            let cols = m.cols();
            assert_eq!(
                bits(&picked[j * cols..(j + 1) * cols]),
                bits(&want[r * cols..(r + 1) * cols])
            );
        }
    }
}

#[test]
fn bad_shapes_and_rows_are_errors() {
    let mut out = vec![0f32; 32];
    assert_eq!(
        dequantize_row(GgmlType::Q8_0, &[0; 33], &mut out),
        Err(KernelError::PartialBlock {
            ty: "Q8_0",
            len: 33,
            block_bytes: 34
        })
    );
    assert_eq!(
        dequantize_row(GgmlType::Q8_0, &[0; 68], &mut out),
        Err(KernelError::DequantizedShape {
            ty: "Q8_0",
            blocks: 2,
            values: 64,
            len: 32
        })
    );
    let m = QuantMatrix::from_vec(GgmlType::Q8_0, 2, 32, vec![0; 68]).unwrap();
    assert_eq!(
        dequantize_rows(&m, &[0, 2], &mut vec![0f32; 64]),
        Err(KernelError::RowOutOfRange { row: 2, rows: 2 })
    );
    assert!(matches!(
        dequantize_rows(&m, &[0], &mut vec![0f32; 64]),
        Err(KernelError::OutputShape { .. })
    ));
    assert!(matches!(
        m.dequantize_into(&mut out),
        Err(KernelError::OutputShape { .. })
    ));
}
