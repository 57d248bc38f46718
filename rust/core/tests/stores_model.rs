//! ModelStore against a brute-force scan of the sequences, online learning and concurrency.

mod stores_reference;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hierdraft_core::{Continuation, Error, ModelStore, ModelStoreBuilder, ModelStoreConfig};
use proptest::prelude::*;
use stores_reference::{check_contract, rank, Observation};

fn reference(
    seqs: &[Vec<u32>],
    c: &ModelStoreConfig,
    ctx: &[u32],
    k: usize,
    max_len: usize,
) -> Vec<Continuation> {
    let max_len = max_len.min(c.continuation_len);
    for n in (c.min_ngram..=c.max_ngram.min(ctx.len())).rev() {
        let key = &ctx[ctx.len() - n..];
        let obs: Vec<Observation> = seqs
            .iter()
            .flat_map(|s| {
                (n - 1..s.len().saturating_sub(1))
                    .filter(move |&e| &s[e + 1 - n..=e] == key)
                    .map(move |e| Observation {
                        chain: s[e + 1..(e + 1 + c.continuation_len).min(s.len())].to_vec(),
                        recency: 0,
                    })
            })
            .collect();
        if !obs.is_empty() {
            return rank(&obs, k, max_len);
        }
    }
    Vec::new()
}

fn config(
    min_ngram: usize,
    extra: usize,
    continuation_len: usize,
    top_k: usize,
) -> ModelStoreConfig {
    ModelStoreConfig {
        min_ngram,
        max_ngram: min_ngram + extra,
        continuation_len,
        top_k,
        vocab_size: None,
    }
}

fn build(c: &ModelStoreConfig, seqs: &[Vec<u32>]) -> ModelStore {
    let mut b = ModelStoreBuilder::new(c.clone()).unwrap();
    for s in seqs {
        b.add_sequence(s).unwrap();
    }
    b.build()
}

/// Scores of all one-token continuations, sorted: independent of how ties are broken.
fn first_token_scores(store: &ModelStore, ctx: &[u32]) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = store
        .lookup(ctx, 10_000, 1)
        .iter()
        .map(|c| (c.tokens[0], (c.score * 1e6).round() as u32))
        .collect();
    v.sort_unstable();
    v
}

fn seqs_strategy() -> impl Strategy<Value = Vec<Vec<u32>>> {
    proptest::collection::vec(proptest::collection::vec(0u32..5, 0..40), 0..6)
}

proptest! {
    #[test]
    fn matches_reference(seqs in seqs_strategy(), min_n in 1usize..3, extra in 0usize..3,
                         len in 1usize..6, top_k in 1usize..6,
                         ctx in proptest::collection::vec(0u32..5, 0..6),
                         k in 0usize..6, short in 0usize..6) {
        let c = config(min_n, extra, len, top_k);
        let store = build(&c, &seqs);
        let k = k.min(top_k);
        // Full-length chains: exactly the reference.
        let got = store.lookup(&ctx, k, len);
        check_contract(&got, k, len);
        prop_assert_eq!(&got, &reference(&seqs, &c, &ctx, k, len));
        // Shorter chains: a prefix of the reference (pruning kept the full-length top k).
        let got = store.lookup(&ctx, k, short);
        let want = reference(&seqs, &c, &ctx, k, short);
        prop_assert!(got.len() <= want.len() && got[..] == want[..got.len()], "{:?} vs {:?}", got, want);
        // Never more than top_k chains.
        prop_assert!(store.lookup(&ctx, 100, len).len() <= top_k);
    }

    #[test]
    fn online_adds_match_a_rebuild(seqs in seqs_strategy(), more in seqs_strategy(),
                                   ctx in proptest::collection::vec(0u32..5, 1..4)) {
        let c = config(1, 2, 4, 1000);
        let store = build(&c, &seqs);
        for s in &more {
            store.add(s).unwrap();
        }
        let all: Vec<Vec<u32>> = seqs.iter().chain(&more).cloned().collect();
        let rebuilt = build(&c, &all);
        prop_assert_eq!(store.num_keys(), rebuilt.num_keys());
        prop_assert_eq!(first_token_scores(&store, &ctx), first_token_scores(&rebuilt, &ctx));
        // An empty store that learned everything online also agrees.
        let online = ModelStore::empty(c.clone()).unwrap();
        for s in &all {
            online.add(s).unwrap();
        }
        prop_assert_eq!(first_token_scores(&online, &ctx), first_token_scores(&rebuilt, &ctx));
    }

    #[test]
    fn one_online_add_equals_building(seq in proptest::collection::vec(0u32..4, 0..60),
                                      ctx in proptest::collection::vec(0u32..4, 1..4)) {
        let c = config(1, 3, 5, 4);
        let online = ModelStore::empty(c.clone()).unwrap();
        online.add(&seq).unwrap();
        let built = build(&c, &[seq]);
        prop_assert_eq!(online.lookup(&ctx, 4, 5), built.lookup(&ctx, 4, 5));
    }
}

#[test]
fn longest_key_first_then_shorter() {
    let c = ModelStoreConfig::default();
    let store = build(&c, &[vec![1, 2, 3, 4], vec![9, 2, 3, 5], vec![8, 3, 6]]);
    assert_eq!(store.lookup(&[1, 2, 3], 4, 1)[0].tokens, vec![4]);
    assert_eq!(store.lookup(&[9, 2, 3], 4, 1)[0].tokens, vec![5]);
    // [7, 2, 3] unknown -> [2, 3]: 4 and 5 once each.
    assert_eq!(store.lookup(&[7, 2, 3], 4, 1).len(), 2);
    // [7, 7, 3] -> [3]: 4, 5, 6.
    assert_eq!(store.lookup(&[7, 7, 3], 4, 1).len(), 3);
    assert!(store.lookup(&[7], 4, 1).is_empty());
    assert!(store.lookup(&[], 4, 1).is_empty());
    assert_eq!(store.lookup(&[1], 4, 100)[0].tokens, vec![2, 3, 4]);
}

#[test]
fn overlay_segments_stay_few() {
    let store = ModelStore::empty(ModelStoreConfig::default()).unwrap();
    for i in 0..2000u32 {
        store.add(&[i % 97, i % 89, i % 83, i % 7]).unwrap();
        assert!(
            store.num_overlay_segments() <= 24,
            "{}",
            store.num_overlay_segments()
        );
    }
}

#[test]
fn validates_config_and_tokens() {
    for bad in [
        config(0, 2, 4, 4),
        config(1, 40, 4, 4),
        config(1, 2, 0, 4),
        config(1, 2, 4, 0),
    ] {
        assert!(matches!(
            ModelStoreBuilder::new(bad.clone()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ModelStore::empty(bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    let c = ModelStoreConfig {
        vocab_size: Some(10),
        ..Default::default()
    };
    let mut b = ModelStoreBuilder::new(c.clone()).unwrap();
    assert!(matches!(
        b.add_sequence(&[1, 10]),
        Err(Error::TokenOutOfVocab {
            token: 10,
            vocab_size: 10
        })
    ));
    let store = b.build();
    assert_eq!(store.num_keys(), 0);
    assert!(matches!(
        store.add(&[11]),
        Err(Error::TokenOutOfVocab {
            token: 11,
            vocab_size: 10
        })
    ));
    let open = ModelStore::empty(ModelStoreConfig::default()).unwrap();
    assert!(matches!(
        open.add(&[1, u32::MAX]),
        Err(Error::ReservedToken { .. })
    ));
}

/// Readers draft while one writer adds sequences [1, 2, 100 + i]; every lookup must reflect
/// exactly the first n additions for some n that never decreases.
#[test]
fn readers_see_consistent_snapshots_while_a_writer_adds() {
    const ADDS: u32 = 300;
    let c = ModelStoreConfig {
        top_k: 1000,
        ..Default::default()
    };
    let store = Arc::new(ModelStore::empty(c).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut last = 0;
                let mut checks = 0u64;
                while !done.load(Ordering::Acquire) || checks == 0 {
                    let got = store.lookup(&[1, 2], 10_000, 1);
                    let n = got.len();
                    assert!(n >= last, "went back from {last} to {n}");
                    let mut tokens: Vec<u32> = got.iter().map(|c| c.tokens[0]).collect();
                    tokens.sort_unstable();
                    assert_eq!(tokens, (100..100 + n as u32).collect::<Vec<_>>());
                    for c in &got {
                        assert_eq!(c.score, (1.0 / n as f64) as f32);
                    }
                    last = n;
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for i in 0..ADDS {
        store.add(&[1, 2, 100 + i]).unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(store.lookup(&[1, 2], 10_000, 1).len(), ADDS as usize);
}

#[test]
fn send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ModelStore>();
    check::<ModelStoreBuilder>();
}

#[test]
fn huge_k_and_max_len_are_fine() {
    let store = build(&ModelStoreConfig::default(), &[vec![1, 2, 3, 1, 2, 4]]);
    let got = store.lookup(&[1, 2], usize::MAX, usize::MAX);
    assert_eq!(got.len(), 2);
    check_contract(&got, usize::MAX, 6);
}
