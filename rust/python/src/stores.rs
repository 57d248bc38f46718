//! Python classes of the three token stores: `ContextStore`, `ModelStore`, `CorpusIndex`.
//!
//! Translation only: inputs are validated and copied into Rust values, the GIL is released around
//! every lookup / build / load / save, and core errors become Python exceptions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hierdraft_core::{
    ContextStore, Continuation, CorpusIndex, ModelStore, ModelStoreBuilder, ModelStoreConfig,
};
use numpy::PyArray1;
use pyo3::prelude::*;

use crate::convert;
use crate::errors::{poisoned, to_py};

/// Per-request n-gram index over a growing token sequence (hierarchy level 1).
#[pyclass(frozen, name = "ContextStore", module = "hierdraft._core")]
pub struct PyContextStore {
    inner: RwLock<ContextStore>,
}

#[pymethods]
impl PyContextStore {
    #[new]
    #[pyo3(signature = (min_ngram = 1, max_ngram = 4))]
    fn new(min_ngram: i64, max_ngram: i64) -> PyResult<Self> {
        let store = ContextStore::new(
            convert::count("min_ngram", min_ngram)?,
            convert::count("max_ngram", max_ngram)?,
        )
        .map_err(to_py)?;
        Ok(Self {
            inner: RwLock::new(store),
        })
    }

    /// Appends tokens to the sequence.
    fn extend(&self, py: Python<'_>, tokens: &Bound<'_, PyAny>) -> PyResult<()> {
        let tokens = convert::tokens(tokens, "tokens")?;
        py.detach(|| {
            let mut store = self.inner.write().map_err(|_| poisoned())?;
            store.extend(&tokens);
            Ok(())
        })
    }

    /// Up to `k` continuations (tokens, score) of at most `max_len` tokens, best first.
    #[pyo3(signature = (k = 8, max_len = 8))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        k: i64,
        max_len: i64,
    ) -> PyResult<Vec<(Bound<'py, PyArray1<u32>>, f32)>> {
        let (k, max_len) = (convert::count("k", k)?, convert::count("max_len", max_len)?);
        let found = py.detach(|| {
            let store = self.inner.read().map_err(|_| poisoned())?;
            Ok::<_, PyErr>(store.lookup(k, max_len))
        })?;
        Ok(convert::continuations(py, found))
    }

    /// All tokens so far (uint32).
    #[getter]
    fn tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let store = self.inner.read().map_err(|_| poisoned())?;
        Ok(PyArray1::from_slice(py, store.tokens()))
    }

    #[getter]
    fn min_ngram(&self) -> PyResult<usize> {
        Ok(self.inner.read().map_err(|_| poisoned())?.min_ngram())
    }

    #[getter]
    fn max_ngram(&self) -> PyResult<usize> {
        Ok(self.inner.read().map_err(|_| poisoned())?.max_ngram())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.inner.read().map_err(|_| poisoned())?.len())
    }

    fn __repr__(&self) -> PyResult<String> {
        let s = self.inner.read().map_err(|_| poisoned())?;
        Ok(format!(
            "ContextStore(min_ngram={}, max_ngram={}, len={})",
            s.min_ngram(),
            s.max_ngram(),
            s.len()
        ))
    }
}

/// What the Python classes of the two shared stores (`ModelStore`, `CorpusIndex`) do the same
/// way: look up a context, save to a file, load from one. The core types have these methods with
/// the same signatures; the trait lets one generic function per Python method serve both.
trait SharedStore: Sized + Send + Sync {
    fn vocab_size(&self) -> Option<u32>;
    fn lookup(&self, context: &[u32], k: usize, max_len: usize) -> Vec<Continuation>;
    fn save(&self, path: &Path) -> hierdraft_core::Result<()>;
    fn load(path: &Path) -> hierdraft_core::Result<Self>;
    fn load_expecting_vocab(path: &Path, vocab_size: u32) -> hierdraft_core::Result<Self>;
}

/// Implements [`SharedStore`] by forwarding to the core type's own (inherent) methods.
macro_rules! shared_store {
    ($($store:ty),*) => {$(
        impl SharedStore for $store {
            fn vocab_size(&self) -> Option<u32> {
                <$store>::vocab_size(self)
            }

            fn lookup(&self, context: &[u32], k: usize, max_len: usize) -> Vec<Continuation> {
                <$store>::lookup(self, context, k, max_len)
            }

            fn save(&self, path: &Path) -> hierdraft_core::Result<()> {
                <$store>::save(self, path)
            }

            fn load(path: &Path) -> hierdraft_core::Result<Self> {
                <$store>::load(path)
            }

            fn load_expecting_vocab(path: &Path, vocab_size: u32) -> hierdraft_core::Result<Self> {
                <$store>::load_expecting_vocab(path, vocab_size)
            }
        }
    )*};
}

shared_store!(ModelStore, CorpusIndex);

/// `lookup(context, k, max_len)` of a shared store: validates the arguments (context tokens,
/// their vocabulary, then `k` and `max_len`) and looks up without the GIL.
fn lookup<'py, S: SharedStore>(
    store: &S,
    py: Python<'py>,
    context: &Bound<'py, PyAny>,
    k: i64,
    max_len: i64,
) -> PyResult<Vec<(Bound<'py, PyArray1<u32>>, f32)>> {
    let context = convert::tokens(context, "context")?;
    convert::check_vocab(&context, store.vocab_size(), "context")?;
    let (k, max_len) = (convert::count("k", k)?, convert::count("max_len", max_len)?);
    let found = py.detach(|| store.lookup(&context, k, max_len));
    Ok(convert::continuations(py, found))
}

/// `save(path)` of a shared store, without the GIL.
fn save<S: SharedStore>(store: &S, py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| store.save(&path)).map_err(to_py)
}

/// `load(path, expected_vocab_size)` of a shared store, without the GIL; with
/// `expected_vocab_size`, a file built for another vocabulary is rejected.
fn load<S: SharedStore>(
    py: Python<'_>,
    path: PathBuf,
    expected_vocab_size: Option<i64>,
) -> PyResult<Arc<S>> {
    let expected = convert::vocab_size(expected_vocab_size)?;
    let store = py
        .detach(|| match expected {
            Some(v) => S::load_expecting_vocab(&path, v),
            None => S::load(&path),
        })
        .map_err(to_py)?;
    Ok(Arc::new(store))
}

/// n-gram -> continuation statistics of the target model's own outputs (hierarchy level 2).
#[pyclass(frozen, name = "ModelStore", module = "hierdraft._core")]
pub struct PyModelStore {
    pub(crate) inner: Arc<ModelStore>,
}

fn model_config(
    min_ngram: i64,
    max_ngram: i64,
    continuation_len: i64,
    top_k: i64,
    vocab_size: Option<i64>,
) -> PyResult<ModelStoreConfig> {
    Ok(ModelStoreConfig {
        min_ngram: convert::count("min_ngram", min_ngram)?,
        max_ngram: convert::count("max_ngram", max_ngram)?,
        continuation_len: convert::count("continuation_len", continuation_len)?,
        top_k: convert::count("top_k", top_k)?,
        vocab_size: convert::vocab_size(vocab_size)?,
    })
}

fn build_model_store(
    config: ModelStoreConfig,
    sequences: &[Vec<u32>],
    metadata: String,
) -> hierdraft_core::Result<ModelStore> {
    let mut builder = ModelStoreBuilder::new(config)?;
    for seq in sequences {
        builder.add_sequence(seq)?;
    }
    let mut store = builder.build();
    store.set_metadata(metadata);
    Ok(store)
}

#[pymethods]
impl PyModelStore {
    /// An empty store that grows with `add()`.
    #[new]
    #[pyo3(signature = (min_ngram = 1, max_ngram = 3, continuation_len = 6, top_k = 8, vocab_size = None, metadata = ""))]
    fn new(
        py: Python<'_>,
        min_ngram: i64,
        max_ngram: i64,
        continuation_len: i64,
        top_k: i64,
        vocab_size: Option<i64>,
        metadata: &str,
    ) -> PyResult<Self> {
        let config = model_config(min_ngram, max_ngram, continuation_len, top_k, vocab_size)?;
        let metadata = metadata.to_string();
        let store = py
            .detach(|| build_model_store(config, &[], metadata))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(store),
        })
    }

    /// Counts the n-gram continuations of `sequences` and freezes them into a store.
    #[staticmethod]
    #[pyo3(signature = (sequences, min_ngram = 1, max_ngram = 3, continuation_len = 6, top_k = 8, vocab_size = None, metadata = ""))]
    #[allow(clippy::too_many_arguments)]
    fn build(
        py: Python<'_>,
        sequences: &Bound<'_, PyAny>,
        min_ngram: i64,
        max_ngram: i64,
        continuation_len: i64,
        top_k: i64,
        vocab_size: Option<i64>,
        metadata: &str,
    ) -> PyResult<Self> {
        let config = model_config(min_ngram, max_ngram, continuation_len, top_k, vocab_size)?;
        let sequences = convert::token_lists(sequences, "sequences")?;
        let metadata = metadata.to_string();
        let store = py
            .detach(|| build_model_store(config, &sequences, metadata))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(store),
        })
    }

    /// Adds one finished sequence online; concurrent readers never block.
    fn add(&self, py: Python<'_>, sequence: &Bound<'_, PyAny>) -> PyResult<()> {
        let sequence = convert::tokens(sequence, "sequence")?;
        py.detach(|| self.inner.add(&sequence)).map_err(to_py)
    }

    /// Up to `k` continuations (tokens, score) of the longest known suffix of `context`.
    #[pyo3(signature = (context, k = 8, max_len = 8))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        context: &Bound<'py, PyAny>,
        k: i64,
        max_len: i64,
    ) -> PyResult<Vec<(Bound<'py, PyArray1<u32>>, f32)>> {
        lookup(&*self.inner, py, context, k, max_len)
    }

    /// Writes the store to `path` atomically (temporary file + rename).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        save(&*self.inner, py, path)
    }

    /// Loads a store saved by `save()`; with `expected_vocab_size`, a store built for another
    /// vocabulary is rejected.
    #[staticmethod]
    #[pyo3(signature = (path, expected_vocab_size = None))]
    fn load(py: Python<'_>, path: PathBuf, expected_vocab_size: Option<i64>) -> PyResult<Self> {
        Ok(Self {
            inner: load(py, path, expected_vocab_size)?,
        })
    }

    #[getter]
    fn num_keys(&self) -> usize {
        self.inner.num_keys()
    }

    #[getter]
    fn min_ngram(&self) -> usize {
        self.inner.config().min_ngram
    }

    #[getter]
    fn max_ngram(&self) -> usize {
        self.inner.config().max_ngram
    }

    #[getter]
    fn continuation_len(&self) -> usize {
        self.inner.config().continuation_len
    }

    #[getter]
    fn top_k(&self) -> usize {
        self.inner.config().top_k
    }

    #[getter]
    fn vocab_size(&self) -> Option<u32> {
        self.inner.config().vocab_size
    }

    #[getter]
    fn metadata(&self) -> String {
        self.inner.metadata().to_string()
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "ModelStore(num_keys={}, min_ngram={}, max_ngram={}, continuation_len={}, top_k={}, vocab_size={})",
            self.inner.num_keys(),
            c.min_ngram,
            c.max_ngram,
            c.continuation_len,
            c.top_k,
            c.vocab_size.map_or_else(|| "None".to_string(), |v| v.to_string())
        )
    }
}

/// Suffix array over a tokenized corpus (hierarchy level 3).
#[pyclass(frozen, name = "CorpusIndex", module = "hierdraft._core")]
pub struct PyCorpusIndex {
    pub(crate) inner: Arc<CorpusIndex>,
}

#[pymethods]
impl PyCorpusIndex {
    /// Builds the index over `documents` (no match crosses a document boundary).
    #[staticmethod]
    #[pyo3(signature = (documents, vocab_size = None, metadata = ""))]
    fn build(
        py: Python<'_>,
        documents: &Bound<'_, PyAny>,
        vocab_size: Option<i64>,
        metadata: &str,
    ) -> PyResult<Self> {
        let vocab_size = convert::vocab_size(vocab_size)?;
        let documents = convert::token_lists(documents, "documents")?;
        let metadata = metadata.to_string();
        let index = py
            .detach(|| {
                let mut index = CorpusIndex::from_documents(documents, vocab_size)?;
                index.set_metadata(metadata);
                Ok::<_, hierdraft_core::Error>(index)
            })
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(index),
        })
    }

    /// Up to `k` continuations (tokens, score) of the longest suffix of `context` (at most 16
    /// tokens) found in the corpus.
    #[pyo3(signature = (context, k = 8, max_len = 8))]
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        context: &Bound<'py, PyAny>,
        k: i64,
        max_len: i64,
    ) -> PyResult<Vec<(Bound<'py, PyArray1<u32>>, f32)>> {
        lookup(&*self.inner, py, context, k, max_len)
    }

    /// Writes the index to `path` atomically (temporary file + rename).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        save(&*self.inner, py, path)
    }

    /// Memory-maps an index saved by `save()`; with `expected_vocab_size`, an index built for
    /// another vocabulary is rejected.
    #[staticmethod]
    #[pyo3(signature = (path, expected_vocab_size = None))]
    fn load(py: Python<'_>, path: PathBuf, expected_vocab_size: Option<i64>) -> PyResult<Self> {
        Ok(Self {
            inner: load(py, path, expected_vocab_size)?,
        })
    }

    #[getter]
    fn num_tokens(&self) -> usize {
        self.inner.num_tokens()
    }

    #[getter]
    fn num_documents(&self) -> usize {
        self.inner.num_documents()
    }

    #[getter]
    fn bytes_per_token(&self) -> f64 {
        self.inner.bytes_per_token()
    }

    #[getter]
    fn vocab_size(&self) -> Option<u32> {
        self.inner.vocab_size()
    }

    #[getter]
    fn metadata(&self) -> String {
        self.inner.metadata().to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "CorpusIndex(num_tokens={}, num_documents={}, vocab_size={})",
            self.inner.num_tokens(),
            self.inner.num_documents(),
            self.inner
                .vocab_size()
                .map_or_else(|| "None".to_string(), |v| v.to_string())
        )
    }
}
