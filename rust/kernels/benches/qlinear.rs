//! Criterion benchmarks of `qlinear` (GGUF-block weights) on the shapes of a Gemma 3 270M
//! forward: the 262144 x 640 Q8_0 LM head and the body projections in the types the default
//! model stores them in, for 1..64 input rows (a verification step's draft tree) and 256 (a
//! prompt prefill). Weights are random valid blocks (fixed moderate scales).
//!
//! Run: `cargo bench -p hierdraft-kernels --bench qlinear` (filter: `-- head`, `-- body`).

use std::hint::black_box;
use std::time::Duration;

mod support;

use criterion::{BenchmarkId, Criterion, Throughput};
use hierdraft_kernels::{qlinear, GgmlType};
use support::{inputs, matrix, BODY, HEAD};

fn bench_shape(c: &mut Criterion, group: &str, ty: GgmlType, n: usize, k: usize, rows: &[usize]) {
    let w = matrix(ty, n, k);
    let name = format!("qlinear/{group}/{}_{n}x{k}", ty.name());
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &r in rows {
        let x = inputs(r * k);
        let mut out = vec![0f32; r * n];
        g.throughput(Throughput::Bytes((n * w.row_bytes()) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(r), &r, |b, _| {
            b.iter(|| qlinear(black_box(&x), black_box(&w), &mut out).unwrap())
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let decode = [1usize, 2, 4, 8, 16, 32, 64];
    let with_prefill = [1usize, 2, 4, 8, 16, 32, 64, 256];
    let (ty, n, k) = HEAD;
    bench_shape(&mut c, "head", ty, n, k, &decode);
    for (ty, n, k) in BODY {
        bench_shape(&mut c, "body", ty, n, k, &with_prefill);
    }
    c.final_summary();
}
