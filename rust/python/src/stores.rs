//! Python classes of the three token stores: `ContextStore`, `ModelStore`, `CorpusIndex`.
//!
//! Translation only: inputs are validated and copied into Rust values, settings left out (`None`)
//! take the core's defaults, the GIL is released around every lookup / build / load / save, and
//! core errors become Python exceptions. Both shared stores are served through the core's
//! [`SharedStore`] trait, one generic function per Python method.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use hierdraft_core::model_store::MAX_MODEL_NGRAM;
use hierdraft_core::{ContextStore, CorpusIndex, ModelStore, ModelStoreConfig, SharedStore};
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
    #[pyo3(signature = (min_ngram = None, max_ngram = None))]
    fn new(min_ngram: Option<i64>, max_ngram: Option<i64>) -> PyResult<Self> {
        let store = ContextStore::new(
            convert::setting("min_ngram", min_ngram, ContextStore::DEFAULT_MIN_NGRAM)?,
            convert::setting("max_ngram", max_ngram, ContextStore::DEFAULT_MAX_NGRAM)?,
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

/// `lookup(context, k, max_len)` of a shared store: validates the arguments (context tokens,
/// then `k` and `max_len`) and looks up without the GIL (the core refuses ids outside the
/// store's vocabulary).
fn lookup<'py, S: SharedStore>(
    store: &S,
    py: Python<'py>,
    context: &Bound<'py, PyAny>,
    k: i64,
    max_len: i64,
) -> PyResult<Vec<(Bound<'py, PyArray1<u32>>, f32)>> {
    let context = convert::tokens(context, "context")?;
    let (k, max_len) = (convert::count("k", k)?, convert::count("max_len", max_len)?);
    let found = py
        .detach(|| store.checked_lookup(&context, k, max_len))
        .map_err(to_py)?;
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

/// The store settings: each one given, else the core's default.
fn model_config(
    min_ngram: Option<i64>,
    max_ngram: Option<i64>,
    continuation_len: Option<i64>,
    top_k: Option<i64>,
    vocab_size: Option<i64>,
) -> PyResult<ModelStoreConfig> {
    let default = ModelStoreConfig::default();
    Ok(ModelStoreConfig {
        min_ngram: convert::setting("min_ngram", min_ngram, default.min_ngram)?,
        max_ngram: convert::setting("max_ngram", max_ngram, default.max_ngram)?,
        continuation_len: convert::setting(
            "continuation_len",
            continuation_len,
            default.continuation_len,
        )?,
        top_k: convert::setting("top_k", top_k, default.top_k)?,
        vocab_size: convert::vocab_size(vocab_size)?.or(default.vocab_size),
    })
}

#[pymethods]
impl PyModelStore {
    /// The largest `max_ngram` a model store accepts.
    #[classattr]
    const MAX_NGRAM: usize = MAX_MODEL_NGRAM;

    /// An empty store that grows with `add()`.
    #[new]
    #[pyo3(signature = (min_ngram = None, max_ngram = None, continuation_len = None, top_k = None, vocab_size = None, metadata = ""))]
    fn new(
        min_ngram: Option<i64>,
        max_ngram: Option<i64>,
        continuation_len: Option<i64>,
        top_k: Option<i64>,
        vocab_size: Option<i64>,
        metadata: &str,
    ) -> PyResult<Self> {
        let config = model_config(min_ngram, max_ngram, continuation_len, top_k, vocab_size)?;
        let store = ModelStore::empty(config).map_err(to_py)?;
        store.set_metadata(metadata);
        Ok(Self {
            inner: Arc::new(store),
        })
    }

    /// Counts the n-gram continuations of `sequences` and freezes them into a store.
    #[staticmethod]
    #[pyo3(signature = (sequences, min_ngram = None, max_ngram = None, continuation_len = None, top_k = None, vocab_size = None, metadata = ""))]
    #[allow(clippy::too_many_arguments)]
    fn build(
        py: Python<'_>,
        sequences: &Bound<'_, PyAny>,
        min_ngram: Option<i64>,
        max_ngram: Option<i64>,
        continuation_len: Option<i64>,
        top_k: Option<i64>,
        vocab_size: Option<i64>,
        metadata: &str,
    ) -> PyResult<Self> {
        let config = model_config(min_ngram, max_ngram, continuation_len, top_k, vocab_size)?;
        let sequences = convert::token_lists(sequences, "sequences")?;
        let store = py
            .detach(|| ModelStore::from_sequences(config, &sequences))
            .map_err(to_py)?;
        store.set_metadata(metadata);
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
        self.inner.metadata()
    }

    /// Replaces the metadata string that `save()` writes (drafters sharing the store keep
    /// drafting meanwhile).
    fn set_metadata(&self, metadata: &str) {
        self.inner.set_metadata(metadata);
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
