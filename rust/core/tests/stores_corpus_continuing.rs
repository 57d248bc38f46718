//! `CorpusIndex::lookup_continuing` / `longest_match_continuing` against the lookups from
//! scratch: a hint may only make the search shorter, never change what it finds.

use hierdraft_core::corpus_index::{MAX_CONTEXT_MATCH, SEPARATOR};
use hierdraft_core::{CorpusIndex, MatchHint};
use proptest::prelude::*;

/// One change to the context between two lookups.
#[derive(Clone, Debug)]
enum Step {
    /// Append these tokens (3 stands for the separator).
    Append(Vec<u32>),
    /// Append the `len` tokens that follow position `at` of document `doc`: the context then
    /// follows the corpus, so matches grow long.
    Follow { doc: usize, at: usize, len: usize },
    /// Replace the token `back` places before the end (the hint's window no longer holds).
    Rewrite { back: usize, token: u32 },
    /// Drop the last `len` tokens (a shorter context than the hint's).
    Truncate(usize),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::collection::vec(0u32..4, 0..4).prop_map(Step::Append),
        (0usize..6, 0usize..40, 1usize..6).prop_map(|(doc, at, len)| Step::Follow { doc, at, len }),
        (0usize..24, 0u32..3).prop_map(|(back, token)| Step::Rewrite { back, token }),
        (1usize..4).prop_map(Step::Truncate),
    ]
}

fn apply(step: &Step, context: &mut Vec<u32>, docs: &[Vec<u32>]) {
    match step {
        Step::Append(tokens) => {
            context.extend(tokens.iter().map(|&t| if t == 3 { SEPARATOR } else { t }));
        }
        Step::Follow { doc, at, len } => {
            let doc = &docs[doc % docs.len()];
            let start = (*at).min(doc.len());
            context.extend_from_slice(&doc[start..(start + len).min(doc.len())]);
        }
        Step::Rewrite { back, token } => {
            if *back < context.len() {
                let i = context.len() - 1 - back;
                context[i] = *token;
            }
        }
        Step::Truncate(len) => context.truncate(context.len().saturating_sub(*len)),
    }
}

fn docs_strategy() -> impl Strategy<Value = Vec<Vec<u32>>> {
    proptest::collection::vec(proptest::collection::vec(0u32..3, 0..60), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn continuing_equals_from_scratch(docs in docs_strategy(),
                                      start in proptest::collection::vec(0u32..3, 0..8),
                                      steps in proptest::collection::vec(step_strategy(), 1..40),
                                      k in 1usize..5, max_len in 1usize..6) {
        prop_assume!(docs.iter().any(|d| !d.is_empty()));
        let index = CorpusIndex::from_documents(docs.clone(), None).unwrap();
        let mut hint = MatchHint::default();
        let mut context = start;
        for step in &steps {
            apply(step, &mut context, &docs);
            let fresh = index.longest_match(&context);
            prop_assert_eq!(index.longest_match_continuing(&context, &mut hint), fresh.clone(),
                            "context {:?}", &context);
            // the same context again: the hint's own match
            prop_assert_eq!(index.longest_match_continuing(&context, &mut hint), fresh);
        }
        // lookups through a hint give the lookups' continuations
        let mut hint = MatchHint::default();
        let mut context = Vec::new();
        for step in &steps {
            apply(step, &mut context, &docs);
            prop_assert_eq!(index.lookup_continuing(&context, k, max_len, &mut hint),
                            index.lookup(&context, k, max_len));
        }
    }

    #[test]
    fn a_hint_of_another_index_is_not_used(docs in docs_strategy(), other in docs_strategy(),
                                           context in proptest::collection::vec(0u32..3, 1..20),
                                           more in proptest::collection::vec(0u32..3, 0..3)) {
        prop_assume!(docs.iter().any(|d| !d.is_empty()) && other.iter().any(|d| !d.is_empty()));
        let index = CorpusIndex::from_documents(docs, None).unwrap();
        let other = CorpusIndex::from_documents(other, None).unwrap();
        let mut hint = MatchHint::default();
        other.longest_match_continuing(&context, &mut hint);
        let grown = [&context[..], &more[..]].concat();
        prop_assert_eq!(index.longest_match_continuing(&grown, &mut hint), index.longest_match(&grown));
        // a clone holds the same arrays, so the hint stays valid for it
        let clone = index.clone();
        let longer = [&grown[..], &[0]].concat();
        prop_assert_eq!(clone.longest_match_continuing(&longer, &mut hint), index.longest_match(&longer));
    }
}

#[test]
fn a_long_copy_is_followed_to_the_longest_length() {
    // One document read back token by token: each step extends the match by one token, until
    // the match is capped at MAX_CONTEXT_MATCH and then keeps its length.
    let doc: Vec<u32> = (0..200u32).map(|i| (i * 7919) % 97).collect();
    let index = CorpusIndex::from_documents(vec![doc.clone(), vec![1, 2, 3]], None).unwrap();
    let mut hint = MatchHint::default();
    for end in 1..doc.len() {
        let context = &doc[..end];
        let found = index.longest_match_continuing(context, &mut hint);
        assert_eq!(found, index.longest_match(context));
        assert_eq!(found.map(|(m, _)| m), Some(end.min(MAX_CONTEXT_MATCH)));
    }
}
