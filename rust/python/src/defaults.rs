//! `default_settings()`: the core's default settings of every class whose constructor takes
//! optional settings, read from the core's `Default`s.
//!
//! The constructors fill a setting left out (`None`) from the same `Default`s, so Python never
//! holds a second copy of a default value; this function lets Python code and tests read them.

use hierdraft_core::{ContextStore, DrafterConfig, ModelStoreConfig};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// `{class name: {setting: default}}` for `ContextStore`, `ModelStore` and
/// `HierarchicalDrafter`.
#[pyfunction]
pub fn default_settings(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let context = PyDict::new(py);
    context.set_item("min_ngram", ContextStore::DEFAULT_MIN_NGRAM)?;
    context.set_item("max_ngram", ContextStore::DEFAULT_MAX_NGRAM)?;

    let m = ModelStoreConfig::default();
    let model = PyDict::new(py);
    model.set_item("min_ngram", m.min_ngram)?;
    model.set_item("max_ngram", m.max_ngram)?;
    model.set_item("continuation_len", m.continuation_len)?;
    model.set_item("top_k", m.top_k)?;
    model.set_item("vocab_size", m.vocab_size)?;

    let d = DrafterConfig::default();
    let drafter = PyDict::new(py);
    drafter.set_item("order", PyTuple::new(py, d.order.iter().map(|l| l.name()))?)?;
    drafter.set_item("budget", d.budget)?;
    drafter.set_item("max_depth", d.max_depth)?;
    drafter.set_item("context_candidates", d.context_candidates)?;
    drafter.set_item("model_candidates", d.model_candidates)?;
    drafter.set_item("corpus_candidates", d.corpus_candidates)?;
    drafter.set_item("context_min_ngram", d.context_min_ngram)?;
    drafter.set_item("context_max_ngram", d.context_max_ngram)?;
    drafter.set_item("corpus_max_occurrences", d.corpus_max_occurrences)?;

    let all = PyDict::new(py);
    all.set_item("ContextStore", context)?;
    all.set_item("ModelStore", model)?;
    all.set_item("HierarchicalDrafter", drafter)?;
    Ok(all)
}
