//! CorpusIndex against a brute-force scan of the documents.

mod stores_reference;

use hierdraft_core::corpus_index::{DEFAULT_MAX_OCCURRENCES, MAX_CONTEXT_MATCH, SEPARATOR};
use hierdraft_core::{Continuation, CorpusIndex, Error};
use proptest::prelude::*;
use stores_reference::{check_contract, rank, realistic_corpus, Observation, Rng};

/// The documents laid out as the index does: each non-empty one followed by the separator.
fn layout(docs: &[Vec<u32>]) -> Vec<u32> {
    let mut text = Vec::new();
    for d in docs.iter().filter(|d| !d.is_empty()) {
        text.extend_from_slice(d);
        text.push(SEPARATOR);
    }
    text
}

fn reference(
    docs: &[Vec<u32>],
    context: &[u32],
    k: usize,
    max_len: usize,
    max_occ: usize,
) -> Vec<Continuation> {
    let text = layout(docs);
    let ctx = &context[context
        .iter()
        .rposition(|&t| t == SEPARATOR)
        .map_or(0, |i| i + 1)..];
    for m in (1..=ctx.len().min(MAX_CONTEXT_MATCH)).rev() {
        let pattern = &ctx[ctx.len() - m..];
        let mut occ: Vec<usize> = (0..text.len().saturating_sub(m))
            .filter(|&p| &text[p..p + m] == pattern && text[p + m] != SEPARATOR)
            .collect();
        if occ.is_empty() {
            continue;
        }
        occ.sort_by(|&a, &b| text[a..].cmp(&text[b..]));
        let count = occ.len();
        let samples = count.min(max_occ);
        let obs: Vec<Observation> = (0..samples)
            .map(|i| {
                let p = occ[i * count / samples] + m;
                let chain: Vec<u32> = text[p..(p + max_len).min(text.len())]
                    .iter()
                    .copied()
                    .take_while(|&t| t != SEPARATOR)
                    .collect();
                Observation { chain, recency: 0 }
            })
            .collect();
        return rank(&obs, k, max_len);
    }
    Vec::new()
}

fn docs_strategy(alphabet: u32) -> impl Strategy<Value = Vec<Vec<u32>>> {
    proptest::collection::vec(proptest::collection::vec(0..alphabet, 0..40), 1..6)
}

proptest! {
    #[test]
    fn matches_reference_random(docs in docs_strategy(4),
                                context in proptest::collection::vec(0u32..4, 0..20),
                                k in 0usize..6, max_len in 0usize..7) {
        prop_assume!(docs.iter().any(|d| !d.is_empty()));
        let index = CorpusIndex::from_documents(docs.clone(), None).unwrap();
        let got = index.lookup(&context, k, max_len);
        check_contract(&got, k, max_len);
        prop_assert_eq!(got, reference(&docs, &context, k, max_len, DEFAULT_MAX_OCCURRENCES));
    }

    #[test]
    fn matches_reference_with_sampling(docs in docs_strategy(3),
                                       context in proptest::collection::vec(0u32..3, 1..6),
                                       max_occ in 1usize..6) {
        prop_assume!(docs.iter().any(|d| !d.is_empty()));
        let mut index = CorpusIndex::from_documents(docs.clone(), None).unwrap();
        index.set_max_occurrences(max_occ);
        prop_assert_eq!(index.lookup(&context, 4, 4), reference(&docs, &context, 4, 4, max_occ));
    }

    #[test]
    fn longest_match_counts_every_occurrence(docs in docs_strategy(3),
                                             context in proptest::collection::vec(0u32..4, 0..24)) {
        prop_assume!(docs.iter().any(|d| !d.is_empty()));
        // Token 3 stands for the separator, which cuts the context.
        let context: Vec<u32> = context
            .into_iter()
            .map(|t| if t == 3 { SEPARATOR } else { t })
            .collect();
        let index = CorpusIndex::from_documents(docs.clone(), None).unwrap();
        let text = layout(&docs);
        let ctx = &context[context.iter().rposition(|&t| t == SEPARATOR).map_or(0, |i| i + 1)..];
        let expected = (1..=ctx.len().min(MAX_CONTEXT_MATCH)).rev().find_map(|m| {
            let pattern = &ctx[ctx.len() - m..];
            let count = (0..text.len().saturating_sub(m))
                .filter(|&p| &text[p..p + m] == pattern && text[p + m] != SEPARATOR)
                .count();
            (count > 0).then_some((m, count))
        });
        let got = index.longest_match(&context).map(|(m, range)| (m, range.len()));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn matches_reference_repetitive(unit in proptest::collection::vec(0u32..1000, 1..6),
                                    reps in proptest::collection::vec(1usize..30, 1..4),
                                    ctx_reps in 1usize..6, k in 1usize..9, max_len in 1usize..12) {
        let docs: Vec<Vec<u32>> = reps.iter()
            .map(|&r| unit.iter().copied().cycle().take(unit.len() * r + r % 3).collect())
            .collect();
        let context: Vec<u32> = unit.iter().copied().cycle().take(unit.len() * ctx_reps).collect();
        let index = CorpusIndex::from_documents(docs.clone(), None).unwrap();
        prop_assert_eq!(index.lookup(&context, k, max_len), reference(&docs, &context, k, max_len, DEFAULT_MAX_OCCURRENCES));
    }
}

#[test]
fn realistic_corpus_matches_reference() {
    let docs = realistic_corpus(3, 6000, 200);
    let index = CorpusIndex::from_documents(docs.clone(), Some(200)).unwrap();
    let mut rng = Rng(11);
    for _ in 0..40 {
        // Contexts taken from the corpus (so long matches exist), sometimes perturbed.
        let d = &docs[rng.below(docs.len() as u64) as usize];
        let end = 1 + rng.below(d.len() as u64) as usize;
        let mut ctx = d[end.saturating_sub(20)..end].to_vec();
        if rng.below(3) == 0 {
            let i = rng.below(ctx.len() as u64) as usize;
            ctx[i] = rng.below(200) as u32;
        }
        assert_eq!(
            index.lookup(&ctx, 8, 8),
            reference(&docs, &ctx, 8, 8, DEFAULT_MAX_OCCURRENCES)
        );
    }
}

#[test]
fn matches_and_continuations_never_cross_documents() {
    let docs = vec![vec![1, 2, 3], vec![4, 5], vec![], vec![3, 9, 9]];
    let index = CorpusIndex::from_documents(docs, None).unwrap();
    assert_eq!(index.num_documents(), 4);
    assert_eq!(index.num_tokens(), 8);
    // [2, 3] then the document ends: the longest match with a continuation is [3] -> [9, 9].
    let got = index.lookup(&[1, 2, 3], 4, 8);
    assert_eq!(
        got,
        vec![Continuation {
            tokens: vec![9, 9],
            score: 1.0
        }]
    );
    // [1, 2] -> [3] only: the continuation stops at the end of document 0.
    assert_eq!(index.lookup(&[1, 2], 4, 8)[0].tokens, vec![3]);
    // [3, 4] spans the boundary between documents 0 and 1: only [4] matches.
    assert_eq!(index.lookup(&[3, 4], 4, 8)[0].tokens, vec![5]);
    // The last tokens of documents have nothing after them.
    assert!(index.lookup(&[5], 4, 8).is_empty());
    // A separator in the context cuts it.
    assert_eq!(index.lookup(&[1, SEPARATOR, 4], 4, 8)[0].tokens, vec![5]);
    assert!(index.lookup(&[4, 5, SEPARATOR], 4, 8).is_empty());
}

#[test]
fn longest_match_is_capped_at_16_tokens() {
    let doc: Vec<u32> = (0..40).collect();
    let index = CorpusIndex::from_documents(vec![doc.clone()], None).unwrap();
    let (m, range) = index.longest_match(&doc[..30]).unwrap();
    assert_eq!((m, range.len()), (MAX_CONTEXT_MATCH, 1));
    assert_eq!(index.lookup(&doc[..30], 1, 3)[0].tokens, vec![30, 31, 32]);
}

#[test]
fn flat_offsets_equal_documents() {
    let docs = vec![vec![1, 2, 1], vec![], vec![2, 1, 2, 2]];
    let flat: Vec<u32> = docs.concat();
    let a = CorpusIndex::from_documents(docs, None).unwrap();
    let b = CorpusIndex::from_flat(&flat, &[0, 3, 3, 7], None).unwrap();
    for ctx in [&[1u32][..], &[2], &[2, 1], &[1, 2]] {
        assert_eq!(a.lookup(ctx, 4, 4), b.lookup(ctx, 4, 4));
    }
    for bad in [&[1usize, 7][..], &[0, 3], &[0, 5, 3, 7], &[]] {
        assert!(matches!(
            CorpusIndex::from_flat(&flat, bad, None),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn rejects_bad_corpora() {
    assert!(matches!(
        CorpusIndex::from_documents(vec![], None),
        Err(Error::EmptyCorpus)
    ));
    assert!(matches!(
        CorpusIndex::from_documents(vec![vec![], vec![]], None),
        Err(Error::EmptyCorpus)
    ));
    assert!(matches!(
        CorpusIndex::from_documents(vec![vec![1, u32::MAX]], None),
        Err(Error::ReservedToken { token: u32::MAX })
    ));
    assert!(matches!(
        CorpusIndex::from_documents(vec![vec![1, 2], vec![10]], Some(10)),
        Err(Error::TokenOutOfVocab {
            token: 10,
            vocab_size: 10
        })
    ));
    assert!(matches!(
        CorpusIndex::from_documents(vec![vec![1, u32::MAX]], Some(10)),
        Err(Error::TokenOutOfVocab {
            token: u32::MAX,
            vocab_size: 10
        })
    ));
}

#[test]
fn large_token_ids_and_exactly_8_bytes_per_token() {
    let docs = vec![
        vec![u32::MAX - 1, 0, 262_143, u32::MAX - 1, 0, 7],
        vec![5, 5, 5],
    ];
    let index = CorpusIndex::from_documents(docs, None).unwrap();
    // Both chains seen once: the tie goes to the smaller token.
    assert_eq!(index.lookup(&[u32::MAX - 1], 2, 2)[0].tokens, vec![0, 7]);
    assert_eq!(index.bytes_per_token(), 8.0);
}

#[test]
fn send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CorpusIndex>();
}

#[test]
fn huge_k_and_max_len_are_fine() {
    let index = CorpusIndex::from_documents(vec![vec![1, 2, 3, 1, 2, 4]], None).unwrap();
    let got = index.lookup(&[1, 2], usize::MAX, usize::MAX);
    assert_eq!(got.len(), 2);
    check_contract(&got, usize::MAX, usize::MAX);
}
