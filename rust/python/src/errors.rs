//! Mapping of the core's `Error` variants to Python exceptions, and the package's own exception.
//!
//! - invalid arguments, out-of-vocabulary / reserved tokens, empty corpus, vocabulary mismatch
//!   -> `ValueError`;
//! - I/O -> `FileNotFoundError` / `PermissionError` / `OSError` (with `errno` and `filename`);
//! - bad magic, unsupported version, truncated, checksum mismatch, corrupt content
//!   -> `hierdraft.StoreFormatError` (a `ValueError` subclass).

use std::path::Path;

use hierdraft_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError,
};
use pyo3::PyErr;

create_exception!(
    hierdraft,
    StoreFormatError,
    PyValueError,
    "A store file is not a valid hierdraft file: bad magic bytes, unsupported format version, \
     truncated, or corrupted (checksum mismatch / invalid content)."
);

/// Converts a core error into the matching Python exception.
pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::InvalidArgument(_)
        | Error::TokenOutOfVocab { .. }
        | Error::ReservedToken { .. }
        | Error::EmptyCorpus
        | Error::VocabMismatch { .. } => PyValueError::new_err(msg),
        Error::Io { path, source } => io_error(&path, &source, msg),
        Error::BadMagic { .. }
        | Error::UnsupportedVersion { .. }
        | Error::Truncated { .. }
        | Error::ChecksumMismatch { .. }
        | Error::Corrupt { .. } => StoreFormatError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// An I/O error on `path` as `FileNotFoundError` / `PermissionError` / `OSError`; `msg` is the
/// message when the OS gave no error code.
pub fn io_error(path: &Path, source: &std::io::Error, msg: String) -> PyErr {
    // With an OS error code, raise the standard `OSError(errno, strerror, filename)` form, so
    // `errno` and `filename` are set; otherwise the full message.
    let make = |e: fn((i32, String, String)) -> PyErr, m: fn(String) -> PyErr| match source
        .raw_os_error()
    {
        Some(code) => e((code, source.to_string(), path.display().to_string())),
        None => m(msg),
    };
    match source.kind() {
        std::io::ErrorKind::NotFound => {
            make(PyFileNotFoundError::new_err, PyFileNotFoundError::new_err)
        }
        std::io::ErrorKind::PermissionDenied => {
            make(PyPermissionError::new_err, PyPermissionError::new_err)
        }
        _ => make(PyOSError::new_err, PyOSError::new_err),
    }
}

/// The error raised when a lock was poisoned by a panic in another thread.
pub fn poisoned() -> PyErr {
    PyRuntimeError::new_err("internal lock poisoned by an earlier failure")
}
