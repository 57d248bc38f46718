//! `hierdraft._core.GgufFile`: a GGUF file opened by hierdraft-kernels' reader (memory-mapped,
//! checked), with its metadata as Python values, its tensor table, dense tensors as float32
//! numpy arrays and weight matrices as `QuantTensor`s over the mapping. Translation only; the
//! GIL is released while the file is parsed and while tensors are converted.
//!
//! Errors: a malformed file (bad magic, unsupported version, truncated, corrupt) ->
//! `GgufFormatError` (a `ValueError`); I/O -> `FileNotFoundError` / `PermissionError` /
//! `OSError`; a missing tensor -> `KeyError`; a tensor of a type hierdraft does not support, or
//! of the wrong kind for the call -> `ValueError`.

use std::path::PathBuf;

use hierdraft_kernels::gguf::{GgufError, GgufFile, MetaArray, MetaValue, TensorInfo};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArray1, PyArrayDyn};
use pyo3::create_exception;
use pyo3::exceptions::{PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::errors::io_error;
use crate::quant::PyQuantTensor;

create_exception!(
    hierdraft,
    GgufFormatError,
    PyValueError,
    "A file is not a valid GGUF file: bad magic bytes, an unsupported version, truncated, or \
     corrupt (a count, length, type, alignment or tensor extent that cannot be right)."
);

/// Converts a reader error into the matching Python exception.
fn to_py(err: GgufError) -> PyErr {
    let msg = err.to_string();
    match &err {
        GgufError::Io { path, source } => io_error(path, source, msg),
        GgufError::NotAFile { .. } => PyOSError::new_err(msg),
        GgufError::MissingTensor { .. } => PyKeyError::new_err(msg),
        e if e.is_format_error() => GgufFormatError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// One entry of a GGUF file's tensor table.
#[pyclass(frozen, name = "GgufTensorInfo", module = "hierdraft._core")]
pub struct PyGgufTensorInfo {
    /// The tensor's name.
    #[pyo3(get)]
    name: String,
    /// ggml's name of its type ("Q4_K", "F32"; "unknown" for ids ggml does not define).
    #[pyo3(get)]
    qtype: &'static str,
    /// The ggml type id stored in the file.
    #[pyo3(get)]
    type_id: u32,
    /// Dimensions in torch order (the reverse of ggml's: the last one is contiguous).
    shape: Vec<u64>,
    /// Offset of the data from the start of the data section (as stored in the file).
    #[pyo3(get)]
    offset: u64,
    /// Bytes of data; `None` for types hierdraft does not support.
    #[pyo3(get)]
    nbytes: Option<u64>,
}

impl PyGgufTensorInfo {
    fn new(info: &TensorInfo) -> Self {
        Self {
            name: info.name().to_owned(),
            qtype: info.type_name(),
            type_id: info.type_id(),
            shape: info.shape(),
            offset: info.offset(),
            nbytes: info.nbytes(),
        }
    }
}

#[pymethods]
impl PyGgufTensorInfo {
    /// Dimensions in torch order (the reverse of ggml's: the last one is contiguous).
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    fn __repr__(&self) -> String {
        format!(
            "GgufTensorInfo(name={:?}, qtype={:?}, type_id={}, shape={}, offset={}, nbytes={})",
            self.name,
            self.qtype,
            self.type_id,
            tuple_repr(&self.shape),
            self.offset,
            self.nbytes.map_or("None".into(), |n| n.to_string())
        )
    }
}

/// `(a, b)` / `(a,)` / `()`, as Python writes a tuple of ints.
fn tuple_repr(dims: &[u64]) -> String {
    match dims {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A metadata array as Python: numbers and bools as 1-D numpy arrays of their own dtype,
/// strings as a list of str, arrays of arrays as a list.
fn array_to_py<'py>(py: Python<'py>, a: &MetaArray) -> PyResult<Bound<'py, PyAny>> {
    Ok(match a {
        MetaArray::U8(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::I8(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::U16(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::I16(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::U32(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::I32(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::U64(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::I64(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::F32(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::F64(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::Bool(v) => PyArray1::from_slice(py, v).into_any(),
        MetaArray::String(v) => PyList::new(py, v.iter())?.into_any(),
        MetaArray::Array(v) => {
            let items = v
                .iter()
                .map(|inner| array_to_py(py, inner))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
    })
}

/// A metadata value as Python: integers as int, floats as float, bool, str, arrays as above.
fn value_to_py<'py>(py: Python<'py>, v: &MetaValue) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        MetaValue::U8(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::I8(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::U16(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::I16(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::U32(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::I32(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::U64(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::I64(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::F32(x) => f64::from(*x).into_pyobject(py)?.into_any(),
        MetaValue::F64(x) => x.into_pyobject(py)?.into_any(),
        MetaValue::Bool(x) => x.into_pyobject(py)?.to_owned().into_any(),
        MetaValue::String(s) => s.into_pyobject(py)?.into_any(),
        MetaValue::Array(a) => array_to_py(py, a)?,
    })
}

/// A GGUF file, memory-mapped and checked when opened.
#[pyclass(frozen, name = "GgufFile", module = "hierdraft._core")]
pub struct PyGgufFile {
    file: GgufFile,
}

impl PyGgufFile {
    fn info(&self, name: &str) -> PyResult<&TensorInfo> {
        self.file.tensor(name).ok_or_else(|| {
            to_py(GgufError::MissingTensor {
                path: self.file.path().to_path_buf(),
                name: name.to_owned(),
            })
        })
    }
}

#[pymethods]
impl PyGgufFile {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let file = py.detach(|| GgufFile::open(&path)).map_err(to_py)?;
        Ok(Self { file })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    /// The GGUF version (2 or 3).
    #[getter]
    fn version(&self) -> u32 {
        self.file.version()
    }

    /// The alignment of tensor data (general.alignment, 32 when the file does not set it).
    #[getter]
    fn alignment(&self) -> u64 {
        self.file.alignment()
    }

    /// Where the data section starts in the file (tensor offsets count from here).
    #[getter]
    fn data_start(&self) -> u64 {
        self.file.data_start()
    }

    /// Every metadata entry, in file order, as a new dict (see `value_to_py` for the types).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, value) in self.file.metadata() {
            dict.set_item(key, value_to_py(py, value)?)?;
        }
        Ok(dict)
    }

    /// The value under metadata `key` (converted as in `metadata`), or `default`: reads one
    /// entry without converting the whole metadata (the vocabulary is 262144 strings).
    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.file.get(key) {
            Some(value) => value_to_py(py, value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Every tensor table entry, in file order.
    #[getter]
    fn tensors(&self) -> Vec<PyGgufTensorInfo> {
        self.file
            .tensors()
            .iter()
            .map(PyGgufTensorInfo::new)
            .collect()
    }

    /// The table entry of the tensor `name` (KeyError if there is none).
    fn tensor(&self, name: &str) -> PyResult<PyGgufTensorInfo> {
        Ok(PyGgufTensorInfo::new(self.info(name)?))
    }

    /// The 1-D or 2-D tensor `name` as a QuantTensor of shape (ne1, ne0) over the mapped file
    /// (no copy; a 1-D tensor is one row).
    fn matrix(&self, py: Python<'_>, name: &str) -> PyResult<PyQuantTensor> {
        let m = py.detach(|| self.file.matrix(name)).map_err(to_py)?;
        Ok(PyQuantTensor::from_matrix(m))
    }

    /// The values of the F32, F16 or BF16 tensor `name`, exactly, as a float32 array in torch
    /// shape (a copy).
    fn array<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let shape: Vec<usize> = self
            .info(name)?
            .shape()
            .into_iter()
            .map(|d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        let values = py.detach(|| self.file.tensor_f32(name)).map_err(to_py)?;
        let array = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| {
            PyValueError::new_err(format!("tensor '{name}' cannot take shape {shape:?}: {e}"))
        })?;
        Ok(array.into_pyarray(py))
    }

    fn __contains__(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// The number of tensors.
    fn __len__(&self) -> usize {
        self.file.tensors().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "GgufFile({:?}, version={}, tensors={}, metadata={})",
            self.file.path().display().to_string(),
            self.file.version(),
            self.file.tensors().len(),
            self.file.metadata().len()
        )
    }
}
