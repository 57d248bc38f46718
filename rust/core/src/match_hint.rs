//! `MatchHint`: what a corpus lookup found for a context, kept so that the lookup of the same
//! context grown by a few tokens (the next decoding step of a request) searches much less.
//!
//! A corpus lookup starts by finding the longest suffix of the context (at most
//! [`MAX_CONTEXT_MATCH`] tokens) that occurs in the corpus followed by a token; from scratch that
//! is a few rounds of binary searches over the whole suffix array, each step a random read. When
//! the context grew by `k` tokens since the last lookup, which found a match of `m` tokens:
//! - the new match has at most `m + k` tokens. A suffix of `L > k` tokens of the new context is
//!   a suffix of `L - k` tokens of the old one followed by the first new token; if it occurs
//!   followed by a token, so does that old suffix, so `L - k <= m`;
//! - the suffixes starting with the old match followed by the `k` new tokens, the only candidate
//!   of length `m + k`, lie inside the old match's suffix-array range, so that candidate is
//!   checked by a binary search of that (usually small) range alone;
//! - otherwise the search from scratch runs with `m + k - 1` as its longest length, which saves
//!   its longer probes.
//!
//! Either way the result is exactly the one of a search from scratch: the match length is the
//! unique longest, and its range is a function of the suffix. The hint applies only to the index
//! that made it, and only where the last [`MAX_CONTEXT_MATCH`] tokens of the old context (all
//! the old match depends on) are still at the same place; anything else is searched from scratch.

use std::ops::Range;

use crate::corpus_index::{MAX_CONTEXT_MATCH, SEPARATOR};

/// A longest match: its length in tokens and the suffix-array range of its occurrences.
pub(crate) type Found = Option<(usize, Range<usize>)>;

/// What the last lookup of a growing context found (see the module docs). Start with
/// [`MatchHint::default`]; [`crate::CorpusIndex::lookup_continuing`] keeps it up to date.
#[derive(Clone, Debug, Default)]
pub struct MatchHint {
    /// The index that made the hint (see `CorpusIndex::id`); 0: none yet.
    index: u64,
    /// Length of the context the hint was made for.
    len: usize,
    /// That context's last `min(len, MAX_CONTEXT_MATCH)` tokens: all its match depends on.
    window: Vec<u32>,
    found: Found,
}

/// How to find the longest match of a context, given a hint.
#[derive(Debug, PartialEq)]
pub(crate) enum Plan {
    /// The context is the hint's own: this is its match.
    Known(Found),
    /// Only `len` tokens can match, and their occurrences lie inside `within`: check them there;
    /// if they do not occur, search from scratch with at most `len - 1` tokens.
    Extend { len: usize, within: Range<usize> },
    /// Search from scratch, trying at most `limit` tokens (`limit == 0`: nothing can match).
    Search { limit: usize },
}

impl MatchHint {
    /// How to search `context` on the index `index`.
    pub(crate) fn plan(&self, index: u64, context: &[u32]) -> Plan {
        let scratch = Plan::Search {
            limit: MAX_CONTEXT_MATCH,
        };
        if self.index == 0 || self.index != index || context.len() < self.len {
            return scratch;
        }
        let old = &context[..self.len];
        if old[old.len() - self.window.len()..] != self.window[..] {
            return scratch;
        }
        let new = &context[self.len..];
        if new.contains(&SEPARATOR) {
            return scratch;
        }
        let k = new.len();
        if k == 0 {
            return Plan::Known(self.found.clone());
        }
        match &self.found {
            Some((m, range)) if m + k <= MAX_CONTEXT_MATCH => Plan::Extend {
                len: m + k,
                within: range.clone(),
            },
            // past the longest length tried: the bound m + k says nothing
            Some(_) => scratch,
            None => Plan::Search {
                limit: k.min(MAX_CONTEXT_MATCH),
            },
        }
    }

    /// Remembers that `found` is the longest match of `context` on the index `index`.
    pub(crate) fn record(&mut self, index: u64, context: &[u32], found: &Found) {
        let keep = context.len().min(MAX_CONTEXT_MATCH);
        self.index = index;
        self.len = context.len();
        self.window.clear();
        self.window
            .extend_from_slice(&context[context.len() - keep..]);
        self.found = found.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(context: &[u32], found: Found) -> MatchHint {
        let mut h = MatchHint::default();
        h.record(7, context, &found);
        h
    }

    #[test]
    fn a_fresh_hint_searches_from_scratch() {
        let scratch = Plan::Search {
            limit: MAX_CONTEXT_MATCH,
        };
        assert_eq!(MatchHint::default().plan(7, &[1, 2, 3]), scratch);
        // another index, a shorter context, a changed window, a separator among the new tokens
        let h = hint(&[1, 2, 3], Some((2, 10..20)));
        assert_eq!(h.plan(8, &[1, 2, 3, 4]), scratch);
        assert_eq!(h.plan(7, &[1, 2]), scratch);
        assert_eq!(h.plan(7, &[1, 9, 3, 4]), scratch);
        assert_eq!(h.plan(7, &[1, 2, 3, SEPARATOR, 4]), scratch);
    }

    #[test]
    fn a_grown_context_extends_or_bounds_the_search() {
        let h = hint(&[1, 2, 3], Some((2, 10..20)));
        assert_eq!(h.plan(7, &[1, 2, 3]), Plan::Known(Some((2, 10..20))));
        assert_eq!(
            h.plan(7, &[1, 2, 3, 4, 5]),
            Plan::Extend {
                len: 4,
                within: 10..20
            }
        );
        // only the window must be unchanged: earlier tokens do not affect the match
        let long: Vec<u32> = (0..40).collect();
        let h = hint(&long, Some((13, 3..4)));
        let mut other = long.clone();
        other[0] = 99;
        other.extend([40, 41]);
        assert_eq!(
            h.plan(7, &other),
            Plan::Extend {
                len: 15,
                within: 3..4
            }
        );
        other[long.len() - MAX_CONTEXT_MATCH] = 99;
        assert_eq!(
            h.plan(7, &other),
            Plan::Search {
                limit: MAX_CONTEXT_MATCH
            }
        );
        // past the longest length tried, the bound still shortens the search
        let h = hint(&long, Some((15, 3..4)));
        assert_eq!(
            h.plan(7, &[&long[..], &[40, 41]].concat()),
            Plan::Search { limit: 16 }
        );
        let h = hint(&[1, 2, 3], Some((1, 3..4)));
        assert_eq!(
            h.plan(7, &[1, 2, 3, 4]),
            Plan::Extend {
                len: 2,
                within: 3..4
            }
        );
        let none = hint(&[1, 2, 3], None);
        assert_eq!(none.plan(7, &[1, 2, 3, 4, 5]), Plan::Search { limit: 2 });
    }
}
