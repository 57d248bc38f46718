//! `qlinear` over GGUF blocks equals `linear_rows` over the dequantized matrix bit for bit, for
//! every type, any number of input rows (decoding and prefill sizes) and odd shapes; the portable
//! path, the AVX2 path and (where the CPU has it) the AVX-512 path give the same bits; a row's
//! result does not depend on its batch; bad shapes are errors.

mod quant_blocks;

use hierdraft_kernels::{
    linear_rows, linear_rows_portable, qlinear, qlinear_group_on, qlinear_on, qlinear_portable,
    GgmlType, Isa, KernelError,
};
use proptest::prelude::*;
use quant_blocks::{bits, cols_for, dequantized, inputs, random_matrix, Rng};

fn qproduct(x: &[f32], m: &hierdraft_kernels::QuantMatrix) -> Vec<f32> {
    let mut out = vec![f32::NAN; x.len() / m.cols() * m.rows()];
    qlinear(x, m, &mut out).unwrap();
    out
}

fn reference(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; x.len() / k * (w.len() / k)];
    linear_rows(x, w, k, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn matches_linear_rows_on_the_dequantized_matrix(
        type_index in 0..GgmlType::ALL.len(), n in 1usize..150, units in 1usize..200,
        tail in 0usize..8, rows in 1usize..=64, seed in any::<u64>()
    ) {
        let ty = GgmlType::ALL[type_index];
        let k = cols_for(ty, units, tail);
        let mut rng = Rng::new(seed);
        let m = random_matrix(ty, n, k, &mut rng);
        let x = inputs(rows * k, &mut rng);
        let w = dequantized(&m);
        prop_assert_eq!(bits(&qproduct(&x, &m)), bits(&reference(&x, &w, k)), "{} {}x{}", ty.name(), n, k);
    }

    #[test]
    fn portable_path_gives_the_same_bits(
        type_index in 0..GgmlType::ALL.len(), n in 1usize..40, units in 1usize..150,
        tail in 0usize..8, rows in 1usize..12, seed in any::<u64>()
    ) {
        let ty = GgmlType::ALL[type_index];
        let k = cols_for(ty, units, tail);
        let mut rng = Rng::new(seed);
        let m = random_matrix(ty, n, k, &mut rng);
        let x = inputs(rows * k, &mut rng);
        let mut portable = vec![0f32; rows * n];
        qlinear_portable(&x, &m, &mut portable).unwrap();
        let w = dequantized(&m);
        let mut reference_portable = vec![0f32; rows * n];
        linear_rows_portable(&x, &w, k, &mut reference_portable).unwrap();
        prop_assert_eq!(bits(&portable), bits(&reference_portable));
        prop_assert_eq!(bits(&qproduct(&x, &m)), bits(&portable));
    }

    #[test]
    fn every_instruction_set_path_gives_the_same_bits(
        type_index in 0..GgmlType::ALL.len(), n in 1usize..60, units in 1usize..40,
        tail in 0usize..8, rows in 1usize..=12, seed in any::<u64>()
    ) {
        // Rows 1-8 take the fused kernels, whose groups differ between AVX2 (up to 4 rows) and
        // AVX-512 (up to 8); beyond, the tiled path. A path the CPU lacks runs its best one.
        let ty = GgmlType::ALL[type_index];
        let k = cols_for(ty, units, tail);
        let mut rng = Rng::new(seed);
        let m = random_matrix(ty, n, k, &mut rng);
        let x = inputs(rows * k, &mut rng);
        let on = |isa: Isa| {
            let mut out = vec![f32::NAN; rows * n];
            qlinear_on(isa, &x, &m, &mut out).unwrap();
            out
        };
        let portable = bits(&on(Isa::Portable));
        prop_assert_eq!(&bits(&on(Isa::Avx2)), &portable, "{} {}x{} rows {}", ty.name(), n, k, rows);
        prop_assert_eq!(&bits(&on(Isa::Avx512)), &portable, "{} {}x{} rows {}", ty.name(), n, k, rows);
        prop_assert_eq!(&bits(&on(Isa::Avx512Vnni)), &portable, "{} {}x{} rows {}", ty.name(), n, k, rows);
        // A group of two matrices (the projections of a layer) on each path, too.
        let m2 = random_matrix(ty, n + 3, k, &mut rng);
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni] {
            let (mut a, mut b) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * (n + 3)]);
            qlinear_group_on(isa, &x, &[&m, &m2], &mut [&mut a, &mut b]).unwrap();
            let mut alone = vec![f32::NAN; rows * (n + 3)];
            qlinear_portable(&x, &m2, &mut alone).unwrap();
            prop_assert_eq!(&bits(&a), &portable, "{:?}", isa);
            prop_assert_eq!(bits(&b), bits(&alone), "{:?}", isa);
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch(
        type_index in 0..GgmlType::ALL.len(), n in 1usize..90, rows in 1usize..40,
        pick in any::<prop::sample::Index>(), seed in any::<u64>()
    ) {
        let ty = GgmlType::ALL[type_index];
        let k = ty.block_len().max(64);
        let mut rng = Rng::new(seed);
        let m = random_matrix(ty, n, k, &mut rng);
        let x = inputs(rows * k, &mut rng);
        let r = pick.index(rows);
        let batch = qproduct(&x, &m);
        let alone = qproduct(&x[r * k..(r + 1) * k], &m);
        prop_assert_eq!(bits(&batch[r * n..(r + 1) * n]), bits(&alone));
    }
}

#[test]
fn prefill_sized_inputs_long_rows_and_many_parallel_chunks() {
    let mut rng = Rng::new(3);
    for (ty, n, k, rows) in [
        (GgmlType::Q8_0, 3001, 64, 17),
        (GgmlType::Q4K, 77, 512, 100),
        (GgmlType::Q5_0, 130, 96, 300),
        (GgmlType::F16, 45, 203, 129),
        (GgmlType::Q6K, 50, 1280, 70),
        (GgmlType::F32, 33, 1109, 3),
        (GgmlType::Q8_0, 30, 2048, 1),
    ] {
        let m = random_matrix(ty, n, k, &mut rng);
        let x = inputs(rows * k, &mut rng);
        let w = dequantized(&m);
        assert_eq!(
            bits(&qproduct(&x, &m)),
            bits(&reference(&x, &w, k)),
            "{}",
            ty.name()
        );
    }
}

#[test]
fn zero_input_rows_write_nothing() {
    let m = random_matrix(GgmlType::Q8_0, 3, 32, &mut Rng::new(1));
    assert_eq!(qlinear(&[], &m, &mut []), Ok(()));
}

#[test]
fn shape_errors_are_reported() {
    let m = random_matrix(GgmlType::Q4_0, 3, 64, &mut Rng::new(2));
    let mut out = vec![0f32; 6];
    assert_eq!(
        qlinear(&[0.0; 100], &m, &mut out),
        Err(KernelError::InputShape { len: 100, k: 64 })
    );
    assert_eq!(
        qlinear(&[0.0; 128], &m, &mut out[..5]),
        Err(KernelError::OutputShape {
            len: 5,
            rows: 2,
            n: 3,
            expected: 6
        })
    );
    assert_eq!(qlinear(&[0.0; 128], &m, &mut out), Ok(()));
    assert_eq!(out, vec![0.0; 6]);
}
