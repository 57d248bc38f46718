//! Criterion benchmarks of the attention kernel on the shapes of a Gemma 3 270M forward: 4 query
//! heads sharing one key/value head of 256 values, for 1, 8 and 16 query rows (a plain step and
//! draft trees) over 200 and 1000 cached keys, with a tree mask (every key visible), as the
//! verification forward calls it.
//!
//! Run: `cargo bench -p hierdraft-kernels --bench attention`.

use std::hint::black_box;
use std::time::Duration;

mod support;

use criterion::{BenchmarkId, Criterion};
use hierdraft_kernels::{attention, AttentionDims, KvView, Scoring, Visibility};
use support::inputs;

const HEADS: usize = 4;
const DIM: usize = 256;

/// One KV head's `keys` rows, stored one after the other.
fn view(data: &[f32], keys: usize) -> KvView<'_> {
    KvView {
        data,
        head_stride: keys * DIM,
        row_stride: DIM,
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for keys in [200usize, 1000] {
        let mut g = c.benchmark_group(format!("attention/gemma3_{HEADS}x{DIM}/keys_{keys}"));
        g.sample_size(20).measurement_time(Duration::from_secs(2));
        let (k, v) = (inputs(keys * DIM), inputs(keys * DIM));
        for queries in [1usize, 8, 16] {
            let q = inputs(HEADS * queries * DIM);
            let mask = vec![true; queries * keys];
            let mut out = vec![0f32; HEADS * queries * DIM];
            let dims = AttentionDims {
                heads: HEADS,
                kv_heads: 1,
                queries,
                keys,
                dim: DIM,
            };
            let scoring = Scoring {
                scaling: 1.0 / 16.0,
                softcap: None,
            };
            g.bench_with_input(BenchmarkId::from_parameter(queries), &queries, |b, _| {
                b.iter(|| {
                    attention(
                        black_box(&q),
                        view(&k, keys),
                        view(&v, keys),
                        dims,
                        Visibility::Mask(&mask),
                        scoring,
                        &mut out,
                    )
                    .unwrap()
                })
            });
        }
        g.finish();
    }
    c.final_summary();
}
