//! Criterion benchmarks of `linear_rows` on the shapes of a Gemma 3 270M verification forward:
//! the 262144 x 640 LM head and a 2048 x 640 MLP projection, for 1, 4, 9 and 17 input rows (a
//! draft tree of 0, 3, 8 and 16 nodes plus its root). The interesting number is the ratio of the
//! 17-row time to the 1-row time: close to 1 means the weights are streamed once per call.
//!
//! Run: `cargo bench -p hierdraft-kernels --bench linear_rows`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use hierdraft_kernels::linear_rows;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

fn bench_shape(c: &mut Criterion, name: &str, n: usize, k: usize) {
    let w = values(n * k, 1);
    let mut group = c.benchmark_group(format!("linear_rows/{name}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for rows in [1usize, 4, 9, 17] {
        let x = values(rows * k, 2);
        let mut out = vec![0f32; rows * n];
        group.throughput(Throughput::Bytes((n * k * 4) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(rows), &rows, |b, _| {
            b.iter(|| linear_rows(black_box(&x), black_box(&w), k, &mut out).unwrap())
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_shape(&mut c, "head_262144x640", 262_144, 640);
    bench_shape(&mut c, "mlp_2048x640", 2048, 640);
    c.final_summary();
}
