//! Criterion benchmarks of the hierdraft core on synthetic, text-like token streams.
//!
//! Measured:
//! - `propose/{hierarchical,context,model,corpus}`: one decoding step of a request, i.e.
//!   `DraftSession::accept` of the next 1-3 tokens of its continuation and then `propose`
//!   (lookups + tree build), budget 16, max depth 8, with all three levels and with each level
//!   alone, over a corpus index of 20M tokens (override with `HIERDRAFT_BENCH_CORPUS_TOKENS`);
//! - `corpus_lookup_step/{fresh,continuing}/occurrences_{256,32}`: the corpus lookup of such a
//!   step alone, from scratch (`CorpusIndex::lookup`) and continuing from the request's last
//!   match (`CorpusIndex::lookup_continuing`, what a session does), on the same contexts, with
//!   the default occurrence cap (8 chains) and the vLLM proposer's (32 occurrences, 1 chain);
//! - `context_store/extend_per_token`: `ContextStore::extend` one token at a time;
//! - `corpus_index/build_1M`: suffix-array build throughput.
//!
//! Criterion reports means; a plain timing loop at the end prints p50 / p90 / p99 of a decoding step
//! per configuration, plus the 20M-token build throughput and bytes per token
//! (skip it with `HIERDRAFT_BENCH_PERCENTILES=0`).
//!
//! Token streams are generated deterministically (no downloads): a Zipfian vocabulary of 32k ids,
//! a Zipf-ranked book of 20k phrases (2-12 tokens) that documents mostly consist of, and free
//! Zipfian tokens in between — so lookups see the repeated n-grams of real text instead of the
//! near-certain misses of uniform random ids.
//!
//! Run: `cargo bench -p hierdraft-core --bench drafting`.

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use hierdraft_core::{
    ContextStore, CorpusIndex, DraftSession, DraftTree, DrafterConfig, HierarchicalDrafter, Level,
    MatchHint, ModelStoreBuilder, ModelStoreConfig,
};

const VOCAB: usize = 32_000;
const PHRASES: usize = 20_000;
const DEFAULT_CORPUS_TOKENS: usize = 20_000_000;
const MODEL_TOKENS: usize = 1_000_000;
const PROMPTS: usize = 512;
/// Tokens each request generates before it starts over.
const CONTINUATION: usize = 1024;

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Zipf(s) over ranks `0..n`, sampled by bisection on the CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Text-like token streams: phrases from a Zipf-ranked phrase book, with free tokens between.
struct TextGen {
    tokens: Zipf,
    phrase_rank: Zipf,
    phrases: Vec<Vec<u32>>,
}

impl TextGen {
    fn new(seed: u64) -> Self {
        let tokens = Zipf::new(VOCAB, 1.07);
        let mut rng = Rng(seed);
        let phrases = (0..PHRASES)
            .map(|_| {
                let len = 2 + rng.below(11);
                (0..len).map(|_| Self::token(&tokens, &mut rng)).collect()
            })
            .collect();
        TextGen {
            tokens,
            phrase_rank: Zipf::new(PHRASES, 1.0),
            phrases,
        }
    }

    /// A Zipf rank mapped to a scattered id (a bijection of `0..VOCAB`).
    fn token(zipf: &Zipf, rng: &mut Rng) -> u32 {
        ((zipf.sample(rng) as u64 * 2_654_435_761) % VOCAB as u64) as u32
    }

    fn document(&self, rng: &mut Rng, len: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(len + 12);
        while out.len() < len {
            if rng.unit() < 0.7 {
                out.extend_from_slice(&self.phrases[self.phrase_rank.sample(rng)]);
            } else {
                for _ in 0..1 + rng.below(4) {
                    out.push(Self::token(&self.tokens, rng));
                }
            }
        }
        out.truncate(len);
        out
    }

    /// Documents of 200..2000 tokens until `total` tokens.
    fn documents(&self, rng: &mut Rng, total: usize) -> Vec<Vec<u32>> {
        let mut docs = Vec::new();
        let mut n = 0;
        while n < total {
            let len = (200 + rng.below(1800)).min(total - n).max(1);
            docs.push(self.document(rng, len));
            n += len;
        }
        docs
    }
}

struct BenchData {
    corpus: Arc<CorpusIndex>,
    model: Arc<hierdraft_core::ModelStore>,
    prompts: Vec<Vec<u32>>,
    /// What each request generates after its prompt.
    continuations: Vec<Vec<u32>>,
    corpus_build: Duration,
    model_build: Duration,
}

fn corpus_tokens() -> usize {
    if std::env::args().any(|a| a == "--test") {
        return 200_000;
    }
    std::env::var("HIERDRAFT_BENCH_CORPUS_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CORPUS_TOKENS)
}

fn data() -> &'static BenchData {
    static DATA: OnceLock<BenchData> = OnceLock::new();
    DATA.get_or_init(|| {
        let gen = TextGen::new(1);
        let total = corpus_tokens();
        eprintln!("generating a {total}-token corpus and a {MODEL_TOKENS}-token model store...");
        let docs = gen.documents(&mut Rng(2), total);
        let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
        let t = Instant::now();
        let corpus = CorpusIndex::build(&refs, Some(VOCAB as u32)).expect("corpus build");
        let corpus_build = t.elapsed();
        drop(docs);

        let t = Instant::now();
        let mut builder = ModelStoreBuilder::new(ModelStoreConfig {
            vocab_size: Some(VOCAB as u32),
            ..ModelStoreConfig::default()
        })
        .expect("model config");
        for seq in gen.documents(&mut Rng(3), MODEL_TOKENS) {
            builder.add_sequence(&seq).expect("model sequence");
        }
        let model = builder.build();
        let model_build = t.elapsed();

        let mut rng = Rng(4);
        let prompts = (0..PROMPTS)
            .map(|_| {
                let len = 256 + rng.below(768);
                gen.document(&mut rng, len)
            })
            .collect();
        let continuations = (0..PROMPTS)
            .map(|_| gen.document(&mut rng, CONTINUATION))
            .collect();
        BenchData {
            corpus: Arc::new(corpus),
            model: Arc::new(model),
            prompts,
            continuations,
            corpus_build,
            model_build,
        }
    })
}

/// The configurations compared: all levels, then each level alone.
fn configs() -> Vec<(&'static str, Vec<Level>)> {
    vec![
        ("hierarchical", Level::ALL.to_vec()),
        ("context", vec![Level::Context]),
        ("model", vec![Level::Model]),
        ("corpus", vec![Level::Corpus]),
    ]
}

/// The tokens request `i` accepts at the step after `*pos` of its continuation (1 to 3, as
/// verification does), advancing `*pos`, and whether the request starts over first (its
/// continuation has ended).
fn next_accepted(i: usize, pos: &mut usize) -> (bool, &'static [u32]) {
    let continuation = &data().continuations[i];
    let take = 1 + *pos % 3;
    let restart = *pos + take > continuation.len();
    if restart {
        *pos = 0;
    }
    let tokens = &continuation[*pos..*pos + take];
    *pos += take;
    (restart, tokens)
}

/// The benchmark's requests being decoded, one step at a time, round robin: each step accepts
/// the next tokens of the request's continuation, so every proposal sees its request's context
/// one step longer, as in decoding. A request whose continuation ends starts over.
struct Decoding {
    drafter: HierarchicalDrafter,
    sessions: Vec<(DraftSession, usize)>,
    next: usize,
}

impl Decoding {
    fn new(order: Vec<Level>) -> Self {
        let d = data();
        let config = DrafterConfig {
            order,
            budget: 16,
            max_depth: 8,
            ..DrafterConfig::default()
        };
        let drafter =
            HierarchicalDrafter::new(config, Some(d.model.clone()), Some(d.corpus.clone()))
                .expect("drafter config");
        let sessions = d
            .prompts
            .iter()
            .map(|p| (drafter.start(p).expect("prompt in vocabulary"), 0))
            .collect();
        Decoding {
            drafter,
            sessions,
            next: 0,
        }
    }

    fn step(&mut self) -> DraftTree {
        let i = self.next;
        self.next = (i + 1) % self.sessions.len();
        let (session, pos) = &mut self.sessions[i];
        let (restart, tokens) = next_accepted(i, pos);
        if restart {
            *session = self
                .drafter
                .start(&data().prompts[i])
                .expect("prompt in vocabulary");
        }
        session.accept(tokens).expect("tokens in vocabulary");
        session.propose()
    }
}

fn bench_propose(c: &mut Criterion) {
    let mut group = c.benchmark_group("propose");
    for (name, order) in configs() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut decoding = Decoding::new(order.clone());
            b.iter(|| black_box(decoding.step()))
        });
    }
    group.finish();
}

/// The corpus lookups of decoding steps (the contexts of [`Decoding`]), from scratch and with each
/// request's hint, reading at most 256 occurrences (the index's default) or 32 (the vLLM
/// proposer's, which takes one chain per level).
fn bench_corpus_step(c: &mut Criterion) {
    let d = data();
    let mut group = c.benchmark_group("corpus_lookup_step");
    for (occurrences, chains) in [(256, 8), (32, 1)] {
        let mut corpus = (*d.corpus).clone();
        corpus.set_max_occurrences(occurrences);
        for name in ["fresh", "continuing"] {
            let id = BenchmarkId::new(name, format!("occurrences_{occurrences}"));
            group.bench_function(id, |b| {
                let mut requests: Vec<(Vec<u32>, usize, MatchHint)> = d
                    .prompts
                    .iter()
                    .map(|p| (p.clone(), 0, MatchHint::default()))
                    .collect();
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % requests.len();
                    let (context, pos, hint) = &mut requests[i];
                    let (restart, tokens) = next_accepted(i, pos);
                    if restart {
                        *context = d.prompts[i].clone();
                    }
                    context.extend_from_slice(tokens);
                    if name == "fresh" {
                        black_box(corpus.lookup(context, chains, 8))
                    } else {
                        black_box(corpus.lookup_continuing(context, chains, 8, hint))
                    }
                })
            });
        }
    }
    group.finish();
}

fn bench_extend(c: &mut Criterion) {
    const CHUNK: usize = 2048;
    let stream = TextGen::new(5).document(&mut Rng(6), 1 << 16);
    let mut group = c.benchmark_group("context_store");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.bench_function("extend_per_token", |b| {
        let mut offset = 0;
        b.iter(|| {
            // A fresh request of CHUNK tokens, appended one token at a time.
            let mut store = ContextStore::new(1, 4).expect("valid n-gram range");
            offset = (offset + CHUNK) % (stream.len() - CHUNK);
            for t in &stream[offset..offset + CHUNK] {
                store.extend(std::slice::from_ref(t));
            }
            black_box(store.len())
        })
    });
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    const TOKENS: usize = 1_000_000;
    let docs = TextGen::new(7).documents(&mut Rng(8), TOKENS);
    let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
    let mut group = c.benchmark_group("corpus_index");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(TOKENS as u64));
    group.bench_function("build_1M", |b| {
        b.iter(|| black_box(CorpusIndex::build(&refs, Some(VOCAB as u32)).expect("build")))
    });
    group.finish();
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Latency distribution of a decoding step (accept + propose), plus the one-off build numbers.
fn percentiles() {
    const CALLS: usize = 20_000;
    let d = data();
    println!();
    println!(
        "corpus index: {} tokens in {} documents, built in {:.2} s ({:.2} M tokens/s), {:.2} bytes/token",
        d.corpus.num_tokens(),
        d.corpus.num_documents(),
        d.corpus_build.as_secs_f64(),
        d.corpus.num_tokens() as f64 / d.corpus_build.as_secs_f64() / 1e6,
        d.corpus.bytes_per_token()
    );
    println!(
        "model store: {} keys from {MODEL_TOKENS} tokens, built in {:.2} s",
        d.model.num_keys(),
        d.model_build.as_secs_f64()
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "propose", "p50 us", "p90 us", "p99 us", "max us", "mean us", "mean nodes"
    );
    for (name, order) in configs() {
        let mut decoding = Decoding::new(order);
        for _ in 0..200 {
            black_box(decoding.step());
        }
        let mut times = Vec::with_capacity(CALLS);
        let mut nodes = 0usize;
        for _ in 0..CALLS {
            let t = Instant::now();
            let tree = black_box(decoding.step());
            times.push(t.elapsed().as_secs_f64() * 1e6);
            nodes += tree.len();
        }
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>11.2}",
            quantile(&times, 0.5),
            quantile(&times, 0.9),
            quantile(&times, 0.99),
            times[times.len() - 1],
            mean,
            nodes as f64 / CALLS as f64
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_propose(&mut c);
    bench_corpus_step(&mut c);
    bench_extend(&mut c);
    bench_build(&mut c);
    c.final_summary();
    let test_mode = std::env::args().any(|a| a == "--test" || a == "--list");
    let wanted = std::env::var("HIERDRAFT_BENCH_PERCENTILES").map_or(true, |v| v != "0");
    if wanted && !test_mode {
        percentiles();
    }
}
