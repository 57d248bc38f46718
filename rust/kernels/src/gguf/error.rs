//! [`GgufError`]: every way opening a GGUF file or taking a tensor out of it can fail. Each
//! variant names the file and says what is wrong, in words a user can act on.

use std::path::PathBuf;

use crate::error::KernelError;
use crate::quant_matrix::MatrixError;

/// Why a GGUF file cannot be opened, or a tensor cannot be taken out of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file cannot be opened, inspected or mapped.
    #[error("cannot read {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path exists but is not a regular file (a directory, a device).
    #[error("{path} is not a regular file", path = path.display())]
    NotAFile { path: PathBuf },
    /// The first four bytes are not `GGUF`.
    #[error("{path} is not a GGUF file: it starts with {found:?}, not \"GGUF\"", path = path.display())]
    BadMagic { path: PathBuf, found: String },
    /// A version other than 2 or 3 (version 1 counted in 32 bits; a big-endian file reads as a
    /// huge version number here).
    #[error("{path} is GGUF version {found}; this reader reads versions 2 and 3{hint}", path = path.display(), hint = version_hint(*found))]
    UnsupportedVersion { path: PathBuf, found: u32 },
    /// A field runs past the end of the file.
    #[error("{path} is truncated: {what} needs bytes {start}..{end} but the file has {file_len}", path = path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    /// A count says more items follow than the rest of the file could hold, even at each
    /// item's smallest size (checked before anything is allocated for them).
    #[error("{path} is corrupt: {what} says {count} follow at byte {at}, but each takes at least {min_bytes} bytes and only {remaining} remain", path = path.display())]
    CountTooLarge {
        path: PathBuf,
        what: String,
        count: u64,
        min_bytes: u64,
        at: u64,
        remaining: u64,
    },
    /// A key, tensor name or string value is not valid UTF-8.
    #[error("{path} is corrupt: {what} at byte {at} is not valid UTF-8", path = path.display())]
    InvalidUtf8 {
        path: PathBuf,
        what: String,
        at: u64,
    },
    /// A metadata value type id outside the GGUF value types.
    #[error("{path} is corrupt: {what} has value type {type_id}, which GGUF does not define (0..=12)", path = path.display())]
    BadValueType {
        path: PathBuf,
        what: String,
        type_id: u32,
    },
    /// A bool byte other than 0 or 1.
    #[error("{path} is corrupt: {what} holds the bool byte {byte}, neither 0 nor 1", path = path.display())]
    BadBool {
        path: PathBuf,
        what: String,
        byte: u8,
    },
    /// Arrays of arrays nested deeper than this reader follows.
    #[error("{path} is corrupt: metadata key '{key}' nests arrays more than {limit} deep", path = path.display())]
    NestingTooDeep {
        path: PathBuf,
        key: String,
        limit: usize,
    },
    /// Two metadata entries with one key.
    #[error("{path} is corrupt: metadata key '{key}' appears twice", path = path.display())]
    DuplicateKey { path: PathBuf, key: String },
    /// `general.alignment` is not a power of two that fits in 32 bits, or not an integer.
    #[error("{path} is corrupt: general.alignment is {found}; it must be a non-zero power of two (u32)", path = path.display())]
    BadAlignment { path: PathBuf, found: String },
    /// Two tensors with one name.
    #[error("{path} is corrupt: tensor name '{name}' appears twice", path = path.display())]
    DuplicateTensor { path: PathBuf, name: String },
    /// More dimensions than ggml has (4).
    #[error("{path} is corrupt: tensor '{name}' has {n_dims} dimensions; ggml tensors have at most {max}", path = path.display())]
    TooManyDims {
        path: PathBuf,
        name: String,
        n_dims: u32,
        max: usize,
    },
    /// The element count does not fit in ggml's signed 64-bit sizes.
    #[error("{path} is corrupt: tensor '{name}' has dims {dims:?}, whose element count overflows 63 bits", path = path.display())]
    DimsOverflow {
        path: PathBuf,
        name: String,
        dims: Vec<u64>,
    },
    /// A supported block type whose rows are not whole blocks.
    #[error("{path} is corrupt: tensor '{name}' rows have {ne0} values, not a whole number of {ty} blocks of {block}", path = path.display())]
    PartialBlock {
        path: PathBuf,
        name: String,
        ty: &'static str,
        ne0: u64,
        block: usize,
    },
    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("{path} is corrupt: tensor '{name}' has offset {offset}, not a multiple of the alignment {alignment}", path = path.display())]
    MisalignedTensor {
        path: PathBuf,
        name: String,
        offset: u64,
        alignment: u64,
    },
    /// A tensor's data runs past the end of the file.
    #[error("{path} is truncated: tensor '{name}' needs bytes {start}..{end} but the file has {file_len}", path = path.display())]
    TensorPastEnd {
        path: PathBuf,
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    /// A tensor of a type whose size this reader does not know starts past the end of the file.
    #[error("{path} is truncated: tensor '{name}' ({ty}) starts at byte {start} but the file has {file_len}", path = path.display())]
    TensorStartsPastEnd {
        path: PathBuf,
        name: String,
        ty: &'static str,
        start: u64,
        file_len: u64,
    },
    /// No tensor of this name.
    #[error("{path} has no tensor named '{name}'", path = path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// The tensor's type is one hierdraft does not compute with.
    #[error("{path}: tensor '{name}' has ggml type {type_id} ({ty}), which hierdraft does not support (supported: {supported})", path = path.display())]
    UnsupportedTensorType {
        path: PathBuf,
        name: String,
        type_id: u32,
        ty: &'static str,
        supported: &'static str,
    },
    /// The tensor has the wrong kind of type for the request (blocks where values are asked for).
    #[error("{path}: tensor '{name}' is {ty}; {wanted}", path = path.display())]
    WrongType {
        path: PathBuf,
        name: String,
        ty: &'static str,
        wanted: &'static str,
    },
    /// The tensor has more than two non-trivial dimensions, so it is not a matrix.
    #[error("{path}: tensor '{name}' has dims {dims:?} (ggml order); a matrix is 1-D or 2-D", path = path.display())]
    NotAMatrix {
        path: PathBuf,
        name: String,
        dims: Vec<u64>,
    },
    /// The tensor cannot be viewed as a matrix (no values, or sizes beyond this machine).
    #[error("{path}: tensor '{name}': {source}", path = path.display())]
    Matrix {
        path: PathBuf,
        name: String,
        #[source]
        source: MatrixError,
    },
    /// The dequantizer refused the tensor's data (not expected after the checks at open).
    #[error("{path}: tensor '{name}': {source}", path = path.display())]
    Kernel {
        path: PathBuf,
        name: String,
        #[source]
        source: KernelError,
    },
    /// The tensor's sizes do not fit in this machine's address space.
    #[error("{path}: tensor '{name}' is too large for this machine's address space", path = path.display())]
    TooLarge { path: PathBuf, name: String },
}

fn version_hint(found: u32) -> &'static str {
    if found.swap_bytes() == 2 || found.swap_bytes() == 3 {
        " (this looks like a big-endian file; only little-endian files are read)"
    } else if found == 1 {
        " (version 1 files are no longer produced; convert it with a current llama.cpp)"
    } else {
        ""
    }
}

impl GgufError {
    /// True for errors that mean the file itself is malformed (as opposed to I/O failures, a
    /// missing tensor, or a tensor hierdraft cannot use).
    pub fn is_format_error(&self) -> bool {
        !matches!(
            self,
            GgufError::Io { .. }
                | GgufError::NotAFile { .. }
                | GgufError::MissingTensor { .. }
                | GgufError::UnsupportedTensorType { .. }
                | GgufError::WrongType { .. }
                | GgufError::NotAMatrix { .. }
                | GgufError::Matrix { .. }
                | GgufError::Kernel { .. }
                | GgufError::TooLarge { .. }
        )
    }
}
