//! [`Reader`]: the [`Cursor`] plus what the parser needs to turn a failed read into a
//! [`GgufError`] naming the file and the field (`what`, built only when a read fails).

use std::path::Path;

use super::cursor::{Cursor, PastEnd};
use super::error::GgufError;

/// Reads GGUF fields from one file's bytes, with errors that name the file and the field.
pub(crate) struct Reader<'a> {
    cur: Cursor<'a>,
    path: &'a Path,
    file_len: u64,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], path: &'a Path) -> Self {
        Self {
            cur: Cursor::new(data),
            path,
            file_len: data.len() as u64,
        }
    }

    pub fn path(&self) -> &'a Path {
        self.path
    }

    pub fn pos(&self) -> u64 {
        self.cur.pos()
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn truncated(&self, e: PastEnd, what: impl FnOnce() -> String) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what(),
            start: e.start,
            end: e.end,
            file_len: self.file_len,
        }
    }

    pub fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        self.cur.take(n).map_err(|e| self.truncated(e, what))
    }

    pub fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        self.cur.array().map_err(|e| self.truncated(e, what))
    }

    pub fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        self.cur.u8().map_err(|e| self.truncated(e, what))
    }

    pub fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.cur.u32().map_err(|e| self.truncated(e, what))
    }

    pub fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.cur.u64().map_err(|e| self.truncated(e, what))
    }

    /// A GGUF string (a `u64` length, then UTF-8 bytes).
    pub fn string(&mut self, what: impl Fn() -> String) -> Result<&'a str, GgufError> {
        let bytes = self
            .cur
            .string_bytes()
            .map_err(|e| self.truncated(e, &what))?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            path: self.path.to_path_buf(),
            what: what(),
            at: self.cur.pos() - bytes.len() as u64,
        })
    }

    /// `count` as a usize, once it is clear that `count` items of at least `min_bytes` each can
    /// fit in the rest of the file; called before allocating room for them.
    pub fn check_count(
        &self,
        count: u64,
        min_bytes: u64,
        what: impl FnOnce() -> String,
    ) -> Result<usize, GgufError> {
        let min_bytes = min_bytes.max(1);
        let remaining = self.cur.remaining();
        let fits = count.checked_mul(min_bytes).is_some_and(|b| b <= remaining);
        // `count <= remaining <= usize::MAX` once it fits (min_bytes >= 1).
        match usize::try_from(count) {
            Ok(n) if fits => Ok(n),
            _ => Err(GgufError::CountTooLarge {
                path: self.path.to_path_buf(),
                what: what(),
                count,
                min_bytes,
                at: self.cur.pos(),
                remaining,
            }),
        }
    }
}
