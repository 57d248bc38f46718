//! Python classes of the drafter: `HierarchicalDrafter`, `DraftSession` and `DraftTree`.
//!
//! Translation only: settings and tokens are validated and copied into Rust values (settings left
//! out take the core's defaults), the GIL is released around drafting, and core errors become
//! Python exceptions. A session lives behind an `RwLock` (`accept` and `finish` mutate it) and is
//! `None` once finished.

use std::sync::{RwLock, RwLockReadGuard};

use hierdraft_core::{DraftSession, DraftTree, DrafterConfig, Error, HierarchicalDrafter, Level};
use numpy::prelude::*;
use numpy::{PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::convert;
use crate::errors::{poisoned, to_py};
use crate::stores::{PyCorpusIndex, PyModelStore};

/// Drafts from the context, model and corpus stores into one prefix tree under a node budget.
#[pyclass(frozen, name = "HierarchicalDrafter", module = "hierdraft._core")]
pub struct PyHierarchicalDrafter {
    pub(crate) inner: HierarchicalDrafter,
    model_store: Option<Py<PyModelStore>>,
    corpus_index: Option<Py<PyCorpusIndex>>,
}

#[pymethods]
impl PyHierarchicalDrafter {
    /// Settings left out (`None`) take the core's defaults (`DrafterConfig::default()`).
    #[new]
    #[pyo3(signature = (
        model_store = None,
        corpus_index = None,
        order = None,
        budget = None,
        max_depth = None,
        context_candidates = None,
        model_candidates = None,
        corpus_candidates = None,
        context_min_ngram = None,
        context_max_ngram = None,
        corpus_max_occurrences = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model_store: Option<Bound<'_, PyModelStore>>,
        corpus_index: Option<Bound<'_, PyCorpusIndex>>,
        order: Option<Vec<String>>,
        budget: Option<i64>,
        max_depth: Option<i64>,
        context_candidates: Option<i64>,
        model_candidates: Option<i64>,
        corpus_candidates: Option<i64>,
        context_min_ngram: Option<i64>,
        context_max_ngram: Option<i64>,
        corpus_max_occurrences: Option<i64>,
    ) -> PyResult<Self> {
        let default = DrafterConfig::default();
        let order = match order {
            Some(names) => names
                .iter()
                .map(|n| Level::from_name(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(to_py)?,
            None => default.order,
        };
        let config = DrafterConfig {
            order,
            budget: convert::setting("budget", budget, default.budget)?,
            max_depth: convert::setting("max_depth", max_depth, default.max_depth)?,
            context_candidates: convert::setting(
                "context_candidates",
                context_candidates,
                default.context_candidates,
            )?,
            model_candidates: convert::setting(
                "model_candidates",
                model_candidates,
                default.model_candidates,
            )?,
            corpus_candidates: convert::setting(
                "corpus_candidates",
                corpus_candidates,
                default.corpus_candidates,
            )?,
            context_min_ngram: convert::setting(
                "context_min_ngram",
                context_min_ngram,
                default.context_min_ngram,
            )?,
            context_max_ngram: convert::setting(
                "context_max_ngram",
                context_max_ngram,
                default.context_max_ngram,
            )?,
            corpus_max_occurrences: match corpus_max_occurrences {
                Some(v) => Some(convert::count("corpus_max_occurrences", v)?),
                None => default.corpus_max_occurrences,
            },
        };
        let model = model_store.as_ref().map(|m| m.get().inner.clone());
        let corpus = corpus_index.as_ref().map(|c| c.get().inner.clone());
        let inner = HierarchicalDrafter::new(config, model, corpus).map_err(to_py)?;
        Ok(Self {
            inner,
            model_store: model_store.map(Bound::unbind),
            corpus_index: corpus_index.map(Bound::unbind),
        })
    }

    /// Starts a request with its prompt.
    fn start(&self, py: Python<'_>, prompt: &Bound<'_, PyAny>) -> PyResult<PyDraftSession> {
        let prompt = convert::tokens(prompt, "prompt")?;
        let session = py.detach(|| self.inner.start(&prompt)).map_err(to_py)?;
        Ok(PyDraftSession {
            inner: RwLock::new(Some(session)),
        })
    }

    /// Proposes a draft tree for every session, in parallel; `result[i]` is for `sessions[i]`.
    fn propose_batch(
        &self,
        py: Python<'_>,
        sessions: Vec<Bound<'_, PyDraftSession>>,
    ) -> PyResult<Vec<PyDraftTree>> {
        let refs: Vec<&PyDraftSession> = sessions.iter().map(|s| s.get()).collect();
        let trees = py.detach(|| with_sessions(&refs, hierdraft_core::propose_batch))?;
        Ok(trees
            .into_iter()
            .map(|t| PyDraftTree { inner: t })
            .collect())
    }

    /// Records accepted tokens for many sessions in one call: `sessions[i].accept(tokens[i])` for
    /// every i, in order. Stops at the first error, which names its index; the sessions before it
    /// keep their tokens.
    fn accept_batch(
        &self,
        py: Python<'_>,
        sessions: Vec<Bound<'_, PyDraftSession>>,
        tokens: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if tokens.len() != sessions.len() {
            return Err(PyValueError::new_err(format!(
                "tokens has {} entries for {} sessions",
                tokens.len(),
                sessions.len()
            )));
        }
        let values = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| convert::tokens(t, &format!("tokens[{i}]")))
            .collect::<PyResult<Vec<Vec<u32>>>>()?;
        let refs: Vec<&PyDraftSession> = sessions.iter().map(|s| s.get()).collect();
        py.detach(|| {
            refs.iter()
                .zip(&values)
                .enumerate()
                .try_for_each(|(i, (s, t))| s.accept_tokens(t, Some(i)))
        })
    }

    /// Like `propose_batch`, but returns only each tree's best chain (`DraftTree.best_chain`) of
    /// at most `max_lens[i]` tokens, as lists of ints: what a chain verifier (vLLM) consumes.
    fn propose_chains(
        &self,
        py: Python<'_>,
        sessions: Vec<Bound<'_, PyDraftSession>>,
        max_lens: Vec<i64>,
    ) -> PyResult<Vec<Vec<u32>>> {
        if max_lens.len() != sessions.len() {
            return Err(PyValueError::new_err(format!(
                "max_lens has {} entries for {} sessions",
                max_lens.len(),
                sessions.len()
            )));
        }
        let max_lens = max_lens
            .iter()
            .enumerate()
            .map(|(i, &k)| convert::count(&format!("max_lens[{i}]"), k))
            .collect::<PyResult<Vec<usize>>>()?;
        let refs: Vec<&PyDraftSession> = sessions.iter().map(|s| s.get()).collect();
        py.detach(|| {
            with_sessions(&refs, |batch| {
                hierdraft_core::propose_batch(batch)
                    .iter()
                    .zip(&max_lens)
                    .map(|(tree, &k)| tree.best_chain(k))
                    .collect()
            })
        })
    }

    /// Level names in reading order.
    #[getter]
    fn order<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.config().order.iter().map(|l| l.name()))
    }

    #[getter]
    fn budget(&self) -> usize {
        self.inner.config().budget
    }

    #[getter]
    fn max_depth(&self) -> usize {
        self.inner.config().max_depth
    }

    #[getter]
    fn context_candidates(&self) -> usize {
        self.inner.config().context_candidates
    }

    #[getter]
    fn model_candidates(&self) -> usize {
        self.inner.config().model_candidates
    }

    #[getter]
    fn corpus_candidates(&self) -> usize {
        self.inner.config().corpus_candidates
    }

    #[getter]
    fn context_min_ngram(&self) -> usize {
        self.inner.config().context_min_ngram
    }

    #[getter]
    fn context_max_ngram(&self) -> usize {
        self.inner.config().context_max_ngram
    }

    /// Most corpus occurrences a corpus lookup reads (None: the index's own cap).
    #[getter]
    fn corpus_max_occurrences(&self) -> Option<usize> {
        self.inner.config().corpus_max_occurrences
    }

    /// The vocabulary size known by the stores (the smallest when both know one).
    #[getter]
    fn vocab_size(&self) -> Option<u32> {
        self.inner.vocab_size()
    }

    #[getter]
    fn model_store(&self, py: Python<'_>) -> Option<Py<PyModelStore>> {
        self.model_store.as_ref().map(|m| m.clone_ref(py))
    }

    #[getter]
    fn corpus_index(&self, py: Python<'_>) -> Option<Py<PyCorpusIndex>> {
        self.corpus_index.as_ref().map(|c| c.clone_ref(py))
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        let order: Vec<&str> = c.order.iter().map(|l| l.name()).collect();
        format!(
            "HierarchicalDrafter(order={order:?}, budget={}, max_depth={}, model_store={}, corpus_index={})",
            c.budget,
            c.max_depth,
            if self.model_store.is_some() { "yes" } else { "None" },
            if self.corpus_index.is_some() { "yes" } else { "None" },
        )
    }
}

/// Runs `f` on the sessions behind `refs` (in that order), read-locked for the call.
///
/// Each distinct session is locked once, in address order, so concurrent batches over
/// overlapping sessions cannot deadlock and a session listed twice is fine.
fn with_sessions<T>(
    refs: &[&PyDraftSession],
    f: impl FnOnce(&[&DraftSession]) -> T,
) -> PyResult<T> {
    let mut unique: Vec<&PyDraftSession> = refs.to_vec();
    unique.sort_by_key(|s| *s as *const PyDraftSession as usize);
    unique.dedup_by_key(|s| *s as *const PyDraftSession as usize);
    let guards = unique
        .iter()
        .map(|s| s.inner.read().map_err(|_| poisoned()))
        .collect::<PyResult<Vec<RwLockReadGuard<'_, Option<DraftSession>>>>>()?;
    let mut batch: Vec<&DraftSession> = Vec::with_capacity(refs.len());
    for (i, s) in refs.iter().enumerate() {
        let pos = unique
            .binary_search_by_key(&(*s as *const PyDraftSession as usize), |u| {
                *u as *const PyDraftSession as usize
            })
            .map_err(|_| poisoned())?;
        match guards[pos].as_ref() {
            Some(sess) => batch.push(sess),
            None => return Err(finished_error(&format!("sessions[{i}]"))),
        }
    }
    Ok(f(&batch))
}

fn finished_error(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what}: the draft session is finished"))
}

/// Drafting state of one request (its prompt and accepted tokens).
#[pyclass(frozen, name = "DraftSession", module = "hierdraft._core")]
pub struct PyDraftSession {
    inner: RwLock<Option<DraftSession>>,
}

impl PyDraftSession {
    /// `DraftSession::accept` under the write lock; `index` (in a batch) is named in error
    /// messages.
    fn accept_tokens(&self, tokens: &[u32], index: Option<usize>) -> PyResult<()> {
        let mut guard = self.inner.write().map_err(|_| poisoned())?;
        match guard.as_mut() {
            Some(s) => s.accept(tokens).map_err(|e| match (e, index) {
                (e @ (Error::TokenOutOfVocab { .. } | Error::ReservedToken { .. }), Some(i)) => {
                    PyValueError::new_err(format!("tokens[{i}]: {e}"))
                }
                (other, _) => to_py(other),
            }),
            None => Err(finished_error(&index.map_or_else(
                || "session".to_string(),
                |i| format!("sessions[{i}]"),
            ))),
        }
    }

    fn read<T>(&self, f: impl FnOnce(&DraftSession) -> T) -> PyResult<T> {
        let guard = self.inner.read().map_err(|_| poisoned())?;
        match guard.as_ref() {
            Some(s) => Ok(f(s)),
            None => Err(finished_error("session")),
        }
    }
}

#[pymethods]
impl PyDraftSession {
    /// Proposes a draft tree for the next verification step.
    fn propose(&self, py: Python<'_>) -> PyResult<PyDraftTree> {
        let tree = py.detach(|| self.read(|s| s.propose()))?;
        Ok(PyDraftTree { inner: tree })
    }

    /// Records the accepted tokens (bonus token included).
    fn accept(&self, py: Python<'_>, tokens: &Bound<'_, PyAny>) -> PyResult<()> {
        let tokens = convert::tokens(tokens, "tokens")?;
        py.detach(|| self.accept_tokens(&tokens, None))
    }

    /// Ends the request; with `learn`, the accepted output feeds the model store. Calling it again
    /// does nothing.
    #[pyo3(signature = (learn = true))]
    fn finish(&self, py: Python<'_>, learn: bool) -> PyResult<()> {
        py.detach(|| {
            let session = self.inner.write().map_err(|_| poisoned())?.take();
            match session {
                Some(s) => s.finish(learn).map_err(to_py),
                None => Ok(()),
            }
        })
    }

    /// Prompt followed by every accepted token (uint32).
    #[getter]
    fn tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        self.read(|s| PyArray1::from_slice(py, s.tokens()))
    }

    /// The accepted tokens, i.e. everything after the prompt (uint32).
    #[getter]
    fn generated<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        self.read(|s| PyArray1::from_slice(py, s.generated()))
    }

    #[getter]
    fn prompt_len(&self) -> PyResult<usize> {
        self.read(|s| s.prompt_len())
    }

    #[getter]
    fn finished(&self) -> PyResult<bool> {
        Ok(self.inner.read().map_err(|_| poisoned())?.is_none())
    }

    fn __repr__(&self) -> PyResult<String> {
        let guard = self.inner.read().map_err(|_| poisoned())?;
        Ok(match guard.as_ref() {
            Some(s) => format!(
                "DraftSession(prompt_len={}, generated={})",
                s.prompt_len(),
                s.generated().len()
            ),
            None => "DraftSession(finished)".to_string(),
        })
    }
}

/// A flattened prefix tree of draft tokens: node i has `tokens[i]`, parent `parents[i]` (-1: the
/// root, i.e. the last accepted token), `depths[i]` (1 for children of the root),
/// `sources[i]` (0 context, 1 model, 2 corpus) and `scores[i]` (its estimated probability given
/// its parent). Parents precede their children.
#[pyclass(frozen, name = "DraftTree", module = "hierdraft._core")]
pub struct PyDraftTree {
    inner: DraftTree,
}

#[pymethods]
impl PyDraftTree {
    #[getter]
    fn tokens<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        PyArray1::from_slice(py, &self.inner.tokens)
    }

    #[getter]
    fn parents<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        PyArray1::from_slice(py, &self.inner.parents)
    }

    #[getter]
    fn depths<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i32>> {
        // Depths are at most the node count, which is bounded by an i32 budget.
        PyArray1::from_iter(py, self.inner.depths.iter().map(|&d| d as i32))
    }

    #[getter]
    fn sources<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u8>> {
        PyArray1::from_slice(py, &self.inner.sources)
    }

    /// Estimated probability of each node given its parent (float32, in [0, 1]).
    #[getter]
    fn scores<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.inner.scores)
    }

    /// Tokens (uint32) of the most probable root-to-leaf path of at most `max_len` tokens.
    fn best_chain<'py>(
        &self,
        py: Python<'py>,
        max_len: i64,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let max_len = convert::count("max_len", max_len)?;
        Ok(PyArray1::from_vec(py, self.inner.best_chain(max_len)))
    }

    /// Boolean (n, n) mask: `[i, j]` is true iff j is i or an ancestor of i.
    fn ancestor_mask<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<bool>>> {
        let n = self.inner.len();
        let mask = self.inner.ancestor_mask();
        PyArray1::from_vec(py, mask).reshape([n, n])
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        let t = &self.inner;
        format!(
            "DraftTree(n={}, depth={}, tokens={:?}, parents={:?})",
            t.len(),
            t.max_depth(),
            t.tokens,
            t.parents
        )
    }
}
