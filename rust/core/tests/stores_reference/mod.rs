//! Obviously-correct reference implementations for the store tests: naive scans over plain
//! vectors, plus a tiny deterministic random generator for realistic (Zipfian, repetitive) data.
#![allow(dead_code)]

use hierdraft_core::Continuation;

/// One observed continuation chain with its recency (larger = more recent).
pub struct Observation {
    pub chain: Vec<u32>,
    pub recency: u64,
}

/// Heavy-path ranking done the slow way, on prefixes of the observed chains: a "node" is a
/// non-empty prefix, its count the number of observations starting with it, its recency the
/// largest recency among those. Mirrors the ranking rule documented in `continuation.rs`.
pub fn rank(obs: &[Observation], k: usize, max_len: usize) -> Vec<Continuation> {
    let total = obs.len();
    let stats = |prefix: &[u32]| {
        let matching: Vec<&Observation> = obs
            .iter()
            .filter(|o| o.chain.len() >= prefix.len() && o.chain[..prefix.len()] == *prefix)
            .collect();
        let recency = matching.iter().map(|o| o.recency).max().unwrap_or(0);
        (matching.len(), recency)
    };
    let children = |prefix: &[u32]| {
        let mut next: Vec<u32> = obs
            .iter()
            .filter(|o| o.chain.len() > prefix.len() && o.chain[..prefix.len()] == *prefix)
            .map(|o| o.chain[prefix.len()])
            .collect();
        next.sort_unstable();
        next.dedup();
        next.into_iter()
            .map(|t| {
                let mut p = prefix.to_vec();
                p.push(t);
                p
            })
            .collect::<Vec<_>>()
    };
    // Ordering key: count, recency, then shallower, then lexicographically smaller path.
    let key = |p: &Vec<u32>| {
        let (c, r) = stats(p);
        (
            c,
            r,
            std::cmp::Reverse(p.len()),
            std::cmp::Reverse(p.clone()),
        )
    };
    let mut out = Vec::new();
    if k == 0 || max_len == 0 {
        return out;
    }
    let mut frontier: Vec<Vec<u32>> = children(&[]);
    while out.len() < k && !frontier.is_empty() {
        let best = (0..frontier.len())
            .max_by_key(|&i| key(&frontier[i]))
            .unwrap();
        let branch = frontier.swap_remove(best);
        let branch_count = stats(&branch).0;
        let mut cur = branch;
        while cur.len() < max_len {
            let kids = children(&cur);
            let Some(next) = kids.iter().max_by_key(|p| key(p)).cloned() else {
                break;
            };
            frontier.extend(kids.into_iter().filter(|p| *p != next));
            cur = next;
        }
        out.push(Continuation {
            tokens: cur,
            score: (branch_count as f64 / total as f64) as f32,
        });
    }
    out
}

/// Checks the output contract shared by all lookups.
pub fn check_contract(out: &[Continuation], k: usize, max_len: usize) {
    assert!(out.len() <= k);
    for (i, c) in out.iter().enumerate() {
        assert!(!c.tokens.is_empty() && c.tokens.len() <= max_len, "{out:?}");
        assert!(c.score > 0.0 && c.score <= 1.0, "{out:?}");
        if i > 0 {
            assert!(c.score <= out[i - 1].score, "scores not sorted: {out:?}");
        }
        for d in &out[..i] {
            assert_ne!(d.tokens, c.tokens, "duplicate chain: {out:?}");
        }
    }
}

/// SplitMix64: a small deterministic generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Approximately Zipf(1) over 0..n: rank r with probability ~ 1/(r+1).
    pub fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let x = ((n as f64 + 1.0).ln() * u).exp() - 1.0;
        (x as u64).min(n - 1)
    }
}

/// Realistic-looking documents: Zipfian tokens organised into a Zipfian phrase table (so n-grams
/// repeat like text), with some documents near-copies of earlier ones.
pub fn realistic_corpus(seed: u64, num_tokens: usize, vocab: u32) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    let phrases: Vec<Vec<u32>> = (0..20_000)
        .map(|_| {
            let len = 1 + rng.below(10) as usize;
            (0..len)
                .map(|_| rng.zipf(u64::from(vocab)) as u32)
                .collect()
        })
        .collect();
    let mut docs: Vec<Vec<u32>> = Vec::new();
    let mut total = 0;
    while total < num_tokens {
        let doc_len = 50 + rng.below(1500) as usize;
        let doc: Vec<u32> = if !docs.is_empty() && rng.below(10) == 0 {
            let src = &docs[rng.below(docs.len() as u64) as usize];
            let mut d = src.clone();
            for _ in 0..d.len() / 50 {
                let i = rng.below(d.len() as u64) as usize;
                d[i] = rng.zipf(u64::from(vocab)) as u32;
            }
            d
        } else {
            let mut d = Vec::with_capacity(doc_len);
            while d.len() < doc_len {
                d.extend_from_slice(&phrases[rng.zipf(phrases.len() as u64) as usize]);
            }
            d
        };
        total += doc.len();
        docs.push(doc);
    }
    docs
}
