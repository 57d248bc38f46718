//! The error type shared by the hierdraft core: every fallible operation of the stores,
//! the file formats and the drafter returns [`Result`], and each variant names one problem.

use std::path::PathBuf;

/// Everything that can go wrong in the core. No operation panics on user input; it returns one
/// of these instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is out of its allowed range (the message says which and why).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A token id is not below the store's vocabulary size.
    #[error("token {token} is out of the vocabulary (vocab_size = {vocab_size})")]
    TokenOutOfVocab { token: u32, vocab_size: u32 },
    /// A token id is reserved by the store (u32::MAX separates corpus documents).
    #[error("token {token} is reserved (u32::MAX separates documents) and cannot be stored")]
    ReservedToken { token: u32 },
    /// A corpus index needs at least one token.
    #[error("the corpus is empty: a corpus index needs at least one token")]
    EmptyCorpus,
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the magic bytes of this kind of store.
    #[error("{path} is not a {expected} file (bad magic bytes)", path = path.display())]
    BadMagic { path: PathBuf, expected: String },
    /// The file was written by an incompatible format version.
    #[error("{path} has format version {found}, this build reads version {expected}", path = path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// The file is shorter than its header says.
    #[error("{path} is truncated: expected {expected} bytes, found {found}", path = path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The payload checksum does not match the one in the header.
    #[error("{path} is corrupted: checksum mismatch", path = path.display())]
    ChecksumMismatch { path: PathBuf },
    /// The checksum matched but the content is structurally invalid.
    #[error("{path} is corrupted: {reason}", path = path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The store was built for another vocabulary.
    #[error("vocabulary mismatch: expected vocab_size {expected}, the store has {}", found.map_or_else(|| "none".to_string(), |v| v.to_string()))]
    VocabMismatch { expected: u32, found: Option<u32> },
}

/// `Result` with the core's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Checks that every token is below `vocab_size`, when the vocabulary is known.
pub(crate) fn check_vocab(tokens: &[u32], vocab_size: Option<u32>) -> Result<()> {
    let Some(vocab_size) = vocab_size else {
        return Ok(());
    };
    match tokens.iter().copied().find(|&t| t >= vocab_size) {
        None => Ok(()),
        Some(token) => Err(Error::TokenOutOfVocab { token, vocab_size }),
    }
}

/// Checks that no token is the reserved separator and, when the vocabulary is known, that each
/// token is below it (what every store checks before it stores tokens).
pub(crate) fn check_tokens(tokens: &[u32], vocab_size: Option<u32>) -> Result<()> {
    // Even a vocabulary of u32::MAX ids cannot hold the separator: that is the reserved error.
    check_vocab(tokens, vocab_size.filter(|&v| v < u32::MAX))?;
    if tokens.contains(&u32::MAX) {
        return Err(Error::ReservedToken { token: u32::MAX });
    }
    Ok(())
}
