//! ContextStore against a brute-force scan of the sequence.

mod stores_reference;

use hierdraft_core::context_store::DEFAULT_MAX_OCCURRENCES;
use hierdraft_core::{ContextStore, Continuation, Error};
use proptest::prelude::*;
use stores_reference::{check_contract, rank, Observation, Rng};

fn reference(
    seq: &[u32],
    min_n: usize,
    max_n: usize,
    k: usize,
    max_len: usize,
) -> Vec<Continuation> {
    let len = seq.len();
    for n in (min_n..=max_n.min(len)).rev() {
        let suffix = &seq[len - n..];
        let obs: Vec<Observation> = (n - 1..len - 1)
            .rev()
            .filter(|&e| &seq[e + 1 - n..=e] == suffix)
            .take(DEFAULT_MAX_OCCURRENCES)
            .map(|e| Observation {
                chain: seq[e + 1..(e + 1 + max_len).min(len)].to_vec(),
                recency: e as u64,
            })
            .collect();
        if !obs.is_empty() {
            return rank(&obs, k, max_len);
        }
    }
    Vec::new()
}

fn repetitive(unit: &[u32], reps: usize, noise: &[(usize, u32)]) -> Vec<u32> {
    let mut s: Vec<u32> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * reps)
        .collect();
    for &(i, t) in noise {
        if !s.is_empty() {
            let i = i % s.len();
            s[i] = t;
        }
    }
    s
}

proptest! {
    #[test]
    fn matches_reference_random(seq in proptest::collection::vec(0u32..6, 0..120),
                                min_n in 1usize..3, extra in 0usize..4,
                                k in 0usize..6, max_len in 0usize..7) {
        let max_n = min_n + extra;
        let store = ContextStore::with_tokens(min_n, max_n, &seq).unwrap();
        let got = store.lookup(k, max_len);
        check_contract(&got, k, max_len);
        prop_assert_eq!(got, reference(&seq, min_n, max_n, k, max_len));
    }

    #[test]
    fn matches_reference_repetitive(unit in proptest::collection::vec(0u32..50, 1..8),
                                    reps in 1usize..40,
                                    noise in proptest::collection::vec((0usize..1000, 0u32..50), 0..6),
                                    k in 1usize..9, max_len in 1usize..9) {
        let seq = repetitive(&unit, reps, &noise);
        let store = ContextStore::with_tokens(1, 4, &seq).unwrap();
        let got = store.lookup(k, max_len);
        check_contract(&got, k, max_len);
        prop_assert_eq!(got, reference(&seq, 1, 4, k, max_len));
    }

    #[test]
    fn incremental_extend_equals_one_shot(seq in proptest::collection::vec(0u32..5, 0..80),
                                          cuts in proptest::collection::vec(0usize..80, 0..5)) {
        let one = ContextStore::with_tokens(1, 4, &seq).unwrap();
        let mut inc = ContextStore::default();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(seq.len())).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for c in cuts.into_iter().chain([seq.len()]) {
            inc.extend(&seq[start..c]);
            start = c;
            let prefix = ContextStore::with_tokens(1, 4, &seq[..c]).unwrap();
            prop_assert_eq!(inc.lookup(4, 5), prefix.lookup(4, 5));
        }
        prop_assert_eq!(inc.tokens(), one.tokens());
        prop_assert_eq!(inc.lookup(8, 8), one.lookup(8, 8));
    }
}

#[test]
fn long_realistic_sequence_matches_reference() {
    let mut rng = Rng(7);
    let mut seq = Vec::new();
    for _ in 0..3000 {
        seq.push(rng.zipf(300) as u32);
    }
    let mut store = ContextStore::default();
    for chunk in seq.chunks(37) {
        store.extend(chunk);
        assert_eq!(store.lookup(8, 8), reference(store.tokens(), 1, 4, 8, 8));
    }
    assert_eq!(store.len(), 3000);
}

#[test]
fn uses_only_the_most_recent_occurrences() {
    // 200 occurrences of [1] followed by 2, then 100 followed by 3: the newest 64 all say 3.
    let mut seq = Vec::new();
    for _ in 0..200 {
        seq.extend([1, 2]);
    }
    for _ in 0..100 {
        seq.extend([1, 3]);
    }
    seq.push(1);
    let store = ContextStore::with_tokens(1, 1, &seq).unwrap();
    let got = store.lookup(4, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tokens, vec![3]);
    assert_eq!(got[0].score, 1.0);
}

#[test]
fn longest_suffix_wins_and_recency_breaks_ties() {
    // "5 6 7" occurred once followed by 8; "6 7" also occurred followed by 9 (more often).
    let seq = [6, 7, 9, 6, 7, 9, 5, 6, 7, 8, 0, 5, 6, 7];
    let store = ContextStore::new(1, 3).map(|mut s| {
        s.extend(&seq);
        s
    });
    let got = store.unwrap().lookup(3, 2);
    assert_eq!(got[0].tokens, vec![8, 0]);
    // Ties on count go to the most recent occurrence.
    let store = ContextStore::with_tokens(1, 1, &[4, 1, 4, 2, 4]).unwrap();
    let got = store.lookup(2, 1);
    assert_eq!(
        got.iter().map(|c| c.tokens[0]).collect::<Vec<_>>(),
        vec![2, 1]
    );
}

#[test]
fn empty_and_degenerate_inputs() {
    let store = ContextStore::default();
    assert!(store.lookup(8, 8).is_empty());
    let store = ContextStore::with_tokens(1, 4, &[1, 2, 3]).unwrap();
    assert!(store.lookup(8, 8).is_empty());
    assert!(store.lookup(0, 8).is_empty());
    let store = ContextStore::with_tokens(1, 4, &[u32::MAX, u32::MAX]).unwrap();
    assert_eq!(store.lookup(8, 8)[0].tokens, vec![u32::MAX]);
}

#[test]
fn rejects_bad_ngram_ranges() {
    for (lo, hi) in [(0, 4), (3, 2), (1, 1000)] {
        assert!(matches!(
            ContextStore::new(lo, hi),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ContextStore>();
}

#[test]
fn huge_k_and_max_len_are_fine() {
    let store = ContextStore::with_tokens(1, 4, &[1, 2, 3, 1, 2, 4, 1, 2]).unwrap();
    let got = store.lookup(usize::MAX, usize::MAX);
    assert_eq!(got.len(), 2);
    check_contract(&got, usize::MAX, usize::MAX);
}
