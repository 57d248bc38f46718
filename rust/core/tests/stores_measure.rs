//! Throughput, latency and draft-quality measurements of the stores on realistic synthetic data.
//! Ignored by default (numbers, not pass/fail: timing belongs to benchmarks); run with
//! `cargo test -p hierdraft-core --release --test stores_measure -- --ignored --nocapture`.
//! `HIERDRAFT_MEASURE_TOKENS` sets the corpus size (default 20M).

mod stores_reference;

use std::time::Instant;

use hierdraft_core::{ContextStore, CorpusIndex, ModelStoreBuilder, ModelStoreConfig};
use stores_reference::{realistic_corpus, Rng};

fn percentiles(mut ns: Vec<u128>) -> String {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!(
        "p50 {:.2} us, p99 {:.2} us, max {:.2} us",
        p(0.5),
        p(0.99),
        p(1.0)
    )
}

fn contexts(docs: &[Vec<u32>], n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let d = &docs[rng.below(docs.len() as u64) as usize];
            let end = 1 + rng.below(d.len() as u64) as usize;
            let mut ctx = d[end.saturating_sub(32)..end].to_vec();
            // Perturb so that not every context matches its full 16 tokens.
            let i = rng.below(ctx.len() as u64) as usize;
            ctx[i] = rng.zipf(262_144) as u32;
            ctx
        })
        .collect()
}

#[test]
#[ignore]
fn measure_stores() {
    let tokens: usize = std::env::var("HIERDRAFT_MEASURE_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000);
    let t = Instant::now();
    let docs = realistic_corpus(42, tokens, 262_144);
    let n: usize = docs.iter().map(Vec::len).sum();
    println!(
        "generated {n} tokens in {} docs in {:.2?}",
        docs.len(),
        t.elapsed()
    );

    let t = Instant::now();
    let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
    let index = CorpusIndex::build(&refs, Some(262_144)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "corpus build: {:.2} s, {:.2} M tokens/s ({} rayon threads), {:.3} bytes/token",
        secs,
        n as f64 / secs / 1e6,
        rayon::current_num_threads(),
        index.bytes_per_token()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.hdc");
    let t = Instant::now();
    index.save(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "corpus save: {:.2?}, {} bytes = {:.3} bytes/token",
        t.elapsed(),
        size,
        size as f64 / n as f64
    );
    drop(index);
    let t = Instant::now();
    let index = CorpusIndex::load(&path).unwrap();
    println!(
        "corpus load (mmap + checksum + validation): {:.2?}",
        t.elapsed()
    );

    let ctxs = contexts(&docs, 20_000, 1);
    let mut sink = 0usize;
    for ctx in &ctxs[..2000] {
        sink += index.lookup(ctx, 8, 8).len();
    }
    for (k, max_len, occ) in [(8, 8, 256), (8, 8, 64), (4, 4, 256)] {
        let mut idx = index.clone();
        idx.set_max_occurrences(occ);
        let times: Vec<u128> = ctxs
            .iter()
            .map(|ctx| {
                let t = Instant::now();
                sink += idx.lookup(ctx, k, max_len).len();
                t.elapsed().as_nanos()
            })
            .collect();
        println!(
            "corpus lookup k={k} max_len={max_len} max_occurrences={occ}: {}",
            percentiles(times)
        );
    }
    let random: Vec<Vec<u32>> = {
        let mut rng = Rng(3);
        (0..5000)
            .map(|_| (0..16).map(|_| rng.below(262_144) as u32).collect())
            .collect()
    };
    let times: Vec<u128> = random
        .iter()
        .map(|ctx| {
            let t = Instant::now();
            sink += index.lookup(ctx, 8, 8).len();
            t.elapsed().as_nanos()
        })
        .collect();
    println!(
        "corpus lookup, uniform random contexts: {}",
        percentiles(times)
    );

    // Context store: a long request.
    let request: Vec<u32> = docs
        .iter()
        .take(40)
        .flatten()
        .copied()
        .take(20_000)
        .collect();
    let t = Instant::now();
    let mut store = ContextStore::default();
    for chunk in request.chunks(4) {
        store.extend(chunk);
    }
    println!(
        "context extend: {:.1} ns/token over {} tokens",
        t.elapsed().as_nanos() as f64 / request.len() as f64,
        request.len()
    );
    let mut store = ContextStore::default();
    let mut times = Vec::new();
    for chunk in request.chunks(4) {
        store.extend(chunk);
        let t = Instant::now();
        sink += store.lookup(8, 8).len();
        times.push(t.elapsed().as_nanos());
    }
    println!(
        "context lookup (k=8, max_len=8) while growing to 20k tokens: {}",
        percentiles(times)
    );

    // Model store from 2M tokens of "model outputs".
    let m_docs = &docs[..docs.len().min(2_000)];
    let m_tokens: usize = m_docs.iter().map(Vec::len).sum();
    let t = Instant::now();
    let mut b = ModelStoreBuilder::new(ModelStoreConfig::default()).unwrap();
    for d in m_docs {
        b.add_sequence(d).unwrap();
    }
    let model = b.build();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "model build: {m_tokens} tokens, {} keys in {:.2} s ({:.2} M tokens/s)",
        model.num_keys(),
        secs,
        m_tokens as f64 / secs / 1e6
    );
    let times: Vec<u128> = ctxs
        .iter()
        .map(|ctx| {
            let t = Instant::now();
            sink += model.lookup(ctx, 8, 6).len();
            t.elapsed().as_nanos()
        })
        .collect();
    println!("model lookup (frozen): {}", percentiles(times));
    let t = Instant::now();
    for d in docs[docs.len() - 200..].iter() {
        model.add(&d[..d.len().min(500)]).unwrap();
    }
    println!(
        "model add: {:.1} us per 500-token request, {} overlay segments",
        t.elapsed().as_secs_f64() * 1e6 / 200.0,
        model.num_overlay_segments()
    );
    let times: Vec<u128> = ctxs
        .iter()
        .map(|ctx| {
            let t = Instant::now();
            sink += model.lookup(ctx, 8, 6).len();
            t.elapsed().as_nanos()
        })
        .collect();
    println!("model lookup (with overlay): {}", percentiles(times));
    assert!(sink > 0);
}

/// Draft quality of the corpus level against its cap on occurrences read per lookup, on
/// documents held out of the index: at random points of each, the tokens that really follow are
/// compared with the continuations the lookup proposes.
#[test]
#[ignore]
fn measure_corpus_occurrence_cap() {
    let tokens: usize = std::env::var("HIERDRAFT_MEASURE_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000);
    let mut docs = realistic_corpus(42, tokens, 262_144);
    let held_out = docs.split_off(docs.len() - docs.len() / 20);
    let index = CorpusIndex::from_documents(docs, Some(262_144)).unwrap();
    let mut rng = Rng(5);
    let points: Vec<(&[u32], &[u32])> = (0..20_000)
        .filter_map(|_| {
            let d = &held_out[rng.below(held_out.len() as u64) as usize];
            let p = 1 + rng.below(d.len().saturating_sub(9).max(1) as u64) as usize;
            (p + 8 <= d.len()).then(|| (&d[p.saturating_sub(32)..p], &d[p..p + 8]))
        })
        .collect();
    println!(
        "{} held-out documents, {} points; k = 8 chains of <= 8 tokens",
        held_out.len(),
        points.len()
    );
    println!(concat!(
        "cap   next token in chains  in chain 1  ",
        "accepted (tree)  accepted (chain 1)  same as cap 256"
    ));
    let with_cap = |cap: usize| {
        let mut idx = index.clone();
        idx.set_max_occurrences(cap);
        idx
    };
    let reference = with_cap(256);
    let baseline: Vec<_> = points
        .iter()
        .map(|(c, _)| reference.lookup(c, 8, 8))
        .collect();
    for cap in [256, 128, 96, 64, 32, 16] {
        let idx = with_cap(cap);
        let (mut any, mut top, mut accepted, mut best, mut same) = (0, 0, 0, 0, 0);
        for ((ctx, truth), base) in points.iter().zip(&baseline) {
            let found = idx.lookup(ctx, 8, 8);
            // Tokens a verifier would accept from each chain: the prefix agreeing with the truth.
            let agree = |c: &hierdraft_core::Continuation| {
                c.tokens
                    .iter()
                    .zip(*truth)
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            let lengths: Vec<usize> = found.iter().map(agree).collect();
            any += usize::from(lengths.iter().any(|&l| l > 0));
            top += usize::from(lengths.first().is_some_and(|&l| l > 0));
            accepted += lengths.iter().copied().max().unwrap_or(0);
            best += lengths.first().copied().unwrap_or(0);
            same += usize::from(found == *base);
        }
        let n = points.len() as f64;
        println!(
            "{cap:<5} {:>20.4} {:>11.4} {:>16.4} {:>19.4} {:>16.4}",
            any as f64 / n,
            top as f64 / n,
            accepted as f64 / n,
            best as f64 / n,
            same as f64 / n
        );
    }
}
