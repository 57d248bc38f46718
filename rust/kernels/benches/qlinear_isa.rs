//! What the AVX-512 path of `qlinear` (and of `qlinear_int8`, the int8 numeric mode) brings over
//! the AVX2 path on this CPU, or (`vnni`) what the AVX-512 VNNI path brings over the AVX-512
//! one: the two are called alternately on the same inputs (so both see the same state of a
//! shared machine) and the median of the per-pair time ratios is printed, per matrix shape of the
//! default model (Gemma 3 270M: the Q8_0 LM head and the body projections in their GGUF types,
//! plus Q4_0 and Q5_K on the same shapes) and input-row count.
//! Both paths give the same bits (the kernels' tests check it); only their speed differs.
//!
//! Run: `cargo bench -p hierdraft-kernels --bench qlinear_isa [-- fp32|int8] [vnni]` (one mode,
//! or both by default; a path the CPU lacks runs its best one, and the ratios are then about 1).

use std::hint::black_box;
use std::time::Instant;

mod support;

use hierdraft_kernels::{qlinear_int8_on, qlinear_on, GgmlType, Isa, KernelError, QuantMatrix};
use support::{inputs, matrix, BODY, HEAD};

/// Pairs timed per shape and row count (after one untimed pair).
const PAIRS: usize = 41;

/// A product on a given path (`qlinear_on` or `qlinear_int8_on`).
type Product = fn(Isa, &[f32], &QuantMatrix, &mut [f32]) -> Result<(), KernelError>;

fn seconds(product: Product, isa: Isa, x: &[f32], w: &QuantMatrix, out: &mut [f32]) -> f64 {
    let start = Instant::now();
    product(isa, black_box(x), black_box(w), out).expect("shapes");
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The two paths timed against each other: (baseline, candidate).
type Paths = (Isa, Isa);

fn compare(product: Product, paths: Paths, ty: GgmlType, n: usize, k: usize, rows: &[usize]) {
    let (base, candidate) = paths;
    let w = matrix(ty, n, k);
    for &r in rows {
        let x = inputs(r * k);
        let mut out = vec![0f32; r * n];
        let (mut narrow, mut wide, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for pair in 0..=PAIRS {
            // Alternate which path goes first.
            let (a, b) = if pair % 2 == 0 {
                let a = seconds(product, base, &x, &w, &mut out);
                (a, seconds(product, candidate, &x, &w, &mut out))
            } else {
                let b = seconds(product, candidate, &x, &w, &mut out);
                (seconds(product, base, &x, &w, &mut out), b)
            };
            if pair > 0 {
                narrow.push(a);
                wide.push(b);
                ratio.push(b / a);
            }
        }
        println!(
            "| {} {n}x{k} | {r} | {:.1} | {:.1} | {:.3} |",
            ty.name(),
            median(narrow) * 1e6,
            median(wide) * 1e6,
            median(ratio)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only = |mode: &str| args.iter().any(|a| a == mode);
    let all = !only("fp32") && !only("int8");
    let paths: Paths = if only("vnni") {
        (Isa::Avx512, Isa::Avx512Vnni)
    } else {
        (Isa::Avx2, Isa::Avx512)
    };
    println!("path on this CPU: {:?}", Isa::detect());
    for (mode, product, rows) in [
        (
            "fp32",
            qlinear_on as Product,
            &[1usize, 2, 3, 4, 5, 6, 8][..],
        ),
        (
            "int8",
            qlinear_int8_on as Product,
            &[1usize, 2, 3, 4, 8, 16][..],
        ),
    ] {
        if !all && !only(mode) {
            continue;
        }
        println!("\n{mode} numeric mode");
        let (a, b) = (format!("{:?}", paths.0), format!("{:?}", paths.1));
        println!("| matrix | rows | {a} p50 us | {b} p50 us | paired ratio ({b} / {a}) |");
        println!("|---|---:|---:|---:|---:|");
        let (ty, n, k) = HEAD;
        compare(product, paths, ty, n, k, rows);
        for &(ty, n, k) in &BODY[..8] {
            compare(product, paths, ty, n, k, rows);
        }
    }
}
