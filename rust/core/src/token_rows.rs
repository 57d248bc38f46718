//! The token matrix an engine hands over each step ([`TokenRows`]: row `i` holds some request's
//! tokens, then stale values) and the [`signature`] that names a sequence by its content, since
//! the engine names its requests by nothing else.
//!
//! The matrix keeps the engine's integer type ([`TokenValue`]: `i32`, `i64` or `u32`), so it is
//! read in place; values become token ids only where they are used, and a value that is no token
//! id is reported there.

use std::fmt::Display;

use crate::error::{Error, Result};

/// Leading tokens of a sequence that its [`signature`] covers.
pub const SIGNATURE_HEAD: usize = 8;
/// Trailing tokens of a sequence that its [`signature`] covers.
pub const SIGNATURE_TAIL: usize = 8;

/// An integer type a token matrix may hold (the engine's array dtype).
pub trait TokenValue: Copy + Display + Send + Sync {
    /// The value as a token id; `None` when no token id has it (negative, or above `u32::MAX`).
    fn to_token(self) -> Option<u32>;
    /// The value's bits as a signature reads them (equal to the token id for every valid one, so
    /// that signatures do not depend on the matrix's integer type).
    fn signature_bits(self) -> u64;
}

impl TokenValue for u32 {
    fn to_token(self) -> Option<u32> {
        Some(self)
    }
    fn signature_bits(self) -> u64 {
        u64::from(self)
    }
}

impl TokenValue for i32 {
    fn to_token(self) -> Option<u32> {
        u32::try_from(self).ok()
    }
    fn signature_bits(self) -> u64 {
        u64::from(self as u32)
    }
}

impl TokenValue for i64 {
    fn to_token(self) -> Option<u32> {
        u32::try_from(self).ok()
    }
    fn signature_bits(self) -> u64 {
        // Valid tokens keep their value; other values only need to hash somehow.
        self as u64
    }
}

/// A row-major token matrix: row `i` is `data[i * width..(i + 1) * width]`.
#[derive(Clone, Copy, Debug)]
pub struct TokenRows<'a, T> {
    data: &'a [T],
    width: usize,
}

impl<'a, T: TokenValue> TokenRows<'a, T> {
    /// A matrix of `data.len() / width` rows; fails unless `data.len()` is a multiple of `width`
    /// (a width of 0 holds no data).
    pub fn new(data: &'a [T], width: usize) -> Result<Self> {
        // A width of 0 fits only no data.
        let fits = data.len().is_multiple_of(width);
        if !fits {
            return Err(Error::InvalidArgument(format!(
                "a token matrix of width {width} cannot hold {} values",
                data.len()
            )));
        }
        Ok(Self { data, width })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.width).unwrap_or(0)
    }

    /// Tokens per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Row `i` (all `width` values, stale ones included).
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.width..(i + 1) * self.width]
    }
}

/// The signature of the sequence `row[..len]`: a hash of `len`, the first [`SIGNATURE_HEAD`] and
/// the last [`SIGNATURE_TAIL`] tokens. Positions outside `[0, len)` are clamped into it, so only
/// the sequence's own tokens are read (a length of 0 reads position 0, a row shorter than `len`
/// reads 0 past its end).
pub fn signature<T: TokenValue>(row: &[T], len: usize) -> u64 {
    let last = len.saturating_sub(1);
    let at = |p: usize| row.get(p).map_or(0, |v| v.signature_bits());
    let mut h = mix(0x243F_6A88_85A3_08D3, len as u64);
    for j in 0..SIGNATURE_HEAD {
        h = mix(h, at(j.min(last)));
    }
    for j in 0..SIGNATURE_TAIL {
        h = mix(h, at(last.saturating_sub(j)));
    }
    finish_hash(h)
}

/// One round of the signature hash: order matters, so each token counts with its position.
#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(27)
}

/// splitmix64's finalizer: spreads every input bit over the whole key.
#[inline]
fn finish_hash(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_name_content_not_rows() {
        let a: Vec<i32> = (0..40).map(|i| i * 5 % 17).collect();
        let mut b = a.clone();
        for t in &mut b[30..] {
            *t = 7; // differs only past length 30
        }
        let c: Vec<i32> = (0..40).map(|i| i * 3 % 19).collect();
        assert_eq!(signature(&a, 30), signature(&b, 30));
        assert_ne!(signature(&a, 30), signature(&c, 30));
        assert_ne!(signature(&a, 30), signature(&a, 31));
        assert_ne!(signature(&a, 0), signature(&a, 1));
        // The integer type of the matrix does not matter.
        let wide: Vec<i64> = a.iter().map(|&t| i64::from(t)).collect();
        let unsigned: Vec<u32> = a.iter().map(|&t| t as u32).collect();
        assert_eq!(signature(&a, 25), signature(&wide, 25));
        assert_eq!(signature(&a, 25), signature(&unsigned, 25));
        // A change inside the head or the tail changes it.
        let mut d = a.clone();
        d[3] += 1;
        assert_ne!(signature(&a, 30), signature(&d, 30));
        let mut e = a.clone();
        e[27] += 1;
        assert_ne!(signature(&a, 30), signature(&e, 30));
    }

    #[test]
    fn token_rows_check_their_shape() {
        let data = [1i32, 2, 3, 4, 5, 6];
        assert_eq!(TokenRows::new(&data, 3).expect("2 x 3").rows(), 2);
        assert_eq!(TokenRows::new(&data, 3).expect("2 x 3").row(1), &[4, 5, 6]);
        assert!(TokenRows::new(&data, 4).is_err());
        assert!(TokenRows::new(&data, 0).is_err());
        assert_eq!(TokenRows::<i32>::new(&[], 0).expect("empty").rows(), 0);
    }
}
