//! The draft tree handed to the verifier: a flattened prefix tree of candidate tokens.
//!
//! Node `i` holds `tokens[i]`; `parents[i]` is the index of its parent or `-1` when the node is a
//! child of the root (the last accepted token, which is not stored in the tree). Parents always
//! precede their children (`parents[i] < i`), `depths[i]` is `1 + depths[parent]` (children of the
//! root have depth 1) and `sources[i]` is the [`Level`] that first produced
//! the node. Shared prefixes are stored once: no two siblings carry the same token.
//!
//! [`DraftTreeBuilder`] merges candidate chains into such a tree under a node budget and a depth
//! limit.
//!
//! Node scores. `scores[i]` estimates the probability of node `i`'s token given its parent's path,
//! from the [`Continuation::score`](crate::continuation::Continuation) of the chains that built
//! the tree. A chain's score estimates the probability that the text continues with the chain up
//! to and including its first token that no better chain of the same lookup already had; the
//! deeper tokens of a chain carry no count of their own, so the chain's score also bounds them.
//! The rule: a node's *path probability* `p(i)` is the highest score among all chains inserted
//! through it (from any level, clamped into `[0, 1]`; NaN counts as 0), and
//! `scores[i] = p(i) / p(parent)` with `p(root) = 1` (0 when the parent's is 0). Every chain
//! through a node also passes its parent, so `p` never grows from root to leaf, each score lies
//! in `[0, 1]`, and the product of the scores from the root to node `i` is `p(i)`.
//! [`DraftTree::best_chain`] picks the root-to-leaf path with the largest such product.

use crate::level::Level;

/// A flattened prefix tree of draft tokens (see the module docs for the invariants).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DraftTree {
    /// Token id of each node.
    pub tokens: Vec<u32>,
    /// Parent index of each node, `-1` for children of the root.
    pub parents: Vec<i32>,
    /// Depth of each node, `1` for children of the root.
    pub depths: Vec<u32>,
    /// The level (`Level as u8`) that first produced each node.
    pub sources: Vec<u8>,
    /// Estimated probability of each node given its parent (see the module docs).
    pub scores: Vec<f32>,
}

/// Relative slack under which two path probabilities count as equal in [`DraftTree::best_path`]:
/// the scores are stored as ratios in `f32`, so products of equal path probabilities can differ
/// in their last bits.
const PATH_TIE_TOLERANCE: f64 = 1e-5;

impl DraftTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the tree has no node.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Largest node depth (0 for an empty tree).
    pub fn max_depth(&self) -> u32 {
        self.depths.iter().copied().max().unwrap_or(0)
    }

    /// Row-major `n * n` mask: entry `i * n + j` is true iff `j == i` or `j` is an ancestor of `i`.
    ///
    /// This is the attention mask among draft nodes a tree verifier needs.
    pub fn ancestor_mask(&self) -> Vec<bool> {
        let n = self.len();
        let mut mask = vec![false; n * n];
        for i in 0..n {
            let parent = self.parents[i];
            if parent >= 0 {
                // Parents precede children, so the parent's row is complete: copy it.
                let p = parent as usize;
                let (done, rest) = mask.split_at_mut(i * n);
                rest[..n].copy_from_slice(&done[p * n..p * n + n]);
            }
            mask[i * n + i] = true;
        }
        mask
    }

    /// Token path from the root to node `i` (inclusive), root-most first.
    ///
    /// Returns an empty path when `i` is out of range.
    pub fn path(&self, i: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = i as i64;
        while cur >= 0 && (cur as usize) < self.len() {
            let c = cur as usize;
            out.push(self.tokens[c]);
            cur = i64::from(self.parents[c]);
        }
        out.reverse();
        out
    }

    /// Nodes of the most probable root-to-leaf path of at most `max_len` nodes, root side first.
    ///
    /// The candidates are the leaves of the tree cut at depth `max_len`; a path's probability is
    /// the product of its nodes' `scores`. Ties (within [`PATH_TIE_TOLERANCE`]) go to the leaf
    /// that comes first in node order. Empty for an empty tree or `max_len == 0`.
    pub fn best_path(&self, max_len: usize) -> Vec<usize> {
        let n = self.len();
        if n == 0 || max_len == 0 || self.scores.len() != n {
            return Vec::new();
        }
        let mut path_prob = vec![0f64; n];
        let mut has_child = vec![false; n];
        for i in 0..n {
            let parent = self.parents[i];
            let above = if parent >= 0 {
                has_child[parent as usize] = true;
                path_prob[parent as usize]
            } else {
                1.0
            };
            path_prob[i] = above * f64::from(self.scores[i]);
        }
        let mut best: Option<usize> = None;
        for i in 0..n {
            let depth = self.depths[i] as usize;
            let is_leaf = depth == max_len || (depth < max_len && !has_child[i]);
            if !is_leaf {
                continue;
            }
            match best {
                Some(b) if path_prob[i] <= path_prob[b] * (1.0 + PATH_TIE_TOLERANCE) => {}
                _ => best = Some(i),
            }
        }
        let mut out = Vec::new();
        let mut cur = best.map_or(-1, |b| b as i64);
        while cur >= 0 {
            out.push(cur as usize);
            cur = i64::from(self.parents[cur as usize]);
        }
        out.reverse();
        out
    }

    /// Tokens of [`DraftTree::best_path`]: the most probable chain of at most `max_len` tokens.
    pub fn best_chain(&self, max_len: usize) -> Vec<u32> {
        self.best_path(max_len)
            .into_iter()
            .map(|i| self.tokens[i])
            .collect()
    }

    /// Checks every structural invariant; returns a description of the first violation.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.tokens.len();
        if self.parents.len() != n
            || self.depths.len() != n
            || self.sources.len() != n
            || self.scores.len() != n
        {
            return Err("arrays have different lengths".into());
        }
        let mut seen = ahash::AHashSet::with_capacity(n);
        for i in 0..n {
            let p = self.parents[i];
            if p < -1 || (p >= 0 && p as usize >= i) {
                return Err(format!("node {i}: parent {p} does not precede it"));
            }
            let expected = if p < 0 {
                1
            } else {
                self.depths[p as usize] + 1
            };
            if self.depths[i] != expected {
                return Err(format!("node {i}: depth {} != {expected}", self.depths[i]));
            }
            let score = self.scores[i];
            if !(0.0..=1.0).contains(&score) {
                return Err(format!("node {i}: score {score} is not in [0, 1]"));
            }
            if Level::from_u8(self.sources[i]).is_none() {
                return Err(format!("node {i}: unknown source {}", self.sources[i]));
            }
            if !seen.insert((p, self.tokens[i])) {
                return Err(format!(
                    "node {i}: duplicate sibling token {}",
                    self.tokens[i]
                ));
            }
        }
        Ok(())
    }
}

/// Most nodes a [`DraftTreeBuilder`] reserves room for up front: the budget is a user setting
/// and may be huge, while trees rarely grow large, so beyond this the vectors grow on demand.
const MAX_RESERVED_NODES: usize = 4096;

/// Merges candidate chains into a [`DraftTree`] under a node budget and a depth limit.
///
/// Children are kept in per-node sibling lists so that inserting a chain costs
/// `O(chain length * branching)`, independent of the tree size.
#[derive(Debug, Clone)]
pub struct DraftTreeBuilder {
    tree: DraftTree,
    budget: usize,
    max_depth: usize,
    /// First child of each node (`-1`: none).
    first_child: Vec<i32>,
    /// Next sibling of each node (`-1`: none).
    next_sibling: Vec<i32>,
    /// First child of the root (`-1`: none).
    root_first: i32,
    /// Path probability of each node (the module docs' `p`), from which `tree.scores` follows.
    path_prob: Vec<f32>,
}

impl DraftTreeBuilder {
    /// A builder that will hold at most `budget` nodes of depth at most `max_depth`.
    pub fn new(budget: usize, max_depth: usize) -> Self {
        let cap = budget.min(MAX_RESERVED_NODES);
        Self {
            tree: DraftTree {
                tokens: Vec::with_capacity(cap),
                parents: Vec::with_capacity(cap),
                depths: Vec::with_capacity(cap),
                sources: Vec::with_capacity(cap),
                scores: Vec::with_capacity(cap),
            },
            budget,
            max_depth,
            first_child: Vec::with_capacity(cap),
            next_sibling: Vec::with_capacity(cap),
            root_first: -1,
            path_prob: Vec::with_capacity(cap),
        }
    }

    /// Number of nodes so far.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when no node was added yet.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// True when the node budget is exhausted.
    pub fn is_full(&self) -> bool {
        self.tree.len() >= self.budget
    }

    /// Nodes that can still be added.
    pub fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.tree.len())
    }

    /// Child of `parent` (`-1`: the root) carrying `token`, if any.
    fn find_child(&self, parent: i32, token: u32) -> Option<i32> {
        let mut c = if parent < 0 {
            self.root_first
        } else {
            self.first_child[parent as usize]
        };
        while c >= 0 {
            if self.tree.tokens[c as usize] == token {
                return Some(c);
            }
            c = self.next_sibling[c as usize];
        }
        None
    }

    /// Path probability of `node` (`-1`: the root, probability 1).
    fn prob_of(&self, node: i32) -> f32 {
        if node < 0 {
            1.0
        } else {
            self.path_prob[node as usize]
        }
    }

    /// `p(node) / p(parent)`, 0 when the parent's probability is 0.
    fn ratio(prob: f32, parent_prob: f32) -> f32 {
        if parent_prob > 0.0 {
            (prob / parent_prob).min(1.0)
        } else {
            0.0
        }
    }

    /// Raises the path probability of an existing `node` to `prob` and refreshes the scores
    /// that depend on it (its own and its children's).
    fn raise_prob(&mut self, node: i32, prob: f32) {
        let i = node as usize;
        if prob <= self.path_prob[i] {
            return;
        }
        self.path_prob[i] = prob;
        self.tree.scores[i] = Self::ratio(prob, self.prob_of(self.tree.parents[i]));
        let mut c = self.first_child[i];
        while c >= 0 {
            let ci = c as usize;
            self.tree.scores[ci] = Self::ratio(self.path_prob[ci], prob);
            c = self.next_sibling[ci];
        }
    }

    /// Inserts `tokens` as a path from the root, reusing the existing prefix; `score` is the
    /// chain's [`Continuation::score`](crate::continuation::Continuation) (see the module docs
    /// for how it becomes node scores).
    ///
    /// The chain is cut at `max_depth` tokens and when the budget runs out. Nodes that already
    /// exist keep their original source. Returns the number of nodes added.
    pub fn insert_chain(&mut self, tokens: &[u32], score: f32, level: Level) -> usize {
        let prob = if score.is_nan() {
            0.0
        } else {
            score.clamp(0.0, 1.0)
        };
        let mut parent: i32 = -1;
        let mut added = 0;
        for (d, &tok) in tokens.iter().take(self.max_depth).enumerate() {
            if let Some(c) = self.find_child(parent, tok) {
                self.raise_prob(c, prob);
                parent = c;
                continue;
            }
            if self.is_full() || self.tree.len() >= i32::MAX as usize {
                break;
            }
            let idx = self.tree.len() as i32;
            self.tree.tokens.push(tok);
            self.tree.parents.push(parent);
            self.tree.depths.push(d as u32 + 1);
            self.tree.sources.push(level as u8);
            self.tree
                .scores
                .push(Self::ratio(prob, self.prob_of(parent)));
            self.path_prob.push(prob);
            self.first_child.push(-1);
            // Append at the head of the sibling list: order among siblings does not matter for
            // lookups, and the flattened order (insertion order) is what the verifier sees.
            let head = if parent < 0 {
                &mut self.root_first
            } else {
                &mut self.first_child[parent as usize]
            };
            self.next_sibling.push(*head);
            *head = idx;
            parent = idx;
            added += 1;
        }
        added
    }

    /// The tree built so far.
    pub fn tree(&self) -> &DraftTree {
        &self.tree
    }

    /// Finishes and returns the tree.
    pub fn finish(self) -> DraftTree {
        self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_prefixes_and_respects_budget() {
        let mut b = DraftTreeBuilder::new(5, 8);
        assert_eq!(b.insert_chain(&[1, 2, 3], 1.0, Level::Context), 3);
        assert_eq!(b.insert_chain(&[1, 2, 4], 1.0, Level::Model), 1);
        assert_eq!(b.insert_chain(&[5, 6, 7], 1.0, Level::Corpus), 1);
        assert!(b.is_full());
        assert_eq!(b.insert_chain(&[1, 2, 3], 1.0, Level::Corpus), 0);
        let t = b.finish();
        assert_eq!(t.tokens, vec![1, 2, 3, 4, 5]);
        assert_eq!(t.parents, vec![-1, 0, 1, 1, -1]);
        assert_eq!(t.depths, vec![1, 2, 3, 3, 1]);
        assert_eq!(t.sources, vec![0, 0, 0, 1, 2]);
        assert!(t.validate().is_ok());
        assert_eq!(t.path(3), vec![1, 2, 4]);
    }

    #[test]
    fn respects_max_depth() {
        let mut b = DraftTreeBuilder::new(16, 2);
        assert_eq!(b.insert_chain(&[1, 2, 3, 4], 1.0, Level::Context), 2);
        assert_eq!(b.finish().max_depth(), 2);
    }

    #[test]
    fn ancestor_mask_matches_paths() {
        let mut b = DraftTreeBuilder::new(16, 8);
        b.insert_chain(&[1, 2, 3], 0.5, Level::Context);
        b.insert_chain(&[1, 4], 0.25, Level::Context);
        b.insert_chain(&[7], 0.1, Level::Model);
        let t = b.finish();
        let n = t.len();
        let m = t.ancestor_mask();
        for i in 0..n {
            let mut anc = vec![false; n];
            let mut c = i as i32;
            while c >= 0 {
                anc[c as usize] = true;
                c = t.parents[c as usize];
            }
            assert_eq!(&m[i * n..i * n + n], &anc[..]);
        }
    }

    proptest::proptest! {
        #[test]
        fn builder_keeps_invariants(
            chains in proptest::collection::vec(
                (proptest::collection::vec(0u32..6, 0..10), -0.25f32..1.25), 0..12),
            budget in 1usize..40,
            max_depth in 1usize..9,
            best_len in 0usize..10,
        ) {
            let mut b = DraftTreeBuilder::new(budget, max_depth);
            let mut inserted = Vec::new();
            for (i, (chain, score)) in chains.iter().enumerate() {
                let before = b.len();
                let added = b.insert_chain(chain, *score, Level::ALL[i % 3]);
                proptest::prop_assert_eq!(b.len(), before + added);
                if !b.is_full() {
                    inserted.push(chain.iter().copied().take(max_depth).collect::<Vec<_>>());
                }
            }
            let t = b.finish();
            proptest::prop_assert!(t.validate().is_ok());
            proptest::prop_assert!(t.len() <= budget);
            proptest::prop_assert!(t.max_depth() as usize <= max_depth);
            // Every chain inserted while room was left is a complete root path.
            let paths: Vec<Vec<u32>> = (0..t.len()).map(|i| t.path(i)).collect();
            for chain in inserted.iter().filter(|c| !c.is_empty()) {
                proptest::prop_assert!(paths.contains(chain));
            }
            // The product of the scores down to a node is the best score of the chains through it.
            let products: Vec<f64> = (0..t.len())
                .map(|i| {
                    let mut prod = 1f64;
                    let mut c = i as i32;
                    while c >= 0 {
                        prod *= f64::from(t.scores[c as usize]);
                        c = t.parents[c as usize];
                    }
                    prod
                })
                .collect();
            for (i, path) in paths.iter().enumerate() {
                let expected = chains
                    .iter()
                    .filter(|(c, _)| c.len() >= path.len() && c[..path.len()] == path[..])
                    .map(|(_, s)| f64::from(s.clamp(0.0, 1.0)))
                    .fold(0f64, f64::max);
                proptest::prop_assert!((products[i] - expected).abs() <= 1e-5, "node {}", i);
            }
            // best_path ends at the most probable leaf of the tree cut at best_len.
            let best = t.best_path(best_len);
            proptest::prop_assert_eq!(t.best_chain(best_len).len(), best.len());
            let candidates: Vec<usize> = (0..t.len())
                .filter(|&i| {
                    let d = t.depths[i] as usize;
                    d == best_len
                        || (d < best_len && !t.parents.contains(&(i as i32)))
                })
                .collect();
            match best.last() {
                None => proptest::prop_assert!(candidates.is_empty()),
                Some(&leaf) => {
                    proptest::prop_assert!(candidates.contains(&leaf));
                    proptest::prop_assert_eq!(best.len(), t.depths[leaf] as usize);
                    proptest::prop_assert_eq!(t.path(leaf), t.best_chain(best_len));
                    for &c in &candidates {
                        proptest::prop_assert!(products[c] <= products[leaf] * (1.0 + 1e-4));
                    }
                }
            }
        }
    }

    #[test]
    fn node_scores_follow_the_chain_scores() {
        let mut b = DraftTreeBuilder::new(16, 8);
        b.insert_chain(&[1, 2, 3], 0.5, Level::Context);
        b.insert_chain(&[1, 2, 4], 0.2, Level::Context);
        b.insert_chain(&[5, 6], 0.3, Level::Model);
        // A later, more confident chain through node 0 raises its probability.
        b.insert_chain(&[1, 7], 0.8, Level::Corpus);
        let t = b.finish();
        assert_eq!(t.tokens, vec![1, 2, 3, 4, 5, 6, 7]);
        let expected = [0.8, 0.5 / 0.8, 1.0, 0.4, 0.3, 1.0, 1.0];
        for (got, want) in t.scores.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?} != {expected:?}", t.scores);
        }
        assert!(t.validate().is_ok());
        assert_eq!(t.best_chain(8), vec![1, 7]);
        assert_eq!(t.best_path(8), vec![0, 6]);
        assert_eq!(t.best_chain(1), vec![1]);
        assert!(t.best_chain(0).is_empty());
    }

    #[test]
    fn best_chain_prefers_the_deeper_path_of_a_chain_and_breaks_ties_by_order() {
        let mut b = DraftTreeBuilder::new(16, 8);
        b.insert_chain(&[1, 2, 3], 0.5, Level::Context);
        b.insert_chain(&[4, 5], 0.5, Level::Model);
        let t = b.finish();
        assert_eq!(t.best_chain(8), vec![1, 2, 3]);
        // Cut at two tokens, node 1 ([1, 2]) and node 4 ([4, 5]) tie: the earlier one wins.
        assert_eq!(t.best_chain(2), vec![1, 2]);
        // Out-of-range or NaN chain scores are clamped into [0, 1].
        let mut b = DraftTreeBuilder::new(16, 8);
        b.insert_chain(&[1], f32::NAN, Level::Context);
        b.insert_chain(&[2], 7.0, Level::Context);
        b.insert_chain(&[1, 3], -1.0, Level::Model);
        let t = b.finish();
        assert_eq!(t.scores, vec![0.0, 1.0, 0.0]);
        assert!(t.validate().is_ok());
        assert_eq!(t.best_chain(4), vec![2]);
    }

    #[test]
    fn validate_rejects_bad_scores() {
        let mut b = DraftTreeBuilder::new(4, 4);
        b.insert_chain(&[1, 2], 0.5, Level::Context);
        let mut t = b.finish();
        t.scores[1] = 1.5;
        assert!(t.validate().is_err());
        t.scores.pop();
        assert!(t.validate().is_err());
    }

    #[test]
    fn empty_tree() {
        let t = DraftTree::new();
        assert!(t.ancestor_mask().is_empty());
        assert_eq!(t.max_depth(), 0);
        assert!(t.validate().is_ok());
        assert!(t.path(3).is_empty());
        assert!(t.best_chain(4).is_empty());
    }
}
