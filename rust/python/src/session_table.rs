//! Python class `SessionTable`: the core's `SessionTable` (draft sessions of an engine's batch
//! rows, found by content, and one chain per row each step).
//!
//! Translation only: the batch arrays are read in place (numpy, any of the integer dtypes the
//! core takes), the GIL is released for the step, and the flattened chains come back as the
//! `list[list[int]]` an engine consumes.

use std::sync::Mutex;

use hierdraft_core::{Chains, SessionTable, SessionTableConfig, StepInput, TokenRows, TokenValue};
use numpy::prelude::*;
use numpy::{dtype, PyArray1, PyArray2, PyArrayDescr, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::convert;
use crate::drafting::PyHierarchicalDrafter;
use crate::errors::{poisoned, to_py};

/// The draft sessions of an engine's batch rows (see `hierdraft_core::session_table`).
#[pyclass(frozen, name = "SessionTable", module = "hierdraft._core")]
pub struct PySessionTable {
    inner: Mutex<SessionTable>,
    drafter: Py<PyHierarchicalDrafter>,
}

fn is_dtype<T: numpy::Element>(py: Python<'_>, d: &Bound<'_, PyArrayDescr>) -> bool {
    d.is_equiv_to(&dtype::<T>(py))
}

fn dtype_name(d: &Bound<'_, PyArrayDescr>) -> String {
    d.str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn array<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let arr = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a numpy array")))?;
    if arr.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{what} must have {ndim} dimension(s), got shape {:?}",
            arr.shape()
        )));
    }
    Ok(arr.clone())
}

/// How many tokens each row gained: the length of every entry.
fn counts(new_tokens: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let bad = || PyTypeError::new_err("new_tokens must be a list of token lists");
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = new_tokens.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = new_tokens.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(bad());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.len().map_err(|_| {
                PyTypeError::new_err(format!("new_tokens[{i}] must be a list of tokens"))
            })
        })
        .collect()
}

/// The first `rows` entries of a 1-D integer array, as lengths.
fn lengths(obj: &Bound<'_, PyAny>, rows: usize) -> PyResult<Vec<usize>> {
    let arr = array(obj, "lengths", 1)?;
    let py = obj.py();
    let d = arr.dtype();
    let take = rows.min(arr.len());
    let values: Vec<i64> = if is_dtype::<i32>(py, &d) {
        let ro = arr.cast::<PyArray1<i32>>()?.try_readonly()?;
        ro.as_array()
            .iter()
            .take(take)
            .map(|&v| i64::from(v))
            .collect()
    } else if is_dtype::<i64>(py, &d) {
        let ro = arr.cast::<PyArray1<i64>>()?.try_readonly()?;
        ro.as_array().iter().take(take).copied().collect()
    } else if is_dtype::<u32>(py, &d) {
        let ro = arr.cast::<PyArray1<u32>>()?.try_readonly()?;
        ro.as_array()
            .iter()
            .take(take)
            .map(|&v| i64::from(v))
            .collect()
    } else {
        return Err(PyTypeError::new_err(format!(
            "lengths must have dtype int32, int64 or uint32, got {}",
            dtype_name(&d)
        )));
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            usize::try_from(v)
                .map_err(|_| PyValueError::new_err(format!("lengths[{i}] = {v} is negative")))
        })
        .collect()
}

/// Runs one step over a C-contiguous 2-D array of `T`, the GIL released.
fn step_over<T: TokenValue + numpy::Element>(
    table: &Mutex<SessionTable>,
    arr: &Bound<'_, PyUntypedArray>,
    new_counts: &[usize],
    lengths: &[usize],
) -> PyResult<Chains> {
    let not_c_order = || {
        PyValueError::new_err("tokens must be a C-contiguous array; pass np.ascontiguousarray(...)")
    };
    // `as_slice` also takes Fortran order, whose rows are not contiguous.
    if !arr.is_c_contiguous() {
        return Err(not_c_order());
    }
    let ro = arr.cast::<PyArray2<T>>()?.try_readonly()?;
    let data = ro.as_slice().map_err(|_| not_c_order())?;
    let width = arr.shape()[1];
    arr.py().detach(|| {
        let tokens = TokenRows::new(data, width).map_err(to_py)?;
        let input = StepInput {
            new_counts,
            lengths,
            tokens,
        };
        let mut out = Chains::default();
        let mut table = table.lock().map_err(|_| poisoned())?;
        table.step(&input, &mut out).map_err(to_py)?;
        Ok(out)
    })
}

#[pymethods]
impl PySessionTable {
    /// A table whose sessions `drafter` starts; chains of at most `max_chain` tokens, sequences
    /// of at most `max_model_len`, at most `max_idle` idle sessions kept. Settings left out
    /// (`None`) take the core's defaults.
    #[new]
    #[pyo3(signature = (drafter, max_chain, max_model_len, max_idle, learn = true, parallel_min_rows = None))]
    fn new(
        drafter: Bound<'_, PyHierarchicalDrafter>,
        max_chain: i64,
        max_model_len: i64,
        max_idle: i64,
        learn: bool,
        parallel_min_rows: Option<i64>,
    ) -> PyResult<Self> {
        let mut config = SessionTableConfig::new(
            convert::count("max_chain", max_chain)?,
            convert::count("max_model_len", max_model_len)?,
        );
        config.max_idle = convert::count("max_idle", max_idle)?;
        config.learn = learn;
        config.parallel_min_rows = convert::setting(
            "parallel_min_rows",
            parallel_min_rows,
            config.parallel_min_rows,
        )?;
        let table = SessionTable::new(drafter.get().inner.clone(), config).map_err(to_py)?;
        Ok(Self {
            inner: Mutex::new(table),
            drafter: drafter.unbind(),
        })
    }

    /// One engine step: `new_tokens[i]` are the tokens row i gained (only their number is read;
    /// the tokens themselves are in `tokens`), `lengths[i]` its token count and
    /// `tokens[i, :lengths[i]]` its tokens (2-D C-contiguous int32, int64 or uint32). Returns
    /// each row's chain (`[]` for rows without new tokens).
    fn step<'py>(
        &self,
        py: Python<'py>,
        new_tokens: &Bound<'py, PyAny>,
        lengths: &Bound<'py, PyAny>,
        tokens: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let new_counts = counts(new_tokens)?;
        let lengths = self::lengths(lengths, new_counts.len())?;
        let arr = array(tokens, "tokens", 2)?;
        let d = arr.dtype();
        let chains = if is_dtype::<i32>(py, &d) {
            step_over::<i32>(&self.inner, &arr, &new_counts, &lengths)?
        } else if is_dtype::<i64>(py, &d) {
            step_over::<i64>(&self.inner, &arr, &new_counts, &lengths)?
        } else if is_dtype::<u32>(py, &d) {
            step_over::<u32>(&self.inner, &arr, &new_counts, &lengths)?
        } else {
            return Err(PyTypeError::new_err(format!(
                "tokens must have dtype int32, int64 or uint32, got {}",
                dtype_name(&d)
            )));
        };
        let out = PyList::empty(py);
        for i in 0..chains.len() {
            out.append(PyList::new(py, chains.chain(i))?)?;
        }
        Ok(out)
    }

    /// The tokens (uint32) of the session row `row` held after the last step, or None.
    fn row_tokens<'py>(
        &self,
        py: Python<'py>,
        row: usize,
    ) -> PyResult<Option<Bound<'py, PyArray1<u32>>>> {
        let table = self.inner.lock().map_err(|_| poisoned())?;
        Ok(table.row_tokens(row).map(|t| PyArray1::from_slice(py, t)))
    }

    /// Waits until the model store has learned every session evicted so far.
    fn wait_for_learning(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let mut table = self.inner.lock().map_err(|_| poisoned())?;
            table.wait_for_learning().map_err(to_py)
        })
    }

    /// Finishes every session (feeding the model store when learning); the table is empty after.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let mut table = self.inner.lock().map_err(|_| poisoned())?;
            table.close().map_err(to_py)
        })
    }

    /// Sessions a row claimed at the last step.
    #[getter]
    fn live(&self) -> PyResult<usize> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.live())
    }

    /// Sessions waiting in the idle pool.
    #[getter]
    fn idle(&self) -> PyResult<usize> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.idle())
    }

    /// Sessions the table holds (live and idle).
    #[getter]
    fn sessions(&self) -> PyResult<usize> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.sessions())
    }

    /// Sessions started since the table was made.
    #[getter]
    fn started(&self) -> PyResult<u64> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.started())
    }

    #[getter]
    fn drafter(&self, py: Python<'_>) -> Py<PyHierarchicalDrafter> {
        self.drafter.clone_ref(py)
    }

    #[getter]
    fn max_chain(&self) -> PyResult<usize> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .config()
            .max_chain)
    }

    #[getter]
    fn max_model_len(&self) -> PyResult<usize> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .config()
            .max_model_len)
    }

    #[getter]
    fn max_idle(&self) -> PyResult<usize> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.config().max_idle)
    }

    #[getter]
    fn learn(&self) -> PyResult<bool> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.config().learn)
    }

    #[getter]
    fn parallel_min_rows(&self) -> PyResult<usize> {
        Ok(self
            .inner
            .lock()
            .map_err(|_| poisoned())?
            .config()
            .parallel_min_rows)
    }

    fn __repr__(&self) -> PyResult<String> {
        let table = self.inner.lock().map_err(|_| poisoned())?;
        let c = table.config();
        Ok(format!(
            "SessionTable(max_chain={}, max_model_len={}, max_idle={}, learn={}, live={}, idle={})",
            c.max_chain,
            c.max_model_len,
            c.max_idle,
            if c.learn { "True" } else { "False" },
            table.live(),
            table.idle()
        ))
    }
}
