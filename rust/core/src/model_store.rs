//! `ModelStore`: n-gram key -> frequency-ranked continuation chains (hierarchy level 2), built from
//! the target model's own outputs and grown online from finished requests.
//!
//! Data lives in immutable [`Segment`]s: a frozen base (built by [`ModelStoreBuilder`] or
//! memory-mapped by [`ModelStore::load`]) plus an overlay of small segments published through an
//! [`ArcSwap`] snapshot (LSM-like). [`ModelStore::add`] counts the new sequence into a fresh
//! segment, merges it with similarly sized recent segments (so their number stays logarithmic),
//! and swaps in a new snapshot; writers are serialized by a mutex that readers never touch.
//! Readers load the snapshot without locking or waiting and always see whole segments.
//! A lookup takes the longest key (suffix of the context) present in any segment and adds up
//! that key's tries from all segments before ranking (newer segments win ties).

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::continuation::{ChainTrie, Continuation};
use crate::error::{check_tokens, Error, Result};
use crate::model_segment::{Pruning, Segment, SEQ_SEPARATOR};
use crate::ngram_hash;
use crate::persist::{self, FileContent, FileKind};
use crate::shared_store::SharedStore;

/// Upper bound on `max_ngram`.
pub const MAX_MODEL_NGRAM: usize = 16;
/// Upper bound on `continuation_len`.
pub const MAX_CONTINUATION_LEN: usize = 64;

const KIND: FileKind = FileKind {
    magic: *b"HDMODEL\0",
    version: 1,
    name: "hierdraft model store",
};

/// Settings of a model store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelStoreConfig {
    /// Shortest key, in tokens (>= 1).
    pub min_ngram: usize,
    /// Longest key, in tokens (<= [`MAX_MODEL_NGRAM`]).
    pub max_ngram: usize,
    /// Longest stored continuation chain (1..=[`MAX_CONTINUATION_LEN`]).
    pub continuation_len: usize,
    /// Chains kept per key (>= 1).
    pub top_k: usize,
    /// When known, tokens `>= vocab_size` are rejected.
    pub vocab_size: Option<u32>,
}

impl Default for ModelStoreConfig {
    fn default() -> Self {
        ModelStoreConfig {
            min_ngram: 1,
            max_ngram: 3,
            continuation_len: 6,
            top_k: 8,
            vocab_size: None,
        }
    }
}

impl ModelStoreConfig {
    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<()> {
        let ok = self.min_ngram >= 1
            && self.min_ngram <= self.max_ngram
            && self.max_ngram <= MAX_MODEL_NGRAM
            && (1..=MAX_CONTINUATION_LEN).contains(&self.continuation_len)
            && self.top_k >= 1
            && self.top_k <= u32::MAX as usize;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "model store config needs 1 <= min_ngram <= max_ngram <= {MAX_MODEL_NGRAM}, \
                 1 <= continuation_len <= {MAX_CONTINUATION_LEN}, top_k >= 1; got {self:?}"
            )))
        }
    }

    fn pruning(&self) -> Pruning {
        Pruning {
            top_k: self.top_k,
            len: self.continuation_len,
        }
    }
}

/// Collects sequences, then counts them (in parallel) into a frozen [`ModelStore`].
#[derive(Clone, Debug)]
pub struct ModelStoreBuilder {
    config: ModelStoreConfig,
    /// All sequences, each followed by a separator.
    flat: Vec<u32>,
    metadata: String,
}

impl ModelStoreBuilder {
    /// A builder for a store with `config` (validated).
    pub fn new(config: ModelStoreConfig) -> Result<Self> {
        config.validate()?;
        Ok(ModelStoreBuilder {
            config,
            flat: Vec::new(),
            metadata: String::new(),
        })
    }

    /// Adds one token sequence (keys and chains never cross sequences).
    pub fn add_sequence(&mut self, sequence: &[u32]) -> Result<()> {
        check_tokens(sequence, self.config.vocab_size)?;
        if self.flat.len() + sequence.len() + 1 >= u32::MAX as usize {
            return Err(Error::InvalidArgument(
                "model store input too large (>= 2^32 - 1 tokens)".into(),
            ));
        }
        self.flat.extend_from_slice(sequence);
        self.flat.push(SEQ_SEPARATOR);
        Ok(())
    }

    /// Sets the free-form metadata string stored with the model store.
    pub fn set_metadata(&mut self, metadata: impl Into<String>) {
        self.metadata = metadata.into();
    }

    /// Number of tokens added so far.
    pub fn num_tokens(&self) -> usize {
        self.flat.len()
    }

    /// Counts all sequences and freezes the result.
    pub fn build(self) -> ModelStore {
        let base = Segment::count(
            &self.flat,
            self.config.min_ngram,
            self.config.max_ngram,
            self.config.pruning(),
        );
        let store = ModelStore::from_base(self.config, base);
        store.set_metadata(self.metadata);
        store
    }
}

/// The online part: small segments, oldest first, with the number of distinct keys overall.
#[derive(Debug, Default)]
struct Overlay {
    segments: Vec<Arc<Segment>>,
    num_keys: usize,
}

/// Frozen n-gram -> continuation store with a lock-free online overlay. `Send + Sync`.
#[derive(Debug)]
pub struct ModelStore {
    config: ModelStoreConfig,
    /// Replaceable through `&self` like the overlay: a store shared with running drafters can
    /// still be told what it now holds (e.g. after a merge) before it is saved.
    metadata: ArcSwap<String>,
    base: Segment,
    overlay: ArcSwap<Overlay>,
    writer: Mutex<()>,
}

impl ModelStore {
    fn from_base(config: ModelStoreConfig, base: Segment) -> Self {
        let num_keys = base.num_entries();
        ModelStore {
            config,
            metadata: ArcSwap::from_pointee(String::new()),
            base,
            overlay: ArcSwap::from_pointee(Overlay {
                segments: Vec::new(),
                num_keys,
            }),
            writer: Mutex::new(()),
        }
    }

    /// An empty store that only learns online.
    pub fn empty(config: ModelStoreConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::from_base(config, Segment::empty()))
    }

    /// Counts `sequences` into a frozen store.
    pub fn from_sequences<S: AsRef<[u32]>>(
        config: ModelStoreConfig,
        sequences: &[S],
    ) -> Result<Self> {
        let mut builder = ModelStoreBuilder::new(config)?;
        for s in sequences {
            builder.add_sequence(s.as_ref())?;
        }
        Ok(builder.build())
    }

    /// The configuration.
    pub fn config(&self) -> &ModelStoreConfig {
        &self.config
    }

    /// The vocabulary size, when known.
    pub fn vocab_size(&self) -> Option<u32> {
        self.config.vocab_size
    }

    /// Free-form description stored in the file (e.g. tokenizer name and vocabulary hash).
    pub fn metadata(&self) -> String {
        self.metadata.load().as_ref().clone()
    }

    /// Replaces the free-form description stored in the file (readers are never blocked).
    pub fn set_metadata(&self, metadata: impl Into<String>) {
        self.metadata.store(Arc::new(metadata.into()));
    }

    /// Number of distinct keys, online additions included.
    pub fn num_keys(&self) -> usize {
        self.overlay.load().num_keys
    }

    /// Number of online segments (for monitoring; stays logarithmic in the data added).
    pub fn num_overlay_segments(&self) -> usize {
        self.overlay.load().segments.len()
    }

    /// True when the frozen base is used in place from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        self.base.is_mapped()
    }

    /// Up to `k` continuations (at most `max_len` tokens, and never more than
    /// `continuation_len`) of the longest key that is a suffix of `context`, best first; shorter
    /// keys are tried when longer ones are unknown.
    pub fn lookup(&self, context: &[u32], k: usize, max_len: usize) -> Vec<Continuation> {
        if k == 0 || max_len == 0 {
            return Vec::new();
        }
        let overlay = self.overlay.load();
        let mut hashes = [0u64; MAX_MODEL_NGRAM + 1];
        ngram_hash::suffix_hashes(context, self.config.max_ngram, |n, h| hashes[n] = h);
        let top = self.config.max_ngram.min(context.len());
        let mut ids = Vec::new();
        for n in (self.config.min_ngram..=top).rev() {
            let key = &context[context.len() - n..];
            let segments = std::iter::once(&self.base).chain(overlay.segments.iter().map(|s| &**s));
            let mut trie: Option<ChainTrie> = None;
            for (age, seg) in segments.enumerate() {
                if let Some(e) = seg.find(key, hashes[n]) {
                    let t = trie.get_or_insert_with(|| ChainTrie::with_capacity(64));
                    seg.add_to_trie(e, t, age as u64, &mut ids);
                }
            }
            if let Some(t) = trie {
                return t.top_chains(k, max_len.min(self.config.continuation_len));
            }
        }
        Vec::new()
    }

    /// Learns `sequence` online. Concurrent readers keep reading the previous snapshot until the
    /// new one is published; writers wait for each other.
    pub fn add(&self, sequence: &[u32]) -> Result<()> {
        check_tokens(sequence, self.config.vocab_size)?;
        if sequence.len() >= (u32::MAX - 1) as usize {
            return Err(Error::InvalidArgument("sequence too long".into()));
        }
        let mut flat = Vec::with_capacity(sequence.len() + 1);
        flat.extend_from_slice(sequence);
        flat.push(SEQ_SEPARATOR);
        let pruning = self.config.pruning();
        let fresh = Segment::count(&flat, self.config.min_ngram, self.config.max_ngram, pruning);
        if fresh.num_entries() == 0 {
            return Ok(());
        }
        // A poisoned lock only means another writer panicked; the published data is immutable.
        let _guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.overlay.load_full();
        let new_keys = fresh
            .keys()
            .filter(|key| {
                let h = ngram_hash::hash(key);
                self.base.find(key, h).is_none()
                    && current.segments.iter().all(|s| s.find(key, h).is_none())
            })
            .count();
        let mut segments = current.segments.clone();
        let mut newest = fresh;
        // Merge while the previous segment is not much larger than the new one.
        while let Some(prev) = segments.last() {
            if prev.num_nodes() > 2 * newest.num_nodes() {
                break;
            }
            newest = Segment::merge(prev, &newest, pruning);
            segments.pop();
        }
        segments.push(Arc::new(newest));
        self.overlay.store(Arc::new(Overlay {
            segments,
            num_keys: current.num_keys + new_keys,
        }));
        Ok(())
    }

    /// Base and overlay merged into one segment (what `save` writes).
    fn merged(&self) -> Segment {
        let overlay = self.overlay.load();
        let pruning = self.config.pruning();
        overlay.segments.iter().fold(self.base.clone(), |acc, seg| {
            Segment::merge(&acc, seg, pruning)
        })
    }

    /// Writes the store (online additions included) to `path` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let merged = self.merged();
        let metadata = self.metadata.load();
        let c = &self.config;
        persist::write_file(
            path.as_ref(),
            &KIND,
            &FileContent {
                vocab_size: c.vocab_size,
                params: &[
                    c.min_ngram as u64,
                    c.max_ngram as u64,
                    c.continuation_len as u64,
                    c.top_k as u64,
                ],
                metadata: &metadata,
                sections: &merged.sections(),
            },
        )
    }

    /// Loads a store saved by [`ModelStore::save`] (memory-mapped), validating the header,
    /// checksum and structure.
    pub fn load(path: impl AsRef<Path>) -> Result<ModelStore> {
        let file = persist::read_file(path.as_ref(), &KIND)?;
        let [min_ngram, max_ngram, continuation_len, top_k] = file.params[..] else {
            return Err(file.corrupt("expected 4 parameters"));
        };
        let to_usize = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
        let config = ModelStoreConfig {
            min_ngram: to_usize(min_ngram),
            max_ngram: to_usize(max_ngram),
            continuation_len: to_usize(continuation_len),
            top_k: to_usize(top_k),
            vocab_size: file.vocab_size,
        };
        config
            .validate()
            .map_err(|e| file.corrupt(format!("stored configuration: {e}")))?;
        let base = Segment::from_file(
            &file,
            config.min_ngram..config.max_ngram + 1,
            config.vocab_size,
        )?;
        let store = ModelStore::from_base(config, base);
        store.set_metadata(file.metadata);
        Ok(store)
    }

    /// [`ModelStore::load`], failing with [`Error::VocabMismatch`] unless the store was built
    /// for `vocab_size`.
    pub fn load_expecting_vocab(path: impl AsRef<Path>, vocab_size: u32) -> Result<ModelStore> {
        <Self as SharedStore>::load_expecting_vocab(path.as_ref(), vocab_size)
    }
}
