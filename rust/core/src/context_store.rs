//! `ContextStore`: the per-request n-gram index (hierarchy level 1) over the prompt and the
//! accepted tokens.
//!
//! For each n in `min_ngram..=max_ngram` it keeps a hash map from the n-gram ending at a position
//! to the latest such position, plus a per-position link to the previous occurrence of the same
//! n-gram. Occurrences of an n-gram are thus a linked list through positions, newest first, and
//! appending a token costs one map update per n (no per-key allocations). The keys are 64-bit
//! hashes; every occurrence is verified against the tokens, so collisions never produce a wrong
//! match.

use ahash::AHashMap;

use crate::continuation::{ChainTrie, Continuation};
use crate::error::{Error, Result};
use crate::ngram_hash;

/// Upper bound on `max_ngram`.
pub const MAX_CONTEXT_NGRAM: usize = 32;
/// How many of the most recent earlier occurrences of the matched suffix a lookup reads.
pub const DEFAULT_MAX_OCCURRENCES: usize = 64;
const NO_POS: u32 = u32::MAX;

/// Per-request n-gram index of a growing token sequence.
#[derive(Clone, Debug)]
pub struct ContextStore {
    min_ngram: usize,
    max_ngram: usize,
    max_occurrences: usize,
    tokens: Vec<u32>,
    /// `last[n - min_ngram]`: n-gram hash -> end position (inclusive) of its latest occurrence.
    last: Vec<AHashMap<u64, u32>>,
    /// `prev[n - min_ngram][pos]`: end position of the previous occurrence of the n-gram ending
    /// at `pos` (same hash), or `NO_POS`.
    prev: Vec<Vec<u32>>,
}

impl Default for ContextStore {
    fn default() -> Self {
        Self::build(Self::DEFAULT_MIN_NGRAM, Self::DEFAULT_MAX_NGRAM)
    }
}

impl ContextStore {
    /// Shortest suffix matched by default: one token still finds a repeat in a short context.
    pub const DEFAULT_MIN_NGRAM: usize = 1;
    /// Longest suffix matched by default.
    pub const DEFAULT_MAX_NGRAM: usize = 4;

    /// An empty store matching suffixes of `min_ngram..=max_ngram` tokens
    /// (`1 <= min_ngram <= max_ngram <= MAX_CONTEXT_NGRAM`).
    pub fn new(min_ngram: usize, max_ngram: usize) -> Result<Self> {
        if min_ngram == 0 || min_ngram > max_ngram || max_ngram > MAX_CONTEXT_NGRAM {
            return Err(Error::InvalidArgument(format!(
                "need 1 <= min_ngram <= max_ngram <= {MAX_CONTEXT_NGRAM}, got min_ngram={min_ngram}, max_ngram={max_ngram}"
            )));
        }
        Ok(Self::build(min_ngram, max_ngram))
    }

    fn build(min_ngram: usize, max_ngram: usize) -> Self {
        let levels = max_ngram - min_ngram + 1;
        ContextStore {
            min_ngram,
            max_ngram,
            max_occurrences: DEFAULT_MAX_OCCURRENCES,
            tokens: Vec::new(),
            last: vec![AHashMap::new(); levels],
            prev: vec![Vec::new(); levels],
        }
    }

    /// A store already holding `tokens`.
    pub fn with_tokens(min_ngram: usize, max_ngram: usize, tokens: &[u32]) -> Result<Self> {
        let mut store = Self::new(min_ngram, max_ngram)?;
        store.extend(tokens);
        Ok(store)
    }

    /// Sets how many of the most recent earlier occurrences a lookup reads (at least 1).
    pub fn set_max_occurrences(&mut self, max_occurrences: usize) {
        self.max_occurrences = max_occurrences.max(1);
    }

    /// Smallest suffix length matched.
    pub fn min_ngram(&self) -> usize {
        self.min_ngram
    }

    /// Largest suffix length matched.
    pub fn max_ngram(&self) -> usize {
        self.max_ngram
    }

    /// Number of tokens held.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when no token was added.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// All tokens, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Appends tokens and indexes the n-grams that end at each of them.
    pub fn extend(&mut self, tokens: &[u32]) {
        // Positions are u32; a request of 4 billion tokens is far outside any use.
        let room = (NO_POS as usize).saturating_sub(self.tokens.len());
        let tokens = &tokens[..tokens.len().min(room)];
        self.tokens.reserve(tokens.len());
        for p in &mut self.prev {
            p.reserve(tokens.len());
        }
        // Each token adds at most one key per map: sized once, a prompt's maps do not rehash
        // over and over as they grow.
        for map in &mut self.last {
            map.reserve(tokens.len());
        }
        for &t in tokens {
            self.tokens.push(t);
            let end = self.tokens.len() - 1;
            for p in &mut self.prev {
                p.push(NO_POS);
            }
            let (min_n, last, prev) = (self.min_ngram, &mut self.last, &mut self.prev);
            ngram_hash::suffix_hashes(&self.tokens, self.max_ngram, |n, h| {
                if n >= min_n {
                    let level = n - min_n;
                    let before = last[level].insert(h, end as u32).unwrap_or(NO_POS);
                    prev[level][end] = before;
                }
            });
        }
    }

    /// Earlier end positions (newest first) of the n-gram that ends the sequence, verified
    /// against the tokens; at most `limit` of them.
    fn earlier_occurrences(&self, n: usize, limit: usize, out: &mut Vec<usize>) {
        out.clear();
        let len = self.tokens.len();
        if n < self.min_ngram || n > self.max_ngram || n > len {
            return;
        }
        let level = n - self.min_ngram;
        let suffix = &self.tokens[len - n..];
        let mut pos = self.prev[level][len - 1];
        // Bound the walk so hash collisions cannot make it long.
        let mut steps = 0;
        while pos != NO_POS && out.len() < limit && steps < 4 * limit {
            let p = pos as usize;
            if p + 1 >= n && &self.tokens[p + 1 - n..=p] == suffix {
                out.push(p);
            }
            pos = self.prev[level][p];
            steps += 1;
        }
    }

    /// Up to `k` continuations of at most `max_len` tokens that followed the earlier occurrences
    /// of the longest suffix (`max_ngram` down to `min_ngram` tokens) of the sequence that
    /// occurred before; ranked by frequency then recency (see [`ChainTrie`]).
    pub fn lookup(&self, k: usize, max_len: usize) -> Vec<Continuation> {
        if k == 0 || max_len == 0 {
            return Vec::new();
        }
        let mut occ = Vec::new();
        let top = self.max_ngram.min(self.tokens.len());
        for n in (self.min_ngram..=top).rev() {
            self.earlier_occurrences(n, self.max_occurrences, &mut occ);
            if occ.is_empty() {
                continue;
            }
            let mut trie = ChainTrie::with_capacity(occ.len() * max_len.min(16));
            for &p in &occ {
                let end = (p + 1).saturating_add(max_len).min(self.tokens.len());
                trie.insert(&self.tokens[p + 1..end], 1, p as u64);
            }
            return trie.top_chains(k, max_len);
        }
        Vec::new()
    }
}
