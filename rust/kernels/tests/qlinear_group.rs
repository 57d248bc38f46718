//! `qlinear_group` (the same input rows times several matrices in one call) equals separate
//! `qlinear` calls bit for bit, for any mix of types (register-only and tiled paths in one
//! group), any number of rows and on the portable path; bad groups are errors naming the
//! matrix, and nothing is written then.

mod quant_blocks;

use hierdraft_kernels::{
    qlinear, qlinear_group, qlinear_group_portable, qlinear_portable, GgmlType, GroupError,
    KernelError, QuantMatrix,
};
use proptest::prelude::*;
use quant_blocks::{bits, inputs, random_matrix, Rng};

/// A block length every type of `types` divides (so they can share `k`).
fn common_cols(types: &[GgmlType], units: usize) -> usize {
    let block = types.iter().map(|t| t.block_len()).max().unwrap_or(1);
    units * block
}

/// A single-matrix product kernel (`qlinear` or its portable path).
type Product = fn(&[f32], &QuantMatrix, &mut [f32]) -> Result<(), KernelError>;

fn separate(x: &[f32], ms: &[QuantMatrix], product: Product) -> Vec<Vec<f32>> {
    ms.iter()
        .map(|m| {
            let mut out = vec![f32::NAN; x.len() / m.cols() * m.rows()];
            product(x, m, &mut out).unwrap();
            out
        })
        .collect()
}

type GroupFn = fn(&[f32], &[&QuantMatrix], &mut [&mut [f32]]) -> Result<(), GroupError>;

fn grouped(x: &[f32], ms: &[QuantMatrix], product: GroupFn) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = ms
        .iter()
        .map(|m| vec![f32::NAN; x.len() / m.cols() * m.rows()])
        .collect();
    let refs: Vec<&QuantMatrix> = ms.iter().collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
    product(x, &refs, &mut views).unwrap();
    outs
}

fn all_bits(outs: &[Vec<f32>]) -> Vec<Vec<u32>> {
    outs.iter().map(|o| bits(o)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_group_equals_separate_calls(
        type_indices in prop::collection::vec(0..GgmlType::ALL.len(), 1..5),
        heights in prop::collection::vec(1usize..300, 4), units in 1usize..4,
        rows in 1usize..=40, seed in any::<u64>()
    ) {
        let types: Vec<GgmlType> = type_indices.iter().map(|&i| GgmlType::ALL[i]).collect();
        let k = common_cols(&types, units);
        let mut rng = Rng::new(seed);
        let ms: Vec<QuantMatrix> = types
            .iter()
            .zip(&heights)
            .map(|(&ty, &n)| random_matrix(ty, n, k, &mut rng))
            .collect();
        let x = inputs(rows * k, &mut rng);
        prop_assert_eq!(all_bits(&grouped(&x, &ms, qlinear_group)), all_bits(&separate(&x, &ms, qlinear)));
    }

    #[test]
    fn the_portable_group_equals_separate_portable_calls(
        type_indices in prop::collection::vec(0..GgmlType::ALL.len(), 1..4),
        heights in prop::collection::vec(1usize..60, 3), rows in 1usize..6, seed in any::<u64>()
    ) {
        let types: Vec<GgmlType> = type_indices.iter().map(|&i| GgmlType::ALL[i]).collect();
        let k = common_cols(&types, 1);
        let mut rng = Rng::new(seed);
        let ms: Vec<QuantMatrix> = types
            .iter()
            .zip(&heights)
            .map(|(&ty, &n)| random_matrix(ty, n, k, &mut rng))
            .collect();
        let x = inputs(rows * k, &mut rng);
        let portable = all_bits(&grouped(&x, &ms, qlinear_group_portable));
        prop_assert_eq!(&portable, &all_bits(&separate(&x, &ms, qlinear_portable)));
        prop_assert_eq!(&portable, &all_bits(&grouped(&x, &ms, qlinear_group)));
    }
}

#[test]
fn the_model_shapes_group_as_separate_calls() {
    // Gemma 3 270M: q/k/v (Q5_0, Q5_0, Q8_0 over 640 columns) and gate/up (Q5_0).
    let mut rng = Rng::new(7);
    let qkv = [
        random_matrix(GgmlType::Q5_0, 1024, 640, &mut rng),
        random_matrix(GgmlType::Q5_0, 256, 640, &mut rng),
        random_matrix(GgmlType::Q8_0, 256, 640, &mut rng),
    ];
    let gate_up = [
        random_matrix(GgmlType::Q5_0, 2048, 640, &mut rng),
        random_matrix(GgmlType::Q5_0, 2048, 640, &mut rng),
    ];
    for rows in [1, 2, 3, 4, 16, 65] {
        let x = inputs(rows * 640, &mut rng);
        for ms in [&qkv[..], &gate_up[..]] {
            assert_eq!(
                all_bits(&grouped(&x, ms, qlinear_group)),
                all_bits(&separate(&x, ms, qlinear)),
                "{rows} rows"
            );
        }
    }
}

#[test]
fn bad_groups_are_errors_and_write_nothing() {
    let mut rng = Rng::new(3);
    let a = random_matrix(GgmlType::Q8_0, 4, 64, &mut rng);
    let b = random_matrix(GgmlType::Q4_0, 3, 64, &mut rng);
    let wide = random_matrix(GgmlType::Q8_0, 2, 96, &mut rng);
    let x = inputs(2 * 64, &mut rng);
    let (mut oa, mut ob) = (vec![0f32; 8], vec![0f32; 6]);
    assert_eq!(qlinear_group(&x, &[], &mut []), Err(GroupError::Empty));
    assert_eq!(
        qlinear_group(&x, &[&a, &b], &mut [&mut oa]),
        Err(GroupError::Outputs {
            matrices: 2,
            outputs: 1
        })
    );
    assert_eq!(
        qlinear_group(&x, &[&a, &wide], &mut [&mut oa, &mut ob]),
        Err(GroupError::Inner {
            index: 1,
            k: 96,
            expected: 64
        })
    );
    assert_eq!(
        qlinear_group(&x, &[&a, &b], &mut [&mut oa, &mut ob[..5]]),
        Err(GroupError::Shape {
            index: 1,
            source: KernelError::OutputShape {
                len: 5,
                rows: 2,
                n: 3,
                expected: 6
            }
        })
    );
    assert_eq!(
        qlinear_group(&x[..100], &[&a, &b], &mut [&mut oa, &mut ob]),
        Err(GroupError::Shape {
            index: 0,
            source: KernelError::InputShape { len: 100, k: 64 }
        })
    );
    assert!(oa.iter().chain(&ob).all(|&v| v == 0.0));
    let message = qlinear_group(&x, &[&a, &wide], &mut [&mut oa, &mut ob])
        .unwrap_err()
        .to_string();
    assert!(message.contains("matrix 1 has 96 columns"), "{message}");
}

#[test]
fn zero_input_rows_write_nothing() {
    let m = random_matrix(GgmlType::Q8_0, 3, 32, &mut Rng::new(1));
    assert_eq!(
        qlinear_group(&[], &[&m, &m], &mut [&mut [], &mut []]),
        Ok(())
    );
}
