//! The attention kernel: AVX2 equals portable bit for bit, a query row's result never depends on
//! the other rows, on invisible keys or on the memory layout of the cache, it matches an f64
//! reference, and bad shapes are errors.

use hierdraft_kernels::{
    attention, attention_portable, exp_nonpositive, AttentionDims, KernelError, KvView, Scoring,
    Visibility,
};
use proptest::prelude::*;

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// A case: q (heads x queries x dim), k and v stored with `pad` spare rows per head.
struct Case {
    dims: AttentionDims,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Vec<bool>,
    pad: usize,
}

impl Case {
    fn new(dims: AttentionDims, pad: usize, seed: u64) -> Case {
        let rows = dims.keys + pad;
        let mask = values(dims.queries * dims.keys, seed + 3, 1.0)
            .iter()
            .enumerate()
            .map(|(i, &r)| r > -0.3 || i % dims.keys == 0)
            .collect();
        Case {
            dims,
            q: values(dims.heads * dims.queries * dims.dim, seed, 4.0),
            k: values(dims.kv_heads * rows * dims.dim, seed + 1, 4.0),
            v: values(dims.kv_heads * rows * dims.dim, seed + 2, 2.0),
            mask,
            pad,
        }
    }

    fn view<'a>(&self, data: &'a [f32]) -> KvView<'a> {
        KvView {
            data,
            head_stride: (self.dims.keys + self.pad) * self.dims.dim,
            row_stride: self.dims.dim,
        }
    }

    fn run(&self, portable: bool, visibility: Visibility<'_>) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.q.len()];
        let f = if portable {
            attention_portable
        } else {
            attention
        };
        let scoring = Scoring {
            scaling: 1.0 / (self.dims.dim as f32).sqrt(),
            softcap: None,
        };
        f(
            &self.q,
            self.view(&self.k),
            self.view(&self.v),
            self.dims,
            visibility,
            scoring,
            &mut out,
        )
        .unwrap();
        out
    }
}

fn dims(heads: usize, group: usize, queries: usize, keys: usize, dim: usize) -> AttentionDims {
    AttentionDims {
        heads: heads * group,
        kv_heads: heads,
        queries,
        keys,
        dim,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn simd_equals_portable(kv in 1usize..3, group in 1usize..7, queries in 1usize..6,
                            extra in 0usize..40, dim in 1usize..70, pad in 0usize..3, seed in 0u64..1000,
                            wide in proptest::bool::ANY) {
        // `wide`: head dimensions past the output vectors the AVX2 path keeps in registers at once
        // (Gemma 3's is 256), in whole vectors or with a tail
        let dim = if wide { 64 + 8 * (dim % 26) + dim % 2 } else { dim };
        let case = Case::new(dims(kv, group, queries, queries + extra, dim), pad, seed);
        for visibility in [Visibility::Mask(&case.mask), Visibility::Causal { window: None },
                           Visibility::Causal { window: Some(3) }] {
            let (a, b) = (case.run(false, visibility), case.run(true, visibility));
            prop_assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_row_is_independent_of_its_batch(queries in 2usize..8, extra in 1usize..40, dim in 1usize..40,
                                         seed in 0u64..1000) {
        // Row i scored among `queries` rows, with a causal visibility, equals the same row scored
        // alone over only the keys up to its position, stored in a differently padded buffer.
        let d = dims(1, 2, queries, queries + extra, dim);
        let case = Case::new(d, 0, seed);
        let all = case.run(false, Visibility::Causal { window: None });
        for i in 0..queries {
            let keys = extra + i + 1;
            let mut alone = Case::new(dims(1, 2, 1, keys, dim), 5, seed);
            for h in 0..2 {
                alone.q[h * dim..][..dim].copy_from_slice(&case.q[(h * queries + i) * dim..][..dim]);
            }
            for j in 0..keys {
                alone.k[j * dim..][..dim].copy_from_slice(&case.k[j * dim..][..dim]);
                alone.v[j * dim..][..dim].copy_from_slice(&case.v[j * dim..][..dim]);
            }
            let one = alone.run(false, Visibility::Causal { window: None });
            prop_assert_eq!(&one[..], &all[i * 2 * dim..][..2 * dim]);
        }
    }
}

#[test]
fn matches_an_f64_reference() {
    let d = dims(2, 3, 5, 37, 24);
    let case = Case::new(d, 1, 7);
    let out = case.run(false, Visibility::Mask(&case.mask));
    let scaling = 1.0 / (d.dim as f64).sqrt();
    let head_stride = (d.keys + case.pad) * d.dim;
    for h in 0..d.heads {
        let kvh = h / 3;
        for i in 0..d.queries {
            let q = &case.q[(h * d.queries + i) * d.dim..][..d.dim];
            let row =
                |data: &[f32], j: usize| data[kvh * head_stride + j * d.dim..][..d.dim].to_vec();
            let seen: Vec<usize> = (0..d.keys).filter(|&j| case.mask[i * d.keys + j]).collect();
            let s: Vec<f64> = seen
                .iter()
                .map(|&j| {
                    row(&case.k, j)
                        .iter()
                        .zip(q)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scaling
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let total: f64 = p.iter().sum();
            for dd in 0..d.dim {
                let want: f64 = seen
                    .iter()
                    .zip(&p)
                    .map(|(&j, &pj)| pj * row(&case.v, j)[dd] as f64)
                    .sum::<f64>()
                    / total;
                let got = out[(i * d.heads + h) * d.dim + dd] as f64;
                assert!(
                    (got - want).abs() <= 1e-5,
                    "head {h} query {i} dim {dd}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn exp_is_within_two_ulps_of_the_true_value() {
    let mut x = -87.0f32;
    while x <= 0.0 {
        let got = exp_nonpositive(x) as f64;
        let want = (x as f64).exp();
        let ulp = f32::EPSILON as f64 * want;
        assert!(
            (got - want).abs() <= 2.0 * ulp,
            "exp({x}) = {got}, want {want}"
        );
        x += 0.0137;
    }
    assert_eq!(exp_nonpositive(0.0), 1.0);
    assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
}

#[test]
fn a_query_that_sees_nothing_gets_zeros() {
    let case = Case::new(dims(1, 1, 2, 3, 8), 0, 1);
    let mask = [false, false, false, true, true, true];
    let out = case.run(false, Visibility::Mask(&mask));
    assert!(out[..8].iter().all(|&x| x == 0.0));
    assert!(out[8..].iter().all(|x| x.is_finite()));
}

#[test]
fn bad_shapes_are_errors() {
    let case = Case::new(dims(1, 2, 2, 4, 8), 0, 1);
    let scoring = Scoring {
        scaling: 1.0,
        softcap: None,
    };
    let mut out = vec![0.0; case.q.len()];
    let call = |d: AttentionDims, k: &[f32], vis: Visibility<'_>, out: &mut [f32]| {
        attention(
            &case.q,
            case.view(k),
            case.view(&case.v),
            d,
            vis,
            scoring,
            out,
        )
    };
    let causal = Visibility::Causal { window: None };
    let err = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Attention(_)));
    assert!(
        err(call(case.dims, &case.k[..10], causal, &mut out)),
        "keys too short"
    );
    assert!(err(call(
        dims(1, 2, 2, 4, 8),
        &case.k,
        Visibility::Mask(&[true; 3]),
        &mut out
    )));
    assert!(err(call(case.dims, &case.k, causal, &mut out[..5])));
    let uneven = AttentionDims {
        heads: 3,
        ..case.dims
    };
    assert!(err(call(uneven, &case.k, causal, &mut out)));
    let more_queries = AttentionDims {
        keys: 1,
        ..case.dims
    };
    assert!(err(call(more_queries, &case.k, causal, &mut out)));
}
