//! `GreedyHead::argmax` is the first maximal index of `qlinear(x, W)` for every input row, on
//! both paths: on random heads (where the bound rules out little and rows are computed in full),
//! on heads with a few strong rows, exact ties and near ties (where only candidates are computed
//! exactly), on a head whose proxy ranks two rows the wrong way round, and on inputs the bound
//! does not cover. Bad matrices and shapes are errors.

mod quant_blocks;

use hierdraft_kernels::{
    qlinear_portable, GgmlType, GreedyHead, GreedyHeadError, KernelError, QuantMatrix,
};
use proptest::prelude::*;
use quant_blocks::{inputs, random_matrix, Rng};

const Q8_BLOCK: usize = 34;

/// First maximal index, the first NaN if any (torch.argmax's rule).
fn first_max(v: &[f32]) -> u32 {
    if let Some(i) = v.iter().position(|x| x.is_nan()) {
        return i as u32;
    }
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The first maximal index of every row of `qlinear_portable(x, m)`.
fn reference(x: &[f32], m: &QuantMatrix) -> Vec<u32> {
    let mut out = vec![0f32; x.len() / m.cols() * m.rows()];
    qlinear_portable(x, m, &mut out).unwrap();
    out.chunks_exact(m.rows()).map(first_max).collect()
}

fn argmax(head: &GreedyHead, x: &[f32], portable: bool) -> (Vec<u32>, Vec<usize>) {
    let mut out = vec![u32::MAX; x.len() / head.cols()];
    let report = if portable {
        head.argmax_portable(x, &mut out)
    } else {
        head.argmax(x, &mut out)
    }
    .unwrap();
    (out, report.exact_rows)
}

/// A Q8_0 block with scale bits `d` and values `q`.
fn block(d: u16, q: &[i8]) -> Vec<u8> {
    let mut b = d.to_le_bytes().to_vec();
    b.extend(q.iter().map(|&v| v as u8));
    b
}

/// `n` rows of `k` values: weak random rows (|q| <= 20), `strong` rows aligned with `x` (their
/// products dominate), copies of strong rows elsewhere (exact ties, before or after the
/// original) and copies with one value moved by one (near ties).
fn structured_head(n: usize, k: usize, x: &[f32], strong: usize, rng: &mut Rng) -> QuantMatrix {
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let mut rows: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            (0..k / 32)
                .flat_map(|_| {
                    let q: Vec<i8> = (0..32).map(|_| (rng.next() % 41) as i8 - 20).collect();
                    block(rng.moderate_f16(), &q)
                })
                .collect()
        })
        .collect();
    for _ in 0..strong {
        let at = (rng.next() as usize) % n;
        let alpha = 0.6 + 0.4 * (rng.unit() + 0.5);
        let d = rng.moderate_f16() & 0x7fff;
        let row: Vec<u8> = x
            .chunks_exact(32)
            .flat_map(|xb| {
                let q: Vec<i8> = xb
                    .iter()
                    .map(|v| (v / max * 127.0 * alpha).round().clamp(-127.0, 127.0) as i8)
                    .collect();
                block(d, &q)
            })
            .collect();
        rows[at] = row.clone();
        let copy = (rng.next() as usize) % n;
        rows[copy] = row.clone();
        let near = (rng.next() as usize) % n;
        let mut moved = row;
        let i = 2 + (rng.next() as usize) % 32;
        moved[i] =
            (moved[i] as i8).saturating_add(if rng.next().is_multiple_of(2) { 1 } else { -1 })
                as u8;
        rows[near] = moved;
    }
    QuantMatrix::from_vec(GgmlType::Q8_0, n, k, rows.concat()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_heads_give_the_full_products_argmax(
        n in 1usize..200, blocks in 1usize..12, rows in 1usize..7, seed in any::<u64>()
    ) {
        let k = 32 * blocks;
        let mut rng = Rng::new(seed);
        let m = random_matrix(GgmlType::Q8_0, n, k, &mut rng);
        let x = inputs(rows * k, &mut rng);
        let head = GreedyHead::new(&m).unwrap();
        let expected = reference(&x, &m);
        prop_assert_eq!(&argmax(&head, &x, false).0, &expected);
        prop_assert_eq!(&argmax(&head, &x, true).0, &expected);
    }

    #[test]
    fn heads_with_strong_rows_and_ties_give_the_full_products_argmax(
        n in 64usize..600, blocks in 1usize..24, rows in 1usize..7, strong in 1usize..5,
        seed in any::<u64>()
    ) {
        let k = 32 * blocks;
        let mut rng = Rng::new(seed);
        let base = inputs(k, &mut rng);
        // Every input row is the base row plus a little noise, so the strong rows stay strong.
        let x: Vec<f32> = (0..rows * k).map(|i| base[i % k] + 0.02 * rng.unit()).collect();
        let m = structured_head(n, k, &base, strong, &mut rng);
        let head = GreedyHead::new(&m).unwrap();
        let expected = reference(&x, &m);
        prop_assert_eq!(&argmax(&head, &x, false).0, &expected);
        prop_assert_eq!(&argmax(&head, &x, true).0, &expected);
    }
}

#[test]
fn candidates_decide_where_the_proxy_ranks_the_wrong_row_first() {
    // Row 1: every value 7 at scale 1 (exact 7 per unit of input, proxy 3.5). Row 2: every value
    // 8 at scale 0.8 (exact 6.4, proxy 9.2). The proxy puts row 2 first; the answer is row 1.
    let k = 64;
    let one: u16 = 0x3c00;
    let point_eight: u16 = 0x3a66; // 0.7998
    let mut data = block(one, &[0; 32]).repeat(2);
    data.extend(block(one, &[7; 32]).repeat(2));
    data.extend(block(point_eight, &[8; 32]).repeat(2));
    let mut rng = Rng::new(7);
    for _ in 0..253 {
        let q: Vec<i8> = (0..32).map(|_| (rng.next() % 5) as i8 - 2).collect();
        data.extend(block(one, &q).repeat(2));
    }
    let m = QuantMatrix::from_vec(GgmlType::Q8_0, 256, k, data).unwrap();
    let head = GreedyHead::new(&m).unwrap();
    let x = vec![0.25f32; k];
    assert_eq!(reference(&x, &m), vec![1]);
    for portable in [false, true] {
        let (out, exact_rows) = argmax(&head, &x, portable);
        assert_eq!(out, vec![1]);
        assert!(exact_rows[0] >= 2 && exact_rows[0] < 16, "{exact_rows:?}");
    }
}

#[test]
fn exact_ties_go_to_the_first_row_and_only_candidates_are_computed() {
    let (n, k) = (512, 256);
    let mut rng = Rng::new(11);
    let x = inputs(k, &mut rng);
    let m = structured_head(n, k, &x, 1, &mut rng);
    let head = GreedyHead::new(&m).unwrap();
    let (out, exact_rows) = argmax(&head, &x, false);
    assert_eq!(out, reference(&x, &m));
    assert!(exact_rows[0] < n / 16, "{exact_rows:?}");
    let winner = out[0] as usize;
    let same: Vec<usize> = (0..n).filter(|&j| m.row(j) == m.row(winner)).collect();
    assert_eq!(same[0], winner, "a tie goes to the first row");
}

#[test]
fn inputs_outside_the_bound_are_computed_in_full() {
    let mut rng = Rng::new(3);
    let m = random_matrix(GgmlType::Q8_0, 40, 64, &mut rng);
    let head = GreedyHead::new(&m).unwrap();
    let mut x = inputs(3 * 64, &mut rng);
    x[5] = f32::NAN;
    x[64 + 7] = f32::INFINITY;
    x[128..160].fill(1e-35);
    let (out, exact_rows) = argmax(&head, &x, false);
    assert_eq!(out, reference(&x, &m));
    assert_eq!(exact_rows, vec![40, 40, 40]);
}

#[test]
fn bad_matrices_and_shapes_are_errors() {
    let mut rng = Rng::new(5);
    let q4 = random_matrix(GgmlType::Q4_0, 4, 64, &mut rng);
    assert!(matches!(
        GreedyHead::new(&q4),
        Err(GreedyHeadError::UnsupportedType("Q4_0"))
    ));
    let mut data = block(0x3c00, &[1; 32]).repeat(8);
    data[3 * Q8_BLOCK..3 * Q8_BLOCK + 2].copy_from_slice(&0x7c00u16.to_le_bytes()); // +inf
    let bad = QuantMatrix::from_vec(GgmlType::Q8_0, 4, 64, data).unwrap();
    assert_eq!(
        GreedyHead::new(&bad).err(),
        Some(GreedyHeadError::NonFiniteScale { row: 1, block: 1 })
    );
    let m = random_matrix(GgmlType::Q8_0, 4, 64, &mut rng);
    let head = GreedyHead::new(&m).unwrap();
    let mut out = vec![0u32; 1];
    assert_eq!(
        head.argmax(&[0.0; 65], &mut out).unwrap_err(),
        KernelError::InputShape { len: 65, k: 64 }
    );
    assert!(matches!(
        head.argmax(&[0.0; 128], &mut out),
        Err(KernelError::OutputShape { .. })
    ));
}
