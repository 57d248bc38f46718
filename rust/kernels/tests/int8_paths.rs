//! The int8 mode's paths: the default (AVX-512 or AVX2 where available) path and the AVX2 one
//! equal the portable one bit for bit for every integer format, any number of input rows
//! (decoding and prefill sizes, several input tiles and parallel chunks; one to four rows through
//! the direct kernel) and weight-row counts that leave partial panels; a row's result does not
//! depend on its batch; float weights fall back to `qlinear`; bad shapes are errors.

mod quant_blocks;

use hierdraft_kernels::{
    qlinear, qlinear_int8, qlinear_int8_on, qlinear_int8_portable, GgmlType, Isa, KernelError,
    QuantMatrix,
};
use proptest::prelude::*;
use quant_blocks::{bits, inputs, random_matrix, Rng};

const INT_TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// The SIMD paths; one this CPU lacks runs its best path instead (`Isa::supported`).
const SIMD_PATHS: [Isa; 3] = [Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

fn run_on(isa: Isa, x: &[f32], m: &QuantMatrix) -> Vec<f32> {
    let mut out = vec![f32::NAN; x.len() / m.cols() * m.rows()];
    qlinear_int8_on(isa, x, m, &mut out).unwrap();
    out
}

fn run(x: &[f32], m: &QuantMatrix, portable: bool) -> Vec<f32> {
    let mut out = vec![f32::NAN; x.len() / m.cols() * m.rows()];
    if portable {
        qlinear_int8_portable(x, m, &mut out).unwrap();
    } else {
        qlinear_int8(x, m, &mut out).unwrap();
    }
    out
}

/// Inputs with a few zero blocks, huge and tiny values mixed in (scales of every size).
fn varied_inputs(len: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = inputs(len, rng);
    for chunk in x.chunks_mut(32) {
        match rng.next() % 8 {
            0 => chunk.fill(0.0),
            1 => chunk.iter_mut().for_each(|v| *v *= 1e6),
            2 => chunk.iter_mut().for_each(|v| *v *= 1e-30),
            3 => chunk[(rng.next() % 32) as usize] = 7.5,
            _ => {}
        }
    }
    x
}

fn cols(ty: GgmlType, units: usize) -> usize {
    units.div_ceil(ty.block_len() / 32) * ty.block_len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn simd_and_portable_paths_agree_bitwise(
        type_index in 0..INT_TYPES.len(), n in 1usize..70, units in 1usize..40,
        rows in 1usize..=64, seed in any::<u64>()
    ) {
        let ty = INT_TYPES[type_index];
        let k = cols(ty, units);
        let mut rng = Rng::new(seed);
        let m = random_matrix(ty, n, k, &mut rng);
        let x = varied_inputs(rows * k, &mut rng);
        let portable = bits(&run(&x, &m, true));
        prop_assert_eq!(&bits(&run(&x, &m, false)), &portable, "{} {}x{}", ty.name(), n, k);
        for isa in SIMD_PATHS {
            prop_assert_eq!(&bits(&run_on(isa, &x, &m)), &portable, "{} {}x{} {:?}", ty.name(), n, k, isa);
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch(
        type_index in 0..INT_TYPES.len(), n in 1usize..90, rows in 1usize..40,
        pick in any::<prop::sample::Index>(), seed in any::<u64>()
    ) {
        let ty = INT_TYPES[type_index];
        let k = cols(ty, 16);
        let mut rng = Rng::new(seed);
        let m = random_matrix(ty, n, k, &mut rng);
        let x = varied_inputs(rows * k, &mut rng);
        let r = pick.index(rows);
        let batch = run(&x, &m, false);
        let alone = run(&x[r * k..(r + 1) * k], &m, false);
        prop_assert_eq!(bits(&batch[r * n..(r + 1) * n]), bits(&alone));
    }
}

#[test]
fn prefill_sized_inputs_several_tiles_and_many_chunks() {
    let mut rng = Rng::new(11);
    for (ty, n, k, rows) in [
        (GgmlType::Q8_0, 3001, 64, 17),
        (GgmlType::Q4K, 77, 512, 100),
        (GgmlType::Q5_0, 130, 96, 300),
        (GgmlType::Q6K, 50, 4096, 70),
        (GgmlType::Q5K, 21, 8192, 40),
        (GgmlType::Q4_0, 13, 6144, 65),
        (GgmlType::Q8_0, 30, 2048, 1),
    ] {
        let m = random_matrix(ty, n, k, &mut rng);
        let x = varied_inputs(rows * k, &mut rng);
        let fast = run(&x, &m, false);
        assert_eq!(bits(&fast), bits(&run(&x, &m, true)), "{}", ty.name());
        let last = rows - 1;
        let alone = run(&x[last * k..], &m, false);
        assert_eq!(bits(&fast[last * n..]), bits(&alone), "{}", ty.name());
    }
}

/// One to four input rows take the direct kernel (no panels), five and more the panels. On every
/// path (the AVX2 one and, where the CPU has them, the AVX-512 and VNNI ones) both must give the portable
/// path's bits, so a row computed alone equals the same row in a larger batch. Weight-row counts
/// cover partial groups of 8 and many parallel chunks.
#[test]
fn the_direct_kernel_for_one_to_four_rows_matches_the_panels_and_the_portable_path() {
    let mut rng = Rng::new(23);
    for ty in INT_TYPES {
        for (n, units) in [(1, 1), (7, 3), (8, 2), (13, 9), (200, 4), (1030, 2)] {
            let k = cols(ty, units);
            let m = random_matrix(ty, n, k, &mut rng);
            let x = varied_inputs(5 * k, &mut rng);
            let batch = run_on(Isa::Portable, &x, &m);
            for rows in 1..=5 {
                let few = &x[..rows * k];
                for isa in SIMD_PATHS {
                    assert_eq!(
                        bits(&run_on(isa, few, &m)),
                        bits(&batch[..rows * n]),
                        "{} {n}x{k} {rows} rows {isa:?}",
                        ty.name()
                    );
                }
            }
        }
    }
}

#[test]
fn non_finite_inputs_make_their_row_nan() {
    let mut rng = Rng::new(4);
    let m = random_matrix(GgmlType::Q4K, 9, 256, &mut rng);
    let mut x = inputs(3 * 256, &mut rng);
    x[256 + 40] = f32::INFINITY;
    x[2 * 256 + 255] = f32::NAN;
    for portable in [false, true] {
        let out = run(&x, &m, portable);
        assert!(out[..9].iter().all(|v| v.is_finite()));
        assert!(out[9..].iter().all(|v| v.is_nan()));
    }
}

#[test]
fn float_weights_use_the_float32_kernel() {
    let mut rng = Rng::new(5);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        let m = random_matrix(ty, 19, 77, &mut rng);
        let x = inputs(5 * 77, &mut rng);
        let mut want = vec![0f32; 5 * 19];
        qlinear(&x, &m, &mut want).unwrap();
        assert_eq!(bits(&run(&x, &m, false)), bits(&want), "{}", ty.name());
        assert_eq!(bits(&run(&x, &m, true)), bits(&want), "{}", ty.name());
    }
}

#[test]
fn shape_errors_are_reported() {
    let m = random_matrix(GgmlType::Q4_0, 3, 64, &mut Rng::new(2));
    let mut out = vec![0f32; 6];
    for f in [qlinear_int8, qlinear_int8_portable] {
        assert_eq!(
            f(&[0.0; 100], &m, &mut out),
            Err(KernelError::InputShape { len: 100, k: 64 })
        );
        assert_eq!(
            f(&[0.0; 128], &m, &mut out[..5]),
            Err(KernelError::OutputShape {
                len: 5,
                rows: 2,
                n: 3,
                expected: 6
            })
        );
        assert_eq!(f(&[], &m, &mut []), Ok(()));
        assert_eq!(f(&[0.0; 128], &m, &mut out), Ok(()));
        assert_eq!(out, vec![0.0; 6]);
    }
}
