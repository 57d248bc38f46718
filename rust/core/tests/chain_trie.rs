//! ChainTrie, the ranking every store shares, against the slow reference ranking: whatever order
//! the chains arrive in (sorted input takes the shared-prefix fast path), and after reuse.

mod stores_reference;

use hierdraft_core::ChainTrie;
use proptest::prelude::*;
use stores_reference::{check_contract, rank, Observation};

/// Chains over a tiny alphabet (so prefixes are shared and counts tie) with small recencies.
fn chains() -> impl Strategy<Value = Vec<(Vec<u32>, u64)>> {
    proptest::collection::vec((proptest::collection::vec(0u32..4, 0..7), 0u64..3), 0..40)
}

fn reference(
    chains: &[(Vec<u32>, u64)],
    k: usize,
    max_len: usize,
) -> Vec<hierdraft_core::Continuation> {
    let obs: Vec<Observation> = chains
        .iter()
        .map(|(chain, recency)| Observation {
            chain: chain.clone(),
            recency: *recency,
        })
        .collect();
    rank(&obs, k, max_len)
}

fn filled(mut trie: ChainTrie, chains: &[(Vec<u32>, u64)]) -> ChainTrie {
    for (chain, recency) in chains {
        trie.insert(chain, 1, *recency);
    }
    trie
}

proptest! {
    #[test]
    fn matches_reference_in_any_order(mut chains in chains(), sorted in any::<bool>(),
                                      k in 0usize..7, max_len in 0usize..8) {
        if sorted {
            chains.sort();
        }
        let got = filled(ChainTrie::new(), &chains).top_chains(k, max_len);
        check_contract(&got, k, max_len);
        prop_assert_eq!(got, reference(&chains, k, max_len));
    }

    #[test]
    fn cleared_trie_forgets_earlier_chains(before in chains(), after in chains(),
                                           k in 1usize..7, max_len in 1usize..8) {
        let mut trie = filled(ChainTrie::new(), &before);
        trie.clear();
        let got = filled(trie, &after).top_chains(k, max_len);
        prop_assert_eq!(got, reference(&after, k, max_len));
    }
}

#[test]
fn default_trie_is_an_empty_trie() {
    let chains = vec![(vec![1, 2, 3], 0), (vec![1, 2, 4], 1), (vec![5], 0)];
    let trie = filled(ChainTrie::default(), &chains);
    assert_eq!(trie.len(), 5);
    assert_eq!(trie.total(), 3);
    assert_eq!(trie.top_chains(4, 4), reference(&chains, 4, 4));
}
