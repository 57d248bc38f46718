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

use crate::level::Level;

/// A flattened prefix tree of draft tokens (see the module docs for the invariants).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftTree {
    /// Token id of each node.
    pub tokens: Vec<u32>,
    /// Parent index of each node, `-1` for children of the root.
    pub parents: Vec<i32>,
    /// Depth of each node, `1` for children of the root.
    pub depths: Vec<u32>,
    /// The level (`Level as u8`) that first produced each node.
    pub sources: Vec<u8>,
}

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

    /// Checks every structural invariant; returns a description of the first violation.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.tokens.len();
        if self.parents.len() != n || self.depths.len() != n || self.sources.len() != n {
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
            },
            budget,
            max_depth,
            first_child: Vec::with_capacity(cap),
            next_sibling: Vec::with_capacity(cap),
            root_first: -1,
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

    /// Inserts `tokens` as a path from the root, reusing the existing prefix.
    ///
    /// The chain is cut at `max_depth` tokens and when the budget runs out. Nodes that already
    /// exist keep their original source. Returns the number of nodes added.
    pub fn insert_chain(&mut self, tokens: &[u32], level: Level) -> usize {
        let mut parent: i32 = -1;
        let mut added = 0;
        for (d, &tok) in tokens.iter().take(self.max_depth).enumerate() {
            if let Some(c) = self.find_child(parent, tok) {
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
        assert_eq!(b.insert_chain(&[1, 2, 3], Level::Context), 3);
        assert_eq!(b.insert_chain(&[1, 2, 4], Level::Model), 1);
        assert_eq!(b.insert_chain(&[5, 6, 7], Level::Corpus), 1);
        assert!(b.is_full());
        assert_eq!(b.insert_chain(&[1, 2, 3], Level::Corpus), 0);
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
        assert_eq!(b.insert_chain(&[1, 2, 3, 4], Level::Context), 2);
        assert_eq!(b.finish().max_depth(), 2);
    }

    #[test]
    fn ancestor_mask_matches_paths() {
        let mut b = DraftTreeBuilder::new(16, 8);
        b.insert_chain(&[1, 2, 3], Level::Context);
        b.insert_chain(&[1, 4], Level::Context);
        b.insert_chain(&[7], Level::Model);
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
            chains in proptest::collection::vec(proptest::collection::vec(0u32..6, 0..10), 0..12),
            budget in 1usize..40,
            max_depth in 1usize..9,
        ) {
            let mut b = DraftTreeBuilder::new(budget, max_depth);
            let mut inserted = Vec::new();
            for (i, chain) in chains.iter().enumerate() {
                let before = b.len();
                let added = b.insert_chain(chain, Level::ALL[i % 3]);
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
        }
    }

    #[test]
    fn empty_tree() {
        let t = DraftTree::new();
        assert!(t.ancestor_mask().is_empty());
        assert_eq!(t.max_depth(), 0);
        assert!(t.validate().is_ok());
        assert!(t.path(3).is_empty());
    }
}
