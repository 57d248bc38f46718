//! The int8 mode against a brute-force scalar reference written here from the documented rule
//! (module docs of `hierdraft_kernels::int8`), independently of the crate's code: activation
//! quantization, the weights' integer values read value by value from the GGUF layouts, exact
//! integer sums in i64 and the float sequence per block. Both paths must equal it bit for bit.
//! The result must also lie within a derived bound of the exact product (in f64) of the
//! weights' values and the unquantized inputs.

mod quant_blocks;

use hierdraft_kernels::{qlinear_int8, qlinear_int8_portable, GgmlType, QuantMatrix};
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

fn f16(lo: u8, hi: u8) -> f32 {
    let h = u16::from_le_bytes([lo, hi]);
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((h >> 10) & 0x1f);
    let m = f64::from(h & 0x3ff);
    let v = match e {
        0 => m * 2f64.powi(-24),
        31 => {
            if m == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => (1.0 + m / 1024.0) * 2f64.powi(e - 15),
    };
    (sign * v) as f32
}

/// One input block as the rule quantizes it: (d, q).
fn quantize(x: &[f32]) -> (f32, [i32; 32]) {
    let mut q = [0i32; 32];
    if x.iter().any(|v| !v.is_finite()) {
        return (f32::NAN, q);
    }
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    if d == 0.0 || d.is_subnormal() {
        return (0.0, q);
    }
    let inv = 1.0 / d;
    for (q, &v) in q.iter_mut().zip(x) {
        let p = v * inv;
        let r = p.trunc()
            + if (p - p.trunc()).abs() >= 0.5 {
                p.signum()
            } else {
                0.0
            };
        *q = r.clamp(-127.0, 127.0) as i32;
    }
    (d, q)
}

/// What the reference needs of a weight row's 256-value (or 32-value) block for value `i` of
/// the row: its integer value, the integer scale of its 16 (Q6_K) or 32 (K) values, the min,
/// and the float factors.
struct WeightValue {
    v: i64,
    scale: i64,
    min: i64,
    d: f32,
    dmin: f32,
}

fn k_scale(s: &[u8], j: usize) -> (i64, i64) {
    // gguf-py's layout: 6-bit fields, the top 2 bits of sub-blocks 4..8 in the top of bytes 0..8
    let (sc, m) = if j < 4 {
        (s[j] % 64, s[j + 4] % 64)
    } else {
        (
            s[j + 4] % 16 + (s[j - 4] / 64) * 16,
            s[j + 4] / 16 + (s[j] / 64) * 16,
        )
    };
    (i64::from(sc), i64::from(m))
}

fn weight_value(ty: GgmlType, row: &[u8], i: usize) -> WeightValue {
    let bit = |b: u8, n: usize| i64::from((b >> n) & 1);
    let blk = &row[i / ty.block_len() * ty.block_bytes()..][..ty.block_bytes()];
    let l = i % ty.block_len();
    let plain = |v: i64| WeightValue {
        v,
        scale: 1,
        min: 0,
        d: f16(blk[0], blk[1]),
        dmin: 0.0,
    };
    match ty {
        GgmlType::Q8_0 => plain(i64::from(blk[2 + l] as i8)),
        GgmlType::Q4_0 => {
            let byte = blk[2 + l % 16];
            plain(i64::from(if l < 16 { byte & 15 } else { byte >> 4 }) - 8)
        }
        GgmlType::Q5_0 => {
            let byte = blk[6 + l % 16];
            let low = i64::from(if l < 16 { byte & 15 } else { byte >> 4 });
            plain(low + 16 * bit(blk[2 + l / 8], l % 8) - 16)
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let (j, m) = (l / 32, l % 32);
            let (sc, min) = k_scale(&blk[4..16], j);
            let qs = if ty == GgmlType::Q4K {
                &blk[16..]
            } else {
                &blk[48..]
            };
            let byte = qs[32 * (j / 2) + m];
            let mut v = i64::from(if j % 2 == 0 { byte & 15 } else { byte >> 4 });
            if ty == GgmlType::Q5K {
                v += 16 * bit(blk[16 + m], j);
            }
            WeightValue {
                v,
                scale: sc,
                min,
                d: f16(blk[0], blk[1]),
                dmin: f16(blk[2], blk[3]),
            }
        }
        GgmlType::Q6K => {
            // 128-value halves: ql bytes 64 per half (low nibbles then high nibbles), qh 32 per
            // half (2 bits per value, 4 groups of 32)
            let (h, r) = (l / 128, l % 128);
            let ql = blk[64 * h + r % 64];
            let low = if r < 64 { ql & 15 } else { ql >> 4 };
            let high = (blk[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
            WeightValue {
                v: i64::from(low | (high << 4)) - 32,
                scale: i64::from(blk[192 + l / 16] as i8),
                min: 0,
                d: f16(blk[208], blk[209]),
                dmin: 0.0,
            }
        }
        _ => unreachable!("integer types only"),
    }
}

/// The reference output element.
fn reference_output(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (t, xb) in x.chunks(32).enumerate() {
        let (dx, q) = quantize(xb);
        let vals: Vec<WeightValue> = (0..32).map(|i| weight_value(ty, row, 32 * t + i)).collect();
        let (d, dmin) = (vals[0].d, vals[0].dmin);
        // Σ scale_i * v_i * q_i (the scale is per 16 or 32 values, so this is the documented I / S)
        let main: i64 = vals
            .iter()
            .zip(q)
            .map(|(w, q)| w.scale * w.v * i64::from(q))
            .sum();
        acc = (d * dx).mul_add(main as f32, acc);
        if matches!(ty, GgmlType::Q4K | GgmlType::Q5K) {
            let sum = q.iter().map(|&q| i64::from(q)).sum::<i64>();
            acc = (-(dmin * vals[0].min as f32)).mul_add(dx * sum as f32, acc);
        }
    }
    acc
}

/// The exact product in f64 of the weight row's values and the unquantized input, and a bound
/// on how far the int8 mode may be from it: half a quantization step per activation (times the
/// weight's magnitude), plus the rounding of the block factors and of each accumulation.
fn exact_and_bound(ty: GgmlType, row: &[u8], x: &[f32]) -> (f64, f64) {
    let eps = f64::powi(2.0, -24);
    let blocks = x.len() / 32;
    let (mut exact, mut quant_err, mut terms) = (0f64, 0f64, 0f64);
    for (t, xb) in x.chunks(32).enumerate() {
        let (dx, _) = quantize(xb);
        let mut block_terms = 0f64;
        for (i, &xv) in xb.iter().enumerate() {
            let w = weight_value(ty, row, 32 * t + i);
            let value = f64::from(w.d) * (w.scale * w.v) as f64 - f64::from(w.dmin) * w.min as f64;
            exact += value * f64::from(xv);
            // |x - d q| <= d / 2 (plus the rounding of x * (1/d): a few ulps of 127)
            quant_err += value.abs() * f64::from(dx) * (0.5 + 1e-4);
            block_terms += (f64::from(w.d) * (w.scale * w.v) as f64).abs() * f64::from(dx) * 128.0
                + (f64::from(w.dmin) * w.min as f64).abs() * f64::from(dx) * 128.0;
        }
        terms += block_terms;
    }
    let gamma = (blocks as f64 + 3.0) * eps;
    (exact, quant_err + gamma * terms)
}

fn product(x: &[f32], m: &QuantMatrix, portable: bool) -> Vec<f32> {
    let mut out = vec![f32::NAN; x.len() / m.cols() * m.rows()];
    let f = if portable {
        qlinear_int8_portable
    } else {
        qlinear_int8
    };
    f(x, m, &mut out).unwrap();
    out
}

fn check(
    ty: GgmlType,
    n: usize,
    k: usize,
    rows: usize,
    rng: &mut Rng,
) -> Result<(), TestCaseError> {
    let m = random_matrix(ty, n, k, rng);
    let mut x = inputs(rows * k, rng);
    // some blocks with exact ties: 127 s sets d = s (a power of two), (j + 0.5) s / d = j + 0.5
    for block in x.chunks_mut(32) {
        if rng.next().is_multiple_of(3) {
            let s = 2f32.powi((rng.next() % 20) as i32 - 10);
            block[0] = 127.0 * s;
            for (j, v) in block.iter_mut().enumerate().skip(1).step_by(3) {
                *v = (j as f32 - 16.5) * s;
            }
        }
    }
    let want: Vec<f32> = (0..rows)
        .flat_map(|r| (0..n).map(move |a| (r, a)))
        .map(|(r, a)| reference_output(ty, m.row(a), &x[r * k..(r + 1) * k]))
        .collect();
    prop_assert_eq!(
        bits(&product(&x, &m, true)),
        bits(&want),
        "portable {}",
        ty.name()
    );
    prop_assert_eq!(
        bits(&product(&x, &m, false)),
        bits(&want),
        "default {}",
        ty.name()
    );
    for (i, &got) in want.iter().enumerate() {
        let (r, a) = (i / n, i % n);
        let (exact, bound) = exact_and_bound(ty, m.row(a), &x[r * k..(r + 1) * k]);
        let err = (f64::from(got) - exact).abs();
        prop_assert!(
            err <= bound,
            "{} {} vs exact {} (bound {})",
            ty.name(),
            got,
            exact,
            bound
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn both_paths_equal_the_reference_and_stay_near_the_exact_product(
        type_index in 0..INT_TYPES.len(), n in 1usize..20, units in 1usize..5,
        rows in 1usize..=64, seed in any::<u64>()
    ) {
        let ty = INT_TYPES[type_index];
        let k = units * ty.block_len().max(64);
        check(ty, n, k, rows, &mut Rng::new(seed))?;
    }
}

#[test]
fn large_row_counts_and_odd_weight_rows() {
    let mut rng = Rng::new(21);
    for ty in INT_TYPES {
        check(ty, 13, 512, 130, &mut rng).unwrap();
    }
}
