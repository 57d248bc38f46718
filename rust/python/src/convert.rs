//! Extraction and validation of Python inputs (token arrays, lists, integer settings) into owned
//! Rust values, and conversion of results back into numpy arrays.
//!
//! Token inputs are 1-D C-contiguous numpy arrays of dtype uint32, int32 or int64, or lists /
//! tuples of Python ints. Other dtypes raise `TypeError`; other shapes, non-contiguous arrays,
//! negative ids and ids above `u32::MAX` raise `ValueError`, each naming the problem.

use hierdraft_core::Continuation;
use numpy::prelude::*;
use numpy::{dtype, PyArray1, PyArrayDescr, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PyList, PyString, PyTuple};

/// Copies the contents of a 1-D, contiguous, typed numpy array.
fn array_values<'py, T: numpy::Element + Copy>(
    arr: &Bound<'py, PyUntypedArray>,
    what: &str,
) -> PyResult<Vec<T>> {
    let typed = arr
        .cast::<PyArray1<T>>()
        .map_err(|_| PyTypeError::new_err(format!("{what}: unexpected array type")))?;
    let ro = typed.try_readonly().map_err(|e| {
        PyValueError::new_err(format!("{what}: the array cannot be read right now ({e})"))
    })?;
    let slice = ro.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a C-contiguous array; pass np.ascontiguousarray(...)"
        ))
    })?;
    Ok(slice.to_vec())
}

fn is_dtype<T: numpy::Element>(py: Python<'_>, d: &Bound<'_, PyArrayDescr>) -> bool {
    d.is_equiv_to(&dtype::<T>(py))
}

fn negative(what: &str, index: usize, value: i64) -> PyErr {
    PyValueError::new_err(format!(
        "{what}[{index}] = {value}: token ids must be non-negative"
    ))
}

fn too_large(what: &str, index: usize, value: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!(
        "{what}[{index}] = {value}: token ids must fit in 32 bits (<= {})",
        u32::MAX
    ))
}

fn from_i64(what: &str, index: usize, value: i64) -> PyResult<u32> {
    if value < 0 {
        Err(negative(what, index, value))
    } else {
        u32::try_from(value).map_err(|_| too_large(what, index, value))
    }
}

fn from_numpy(arr: &Bound<'_, PyUntypedArray>, what: &str) -> PyResult<Vec<u32>> {
    let py = arr.py();
    let d = arr.dtype();
    let supported = is_dtype::<u32>(py, &d) || is_dtype::<i32>(py, &d) || is_dtype::<i64>(py, &d);
    if !supported {
        return Err(PyTypeError::new_err(format!(
            "{what} must have dtype uint32, int32 or int64, got {}",
            d.str()
                .map(|s| s.to_string())
                .unwrap_or_else(|_| "?".into())
        )));
    }
    if arr.ndim() != 1 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a 1-D array, got {} dimensions (shape {:?})",
            arr.ndim(),
            arr.shape()
        )));
    }
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be a C-contiguous array, got a non-contiguous view; pass \
             np.ascontiguousarray(...)"
        )));
    }
    if is_dtype::<u32>(py, &d) {
        array_values::<u32>(arr, what)
    } else if is_dtype::<i32>(py, &d) {
        let v = array_values::<i32>(arr, what)?;
        match v.iter().position(|&x| x < 0) {
            Some(i) => Err(negative(what, i, i64::from(v[i]))),
            None => Ok(v.into_iter().map(|x| x as u32).collect()),
        }
    } else {
        let v = array_values::<i64>(arr, what)?;
        v.iter()
            .enumerate()
            .map(|(i, &x)| from_i64(what, i, x))
            .collect()
    }
}

fn from_item(item: &Bound<'_, PyAny>, what: &str, index: usize) -> PyResult<u32> {
    match item.extract::<i64>() {
        Ok(v) => from_i64(what, index, v),
        Err(_) if item.is_instance_of::<PyInt>() => {
            // An int that does not fit in i64: negative or far too large.
            let negative = item.lt(0i64).unwrap_or(false);
            let shown = item
                .str()
                .map(|s| s.to_string())
                .unwrap_or_else(|_| "?".into());
            if negative {
                Err(PyValueError::new_err(format!(
                    "{what}[{index}] = {shown}: token ids must be non-negative"
                )))
            } else {
                Err(too_large(what, index, shown))
            }
        }
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what}[{index}] must be an int, got {}",
            type_name(item)
        ))),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Extracts a token sequence (see the module docs); `what` names the argument in messages.
pub fn tokens(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u32>> {
    if let Ok(arr) = obj.cast::<PyUntypedArray>() {
        return from_numpy(arr, what);
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list
            .iter()
            .enumerate()
            .map(|(i, item)| from_item(&item, what, i))
            .collect();
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple
            .iter()
            .enumerate()
            .map(|(i, item)| from_item(&item, what, i))
            .collect();
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be a 1-D numpy array (uint32, int32 or int64) or a list of ints, got {}",
        type_name(obj)
    )))
}

/// Extracts a collection of token sequences (any iterable of token inputs, not a string).
pub fn token_lists(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Vec<u32>>> {
    if obj.is_instance_of::<PyString>() || obj.cast::<PyUntypedArray>().is_ok() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of token sequences (numpy arrays or lists of ints), got {}",
            type_name(obj)
        )));
    }
    let iter = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a list of token sequences (numpy arrays or lists of ints), got {}",
            type_name(obj)
        ))
    })?;
    let mut out = Vec::new();
    for (i, item) in iter.enumerate() {
        out.push(tokens(&item?, &format!("{what}[{i}]"))?);
    }
    Ok(out)
}

/// Validates a non-negative integer setting (`ValueError` names it when negative).
pub fn count(name: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {value}")))
}

/// A count setting left out (`None`) takes `default` (the core's); a given one is validated like
/// [`count`].
pub fn setting(name: &str, value: Option<i64>, default: usize) -> PyResult<usize> {
    value.map_or(Ok(default), |v| count(name, v))
}

/// Validates an optional vocabulary size (`>= 1`, fits in u32).
pub fn vocab_size(value: Option<i64>) -> PyResult<Option<u32>> {
    value
        .map(|v| match u32::try_from(v) {
            Ok(x) if x >= 1 => Ok(x),
            _ => Err(PyValueError::new_err(format!(
                "vocab_size must be between 1 and {}, got {v}",
                u32::MAX
            ))),
        })
        .transpose()
}

/// Lookup results as a list of `(uint32 token array, score)` tuples.
pub fn continuations<'py>(
    py: Python<'py>,
    found: Vec<Continuation>,
) -> Vec<(Bound<'py, PyArray1<u32>>, f32)> {
    found
        .into_iter()
        .map(|c| (PyArray1::from_vec(py, c.tokens), c.score))
        .collect()
}
