//! Criterion benchmarks of the two numeric modes side by side: `qlinear` (float32 accumulation
//! over the dequantized weights) and `qlinear_int8` (int8 activations, integer dot products), on
//! the shapes of the default model (Gemma 3 270M): the 262144 x 640 Q8_0 LM head for a draft
//! tree's rows, and the body projections in their GGUF types for 1..64 rows and a 512-row
//! prompt prefill. Weights are random valid blocks (every f16 scale 2^-6).
//!
//! Run: `cargo bench -p hierdraft-kernels --bench qlinear_int8` (filter: `-- head`, `-- body`,
//! `-- int8`, `-- fp32`).

use std::hint::black_box;
use std::time::Duration;

mod support;

use criterion::{BenchmarkId, Criterion, Throughput};
use hierdraft_kernels::{has_int8_form, qlinear, qlinear_int8, GgmlType, KernelError, QuantMatrix};
use support::{inputs, matrix, BODY, HEAD};

type Kernel = fn(&[f32], &QuantMatrix, &mut [f32]) -> Result<(), KernelError>;

fn bench_shape(c: &mut Criterion, group: &str, ty: GgmlType, n: usize, k: usize, rows: &[usize]) {
    let w = matrix(ty, n, k);
    let mut g = c.benchmark_group(format!("{group}/{}_{n}x{k}", ty.name()));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &r in rows {
        let x = inputs(r * k);
        let mut out = vec![0f32; r * n];
        g.throughput(Throughput::Elements((r * n * k) as u64));
        for (mode, kernel) in [
            ("fp32", qlinear as Kernel),
            ("int8", qlinear_int8 as Kernel),
        ] {
            g.bench_with_input(BenchmarkId::new(mode, r), &r, |b, _| {
                b.iter(|| kernel(black_box(&x), black_box(&w), &mut out).unwrap())
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let (ty, n, k) = HEAD;
    bench_shape(&mut c, "head", ty, n, k, &[1, 2, 4, 8, 16, 32, 64]);
    // Float types have no integer form (the int8 mode computes them as fp32).
    for (ty, n, k) in BODY.into_iter().filter(|&(ty, _, _)| has_int8_form(ty)) {
        bench_shape(&mut c, "body", ty, n, k, &[1, 4, 16, 64, 512]);
    }
    c.final_summary();
}
