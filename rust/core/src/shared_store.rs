//! `SharedStore`: what the two stores shared by every request of a drafter — the
//! [`ModelStore`] and the [`CorpusIndex`] — do the same way: look up a context, know their
//! vocabulary, save to a file and load from one.
//!
//! The Python binding serves both classes with one generic function per method. (The drafter
//! calls each store directly: a session's corpus lookups continue from its last match, which a
//! lookup through the trait cannot.) The core types keep their own (inherent) methods with the same
//! signatures; the implementations here forward to them.

use std::path::Path;

use crate::continuation::Continuation;
use crate::corpus_index::CorpusIndex;
use crate::error::{check_vocab, Result};
use crate::model_store::ModelStore;
use crate::persist;

/// A store shared by all requests: looked up with a context, saved and loaded as a file.
pub trait SharedStore: Send + Sync {
    /// The vocabulary size, when the store knows it.
    fn vocab_size(&self) -> Option<u32>;

    /// Up to `k` continuations of at most `max_len` tokens that follow the longest known suffix
    /// of `context`, best first (see the store's own `lookup`).
    fn lookup(&self, context: &[u32], k: usize, max_len: usize) -> Vec<Continuation>;

    /// [`SharedStore::lookup`] that first refuses, with [`crate::Error::TokenOutOfVocab`], a
    /// context holding ids the store's vocabulary cannot contain (a sign of a store used with
    /// another tokenizer).
    fn checked_lookup(
        &self,
        context: &[u32],
        k: usize,
        max_len: usize,
    ) -> Result<Vec<Continuation>> {
        check_vocab(context, self.vocab_size())?;
        Ok(self.lookup(context, k, max_len))
    }

    /// Writes the store to `path` atomically.
    fn save(&self, path: &Path) -> Result<()>;

    /// Loads a store written by [`SharedStore::save`], validating it.
    fn load(path: &Path) -> Result<Self>
    where
        Self: Sized;

    /// [`SharedStore::load`], failing with [`crate::Error::VocabMismatch`] unless the store was
    /// built for `vocab_size`.
    fn load_expecting_vocab(path: &Path, vocab_size: u32) -> Result<Self>
    where
        Self: Sized,
    {
        let store = Self::load(path)?;
        persist::expect_vocab(store.vocab_size(), vocab_size)?;
        Ok(store)
    }
}

/// Implements [`SharedStore`] by forwarding to the core type's inherent methods.
macro_rules! shared_store {
    ($($store:ty),*) => {$(
        impl SharedStore for $store {
            fn vocab_size(&self) -> Option<u32> {
                <$store>::vocab_size(self)
            }

            fn lookup(&self, context: &[u32], k: usize, max_len: usize) -> Vec<Continuation> {
                <$store>::lookup(self, context, k, max_len)
            }

            fn save(&self, path: &Path) -> Result<()> {
                <$store>::save(self, path)
            }

            fn load(path: &Path) -> Result<Self> {
                <$store>::load(path)
            }
        }
    )*};
}

shared_store!(ModelStore, CorpusIndex);
