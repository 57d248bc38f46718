//! One immutable segment of a model store: n-gram keys mapped to small pruned continuation tries,
//! laid out as flat `u32` arrays (so a segment can live in a memory-mapped file) with an
//! open-addressing hash table over the keys.
//!
//! Arrays (`E` entries, `N` nodes in total):
//! - `table`: power-of-two open-addressing table of `entry + 1` (0 = empty), probed linearly
//!   from `ngram_hash::hash(key)`; always has an empty slot.
//! - `key_offsets` (E + 1) into `key_tokens`; `node_offsets` (E + 1) into the node arrays.
//! - `node_tokens`, `node_parents`, `node_counts` (N each): each entry's trie in
//!   parent-before-child order, parents as indices local to the entry (`u32::MAX` = root).
//! - `totals` (E): how many times the key was seen followed by a token.

use std::cmp::Ordering;
use std::ops::Range;

use rayon::prelude::*;

use crate::continuation::ChainTrie;
use crate::ngram_hash;
use crate::persist::{LoadedFile, U32Array};

const ROOT: u32 = u32::MAX;
/// The document separator inside a builder's flat token buffer.
pub(crate) const SEQ_SEPARATOR: u32 = u32::MAX;
/// Inputs smaller than this are counted on the calling thread.
const PARALLEL_MIN_TOKENS: usize = 1 << 15;

#[derive(Clone, Debug)]
pub(crate) struct Segment {
    table: U32Array,
    key_offsets: U32Array,
    key_tokens: U32Array,
    node_offsets: U32Array,
    node_tokens: U32Array,
    node_parents: U32Array,
    node_counts: U32Array,
    totals: U32Array,
}

/// How to shape continuation tries: chains of at most `len` tokens, `top_k` of them per key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pruning {
    pub top_k: usize,
    pub len: usize,
}

impl Segment {
    /// A segment without keys.
    pub fn empty() -> Segment {
        SegmentBuilder::default().finish()
    }

    /// Number of keys.
    pub fn num_entries(&self) -> usize {
        self.totals.len()
    }

    /// Number of trie nodes over all keys.
    pub fn num_nodes(&self) -> usize {
        self.node_tokens.len()
    }

    /// True when the arrays are used in place from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        self.table.is_mapped() && self.key_tokens.is_mapped()
    }

    /// The keys, in entry order.
    pub fn keys(&self) -> impl Iterator<Item = &[u32]> + '_ {
        (0..self.num_entries()).map(|e| self.key(e))
    }

    fn key(&self, entry: usize) -> &[u32] {
        &self.key_tokens[self.key_offsets[entry] as usize..self.key_offsets[entry + 1] as usize]
    }

    fn nodes(&self, entry: usize) -> Range<usize> {
        self.node_offsets[entry] as usize..self.node_offsets[entry + 1] as usize
    }

    /// The entry of `key`, whose hash is `hash`.
    pub fn find(&self, key: &[u32], hash: u64) -> Option<usize> {
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        let mask = len - 1;
        let mut slot = hash as usize & mask;
        for _ in 0..len {
            let e = self.table[slot] as usize;
            if e == 0 {
                return None;
            }
            if self.key(e - 1) == key {
                return Some(e - 1);
            }
            slot = (slot + 1) & mask;
        }
        None
    }

    /// Adds entry `entry`'s trie and total into `trie`, tagging nodes with `recency`.
    pub fn add_to_trie(
        &self,
        entry: usize,
        trie: &mut ChainTrie,
        recency: u64,
        ids: &mut Vec<u32>,
    ) {
        trie.add_total(u64::from(self.totals[entry]));
        ids.clear();
        for i in self.nodes(entry) {
            let parent = self.node_parents[i];
            let parent = (parent != ROOT).then(|| ids[parent as usize]);
            ids.push(trie.add_node(parent, self.node_tokens[i], self.node_counts[i], recency));
        }
    }

    /// Counts every n-gram key (`min_n..=max_n` tokens, never containing a separator) of `flat`
    /// with the chains of up to `pruning.len` tokens that follow it within its sequence.
    pub fn count(flat: &[u32], min_n: usize, max_n: usize, pruning: Pruning) -> Segment {
        let parallel = flat.len() >= PARALLEL_MIN_TOKENS;
        // (hash, end position, n) of every key occurrence followed by a token.
        let occurrences = |n: usize| {
            move |p: usize| -> Option<(u64, u32, u32)> {
                let follows = flat.get(p + 1).is_some_and(|&t| t != SEQ_SEPARATOR);
                let key = flat.get((p + 1).checked_sub(n)?..=p)?;
                (follows && !key.contains(&SEQ_SEPARATOR))
                    .then(|| (ngram_hash::hash(key), p as u32, n as u32))
            }
        };
        let mut occ: Vec<(u64, u32, u32)> = Vec::new();
        for n in min_n..=max_n {
            if parallel {
                occ.par_extend((0..flat.len()).into_par_iter().filter_map(occurrences(n)));
            } else {
                occ.extend((0..flat.len()).filter_map(occurrences(n)));
            }
        }
        let key_of = |&(_, p, n): &(u64, u32, u32)| &flat[(p + 1 - n) as usize..=p as usize];
        let order = |a: &(u64, u32, u32), b: &(u64, u32, u32)| -> Ordering {
            a.0.cmp(&b.0)
                .then(a.2.cmp(&b.2))
                .then_with(|| key_of(a).cmp(key_of(b)))
        };
        if parallel {
            occ.par_sort_unstable_by(order);
        } else {
            occ.sort_unstable_by(order);
        }
        let mut groups = Vec::new();
        let mut start = 0;
        for i in 1..=occ.len() {
            if i == occ.len() || order(&occ[i - 1], &occ[i]) != Ordering::Equal {
                groups.push(start..i);
                start = i;
            }
        }
        let chain_at = |p: u32| {
            let from = p as usize + 1;
            let chain = &flat[from..(from + pruning.len).min(flat.len())];
            let end = chain
                .iter()
                .position(|&t| t == SEQ_SEPARATOR)
                .unwrap_or(chain.len());
            &chain[..end]
        };
        let entry = |g: &Range<usize>| {
            // Sorted chains make every trie insertion hit the head of its sibling list.
            let mut chains: Vec<&[u32]> = occ[g.clone()].iter().map(|o| chain_at(o.1)).collect();
            chains.sort_unstable();
            let mut trie = ChainTrie::with_capacity(chains.len().min(4096) * pruning.len);
            for chain in chains {
                trie.insert(chain, 1, 0);
            }
            let total = u32::try_from(trie.total()).unwrap_or(u32::MAX);
            (
                key_of(&occ[g.start]),
                total,
                trie.pruned_nodes(pruning.top_k, pruning.len),
            )
        };
        let entries: Vec<_> = if parallel {
            groups.par_iter().map(entry).collect()
        } else {
            groups.iter().map(entry).collect()
        };
        let mut builder = SegmentBuilder::default();
        for (key, total, nodes) in &entries {
            builder.push(key, *total, nodes.iter().copied());
        }
        builder.finish()
    }

    /// Merges `older` and `newer` (same key lengths) into one segment; tries of keys present in
    /// both are added up and pruned again.
    pub fn merge(older: &Segment, newer: &Segment, pruning: Pruning) -> Segment {
        let mut builder = SegmentBuilder::default();
        let mut trie = ChainTrie::new();
        let mut ids = Vec::new();
        let copy = |builder: &mut SegmentBuilder, seg: &Segment, e: usize| {
            let nodes = seg
                .nodes(e)
                .map(|i| (seg.node_tokens[i], seg.node_parents[i], seg.node_counts[i]));
            builder.push(seg.key(e), seg.totals[e], nodes);
        };
        for e in 0..older.num_entries() {
            let key = older.key(e);
            match newer.find(key, ngram_hash::hash(key)) {
                None => copy(&mut builder, older, e),
                Some(f) => {
                    trie.clear();
                    older.add_to_trie(e, &mut trie, 0, &mut ids);
                    newer.add_to_trie(f, &mut trie, 1, &mut ids);
                    let total = u32::try_from(trie.total()).unwrap_or(u32::MAX);
                    builder.push(key, total, trie.pruned_nodes(pruning.top_k, pruning.len));
                }
            }
        }
        for f in 0..newer.num_entries() {
            let key = newer.key(f);
            if older.find(key, ngram_hash::hash(key)).is_none() {
                copy(&mut builder, newer, f);
            }
        }
        builder.finish()
    }

    /// The arrays in file order (see the module docs).
    pub fn sections(&self) -> [&[u32]; 8] {
        [
            &self.table,
            &self.key_offsets,
            &self.key_tokens,
            &self.node_offsets,
            &self.node_tokens,
            &self.node_parents,
            &self.node_counts,
            &self.totals,
        ]
    }

    /// Rebuilds a segment from the arrays of a loaded file, checking every invariant lookups
    /// rely on.
    pub fn from_file(
        file: &LoadedFile,
        key_lens: Range<usize>,
        vocab: Option<u32>,
    ) -> crate::Result<Segment> {
        let [table, key_offsets, key_tokens, node_offsets, node_tokens, node_parents, node_counts, totals] =
            &file.sections[..]
        else {
            return Err(file.corrupt("expected 8 sections"));
        };
        let seg = Segment {
            table: table.clone(),
            key_offsets: key_offsets.clone(),
            key_tokens: key_tokens.clone(),
            node_offsets: node_offsets.clone(),
            node_tokens: node_tokens.clone(),
            node_parents: node_parents.clone(),
            node_counts: node_counts.clone(),
            totals: totals.clone(),
        };
        seg.validate(key_lens, vocab)
            .map_err(|why| file.corrupt(why))?;
        Ok(seg)
    }

    fn validate(&self, key_lens: Range<usize>, vocab: Option<u32>) -> Result<(), String> {
        let e = self.totals.len();
        let offsets_ok = |off: &[u32], len: usize| {
            off.len() == e + 1
                && off.first() == Some(&0)
                && off.last().map(|&x| x as usize) == Some(len)
                && off.windows(2).all(|w| w[0] <= w[1])
        };
        if !offsets_ok(&self.key_offsets, self.key_tokens.len()) {
            return Err("bad key offsets".into());
        }
        if !offsets_ok(&self.node_offsets, self.node_tokens.len())
            || self.node_parents.len() != self.node_tokens.len()
            || self.node_counts.len() != self.node_tokens.len()
        {
            return Err("bad node offsets".into());
        }
        if self
            .key_offsets
            .windows(2)
            .any(|w| !key_lens.contains(&((w[1] - w[0]) as usize)))
        {
            return Err("key length outside the configured n-gram range".into());
        }
        for entry in 0..e {
            let range = self.nodes(entry);
            let start = range.start;
            if range.clone().any(|i| {
                let p = self.node_parents[i];
                p != ROOT && p as usize >= i - start
            }) {
                return Err("node parent does not precede its child".into());
            }
        }
        let t = self.table.len();
        if e > 0 && (!t.is_power_of_two() || t <= e) {
            return Err("bad hash table size".into());
        }
        if self.table.iter().any(|&x| x as usize > e) {
            return Err("hash table entry out of range".into());
        }
        let limit = vocab.unwrap_or(u32::MAX);
        if self
            .key_tokens
            .iter()
            .chain(self.node_tokens.iter())
            .any(|&x| x >= limit)
        {
            return Err("token out of the stored vocabulary".into());
        }
        Ok(())
    }
}

/// Appends entries to flat arrays, then builds the hash table.
#[derive(Default)]
struct SegmentBuilder {
    key_offsets: Vec<u32>,
    key_tokens: Vec<u32>,
    node_offsets: Vec<u32>,
    node_tokens: Vec<u32>,
    node_parents: Vec<u32>,
    node_counts: Vec<u32>,
    totals: Vec<u32>,
}

impl SegmentBuilder {
    fn push(&mut self, key: &[u32], total: u32, nodes: impl IntoIterator<Item = (u32, u32, u32)>) {
        if self.key_offsets.is_empty() {
            self.key_offsets.push(0);
            self.node_offsets.push(0);
        }
        self.key_tokens.extend_from_slice(key);
        self.key_offsets.push(self.key_tokens.len() as u32);
        for (token, parent, count) in nodes {
            self.node_tokens.push(token);
            self.node_parents.push(parent);
            self.node_counts.push(count);
        }
        self.node_offsets.push(self.node_tokens.len() as u32);
        self.totals.push(total);
    }

    fn finish(mut self) -> Segment {
        if self.key_offsets.is_empty() {
            self.key_offsets.push(0);
            self.node_offsets.push(0);
        }
        let e = self.totals.len();
        let size = if e == 0 {
            0
        } else {
            (2 * e).next_power_of_two()
        };
        let mut table = vec![0u32; size];
        for entry in 0..e {
            let key = &self.key_tokens
                [self.key_offsets[entry] as usize..self.key_offsets[entry + 1] as usize];
            let mut slot = ngram_hash::hash(key) as usize & (size - 1);
            while table[slot] != 0 {
                slot = (slot + 1) & (size - 1);
            }
            table[slot] = entry as u32 + 1;
        }
        Segment {
            table: table.into(),
            key_offsets: self.key_offsets.into(),
            key_tokens: self.key_tokens.into(),
            node_offsets: self.node_offsets.into(),
            node_tokens: self.node_tokens.into(),
            node_parents: self.node_parents.into(),
            node_counts: self.node_counts.into(),
            totals: self.totals.into(),
        }
    }
}
