//! Ranked candidate chains ([`Continuation`]) and the one ranking procedure every store uses.
//!
//! A store collects the token chains that followed its match (each chain weighted by how often it
//! was seen and tagged with how recent it is) into a [`ChainTrie`], a small counted prefix tree.
//! [`ChainTrie::top_chains`] then extracts the best `k` chains by *heavy-path decomposition*:
//!
//! 1. The first chain starts at the root and repeatedly steps to the best child until it reaches
//!    `max_len` tokens or a leaf. "Best" is: highest count, then most recent, then (for siblings)
//!    the smallest token id.
//! 2. Every node that is a child of a node on an extracted chain but is not itself on one is a
//!    candidate branch. The next chain starts at the best candidate branch (highest count, then
//!    most recent, then shallowest, then lexicographically smallest path from the root), is
//!    prefixed by the path from the root to that branch, and again follows the best children.
//! 3. Repeat until `k` chains are extracted or no branch is left.
//!
//! A chain's score is the count of the node where it branched off divided by the root's total
//! weight, i.e. the estimated probability that the draft agrees with the data up to and including
//! the first token that is new in this chain. Chains come out best first, distinct, and none is a
//! prefix of another.

use std::cmp::Ordering;

/// One candidate continuation: `tokens` (1..=max_len ids) and a `score` (higher is better).
#[derive(Clone, Debug, PartialEq)]
pub struct Continuation {
    pub tokens: Vec<u32>,
    pub score: f32,
}

const NONE: u32 = u32::MAX;

/// A candidate branch while extracting chains: a node, its depth, and copies of the ranking
/// fields, so that scanning many candidates reads one small vector instead of scattered nodes.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    count: u32,
    recency: u64,
    depth: usize,
    id: u32,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    token: u32,
    count: u32,
    recency: u64,
    parent: u32,
    first_child: u32,
    next_sibling: u32,
}

/// A counted prefix tree of continuation chains, the common aggregation step of all stores.
///
/// Children are kept in a singly linked list in descending token order, so inserting chains in
/// ascending order (as the suffix array yields them) finds the matching child at the head.
#[derive(Clone, Debug)]
pub struct ChainTrie {
    nodes: Vec<Node>,
    root_first_child: u32,
    total: u64,
    /// The nodes of the chain inserted last, root side first (a prefix shared with the next
    /// chain is found without searching sibling lists).
    last_path: Vec<u32>,
}

impl Default for ChainTrie {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainTrie {
    /// An empty trie.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty trie with room for `nodes` nodes.
    pub fn with_capacity(nodes: usize) -> Self {
        ChainTrie {
            nodes: Vec::with_capacity(nodes),
            root_first_child: NONE,
            total: 0,
            last_path: Vec::new(),
        }
    }

    /// Removes all chains, keeping the allocation.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.root_first_child = NONE;
        self.total = 0;
        self.last_path.clear();
    }

    /// Number of nodes (distinct non-empty prefixes).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no chain was inserted.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Total weight of everything inserted (the denominator of the scores).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Adds `weight` to the root total without adding a chain (an observation whose chain is
    /// unknown, e.g. pruned away).
    pub fn add_total(&mut self, weight: u64) {
        self.total = self.total.saturating_add(weight);
    }

    /// Counts one observation of `chain` with `weight`: every prefix of the chain gains `weight`
    /// and remembers the largest `recency` it was seen with. The root total grows by `weight`.
    ///
    /// The prefix that `chain` shares with the chain inserted just before is reached without any
    /// search, so chains given in sorted order (neighbours share long prefixes) insert quickly.
    pub fn insert(&mut self, chain: &[u32], weight: u32, recency: u64) {
        self.add_total(u64::from(weight));
        let nodes = &self.nodes;
        let shared = self
            .last_path
            .iter()
            .zip(chain)
            .take_while(|&(&id, &token)| nodes[id as usize].token == token)
            .count();
        self.last_path.truncate(shared);
        for &id in &self.last_path {
            Self::count(&mut self.nodes[id as usize], weight, recency);
        }
        let mut parent = self.last_path.last().copied().unwrap_or(NONE);
        for &token in &chain[shared..] {
            parent = self.child_or_insert(parent, token);
            Self::count(&mut self.nodes[parent as usize], weight, recency);
            self.last_path.push(parent);
        }
    }

    fn count(node: &mut Node, weight: u32, recency: u64) {
        node.count = node.count.saturating_add(weight);
        node.recency = node.recency.max(recency);
    }

    /// Adds `weight` to the single node reached by `token` under `parent` (`None` = root),
    /// creating it when needed, and returns its id. Used to merge stored tries node by node; the
    /// root total is not changed.
    pub fn add_node(&mut self, parent: Option<u32>, token: u32, weight: u32, recency: u64) -> u32 {
        let id = self.child_or_insert(parent.unwrap_or(NONE), token);
        Self::count(&mut self.nodes[id as usize], weight, recency);
        id
    }

    fn first_child(&self, parent: u32) -> u32 {
        if parent == NONE {
            self.root_first_child
        } else {
            self.nodes[parent as usize].first_child
        }
    }

    /// The child of `parent` holding `token`, created when missing. Sibling lists are kept in
    /// descending token order, so chains inserted in ascending lexicographic order (as a suffix
    /// array range yields them) always find or insert their node at the head of the list.
    fn child_or_insert(&mut self, parent: u32, token: u32) -> u32 {
        let mut prev = NONE;
        let mut cur = self.first_child(parent);
        while cur != NONE {
            let node = &self.nodes[cur as usize];
            if node.token == token {
                return cur;
            }
            if node.token < token {
                break;
            }
            prev = cur;
            cur = node.next_sibling;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            token,
            count: 0,
            recency: 0,
            parent,
            first_child: NONE,
            next_sibling: cur,
        });
        if prev != NONE {
            self.nodes[prev as usize].next_sibling = id;
        } else if parent == NONE {
            self.root_first_child = id;
        } else {
            self.nodes[parent as usize].first_child = id;
        }
        id
    }

    fn candidate(&self, id: u32, depth: usize) -> Candidate {
        let node = &self.nodes[id as usize];
        Candidate {
            count: node.count,
            recency: node.recency,
            depth,
            id,
        }
    }

    /// Compares two candidate nodes; `Greater` means `a` ranks first. Order: higher count, then
    /// more recent, then shallower, then lexicographically smaller path from the root (for
    /// siblings: the smaller token). This is a total order on distinct nodes.
    fn better(&self, a: &Candidate, b: &Candidate) -> Ordering {
        a.count
            .cmp(&b.count)
            .then(a.recency.cmp(&b.recency))
            .then(b.depth.cmp(&a.depth))
            .then_with(|| self.cmp_paths(b.id, a.id))
    }

    /// Lexicographic order of the root paths of two nodes of the same depth, without building
    /// them: the paths first differ just below the deepest common ancestor, so walk both up in
    /// step and keep the last token comparison made before they meet.
    fn cmp_paths(&self, mut a: u32, mut b: u32) -> Ordering {
        let mut order = Ordering::Equal;
        while a != b && a != NONE && b != NONE {
            let (x, y) = (&self.nodes[a as usize], &self.nodes[b as usize]);
            order = x.token.cmp(&y.token);
            (a, b) = (x.parent, y.parent);
        }
        order
    }

    /// Tokens from the root down to `id`.
    fn path(&self, id: u32) -> Vec<u32> {
        let mut tokens = Vec::new();
        let mut cur = id;
        while cur != NONE {
            tokens.push(self.nodes[cur as usize].token);
            cur = self.nodes[cur as usize].parent;
        }
        tokens.reverse();
        tokens
    }

    fn children(&self, parent: u32) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.first_child(parent);
        std::iter::from_fn(move || {
            if cur == NONE {
                return None;
            }
            let id = cur;
            cur = self.nodes[id as usize].next_sibling;
            Some(id)
        })
    }

    /// Extracts up to `k` chains of at most `max_len` tokens by heavy-path decomposition (see the
    /// module docs), best first. Empty when `k == 0`, `max_len == 0` or the trie is empty.
    pub fn top_chains(&self, k: usize, max_len: usize) -> Vec<Continuation> {
        self.top_paths(k, max_len)
            .into_iter()
            .map(|(leaf, branch)| self.continuation(leaf, branch))
            .collect()
    }

    /// The `(last node, branch node)` of each extracted chain.
    fn top_paths(&self, k: usize, max_len: usize) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        if k == 0 || max_len == 0 {
            return out;
        }
        let mut frontier: Vec<Candidate> =
            self.children(NONE).map(|c| self.candidate(c, 1)).collect();
        while out.len() < k && !frontier.is_empty() {
            let mut best = 0;
            for i in 1..frontier.len() {
                if self.better(&frontier[i], &frontier[best]) == Ordering::Greater {
                    best = i;
                }
            }
            let Candidate {
                id: branch,
                mut depth,
                ..
            } = frontier.swap_remove(best);
            let mut cur = branch;
            while depth < max_len {
                depth += 1;
                let first = frontier.len();
                frontier.extend(self.children(cur).map(|c| self.candidate(c, depth)));
                // The best child continues the chain; its siblings stay candidates.
                let Some(next) = (first..frontier.len())
                    .max_by(|&a, &b| self.better(&frontier[a], &frontier[b]))
                else {
                    break;
                };
                cur = frontier.swap_remove(next).id;
            }
            out.push((cur, branch));
        }
        out
    }

    fn continuation(&self, leaf: u32, branch: u32) -> Continuation {
        let tokens = self.path(leaf);
        let score = if self.total == 0 {
            0.0
        } else {
            (f64::from(self.nodes[branch as usize].count) / self.total as f64) as f32
        };
        Continuation { tokens, score }
    }

    /// Keeps only the nodes on the top `k` chains of at most `max_len` tokens (what a frozen
    /// store persists per key). Returns `(token, parent, count)` triples in parent-before-child
    /// order, `parent` being an index into the returned list or `u32::MAX` for the root.
    pub fn pruned_nodes(&self, k: usize, max_len: usize) -> Vec<(u32, u32, u32)> {
        let paths = self.top_paths(k, max_len);
        let mut keep = vec![NONE; self.nodes.len()];
        let mut out: Vec<(u32, u32, u32)> = Vec::new();
        let mut stack = Vec::new();
        for (leaf, _) in paths {
            stack.clear();
            let mut cur = leaf;
            while cur != NONE && keep[cur as usize] == NONE {
                stack.push(cur);
                cur = self.nodes[cur as usize].parent;
            }
            let mut parent_new = if cur == NONE {
                NONE
            } else {
                keep[cur as usize]
            };
            while let Some(id) = stack.pop() {
                let node = &self.nodes[id as usize];
                let new_id = out.len() as u32;
                out.push((node.token, parent_new, node.count));
                keep[id as usize] = new_id;
                parent_new = new_id;
            }
        }
        out
    }
}
