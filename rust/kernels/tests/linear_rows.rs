//! `linear_rows` against a float64 reference, the portable path bit for bit, batch
//! independence, and shape errors.

use hierdraft_kernels::{linear_rows, linear_rows_portable, KernelError};
use proptest::prelude::*;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn reference(x: &[f32], w: &[f32], k: usize) -> Vec<f64> {
    let (rows, n) = (x.len() / k, w.len() / k);
    let mut out = vec![0f64; rows * n];
    for r in 0..rows {
        for c in 0..n {
            out[r * n + c] = (0..k)
                .map(|j| f64::from(x[r * k + j]) * f64::from(w[c * k + j]))
                .sum();
        }
    }
    out
}

fn product(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; (x.len() / k) * (w.len() / k)];
    linear_rows(x, w, k, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_float64_reference(rows in 0usize..20, n in 0usize..70, k in 1usize..80, seed in any::<u64>()) {
        let (x, w) = (values(rows * k, seed), values(n * k, seed ^ 0xABCD));
        let got = product(&x, &w, k);
        let want = reference(&x, &w, k);
        // |error| <= k * eps * sum |x_j w_j| for any summation order; values are below 0.5.
        let bound = k as f64 * f64::from(f32::EPSILON) * 0.25 * k as f64 + 1e-6;
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((f64::from(*g) - w).abs() <= bound, "{g} vs {w}");
        }
    }

    #[test]
    fn simd_and_portable_paths_agree_bitwise(rows in 1usize..12, n in 1usize..40, k in 1usize..1300, seed in any::<u64>()) {
        let (x, w) = (values(rows * k, seed), values(n * k, seed ^ 7));
        let mut portable = vec![0f32; rows * n];
        linear_rows_portable(&x, &w, k, &mut portable).unwrap();
        let fast = product(&x, &w, k);
        prop_assert_eq!(fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch(rows in 1usize..20, n in 1usize..50, k in 1usize..70, pick in any::<prop::sample::Index>(), seed in any::<u64>()) {
        let (x, w) = (values(rows * k, seed), values(n * k, seed ^ 99));
        let r = pick.index(rows);
        let batch = product(&x, &w, k);
        let alone = product(&x[r * k..(r + 1) * k], &w, k);
        prop_assert_eq!(&batch[r * n..(r + 1) * n].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        &alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
}

#[test]
fn large_weight_spans_many_parallel_chunks() {
    let (rows, n, k) = (17, 20_011, 64);
    let (x, w) = (values(rows * k, 1), values(n * k, 2));
    let got = product(&x, &w, k);
    let want = reference(&x, &w, k);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (f64::from(*g) - w).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "worst error {worst}");
    assert!(got.iter().all(|v| v.is_finite()));
}

#[test]
fn shape_errors_are_reported() {
    let mut out = vec![0f32; 6];
    assert_eq!(
        linear_rows(&[1.0; 4], &[1.0; 6], 0, &mut out),
        Err(KernelError::EmptyInner)
    );
    assert_eq!(
        linear_rows(&[1.0; 5], &[1.0; 6], 2, &mut out),
        Err(KernelError::InputShape { len: 5, k: 2 })
    );
    assert_eq!(
        linear_rows(&[1.0; 4], &[1.0; 7], 2, &mut out),
        Err(KernelError::WeightShape { len: 7, k: 2 })
    );
    assert_eq!(
        linear_rows(&[1.0; 4], &[1.0; 6], 2, &mut out[..5]),
        Err(KernelError::OutputShape {
            len: 5,
            rows: 2,
            n: 3,
            expected: 6
        })
    );
    assert!(linear_rows(&[1.0; 4], &[1.0; 6], 2, &mut out).is_ok());
    assert_eq!(out, vec![2.0; 6]);
}
