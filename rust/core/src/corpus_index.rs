//! `CorpusIndex`: a suffix array over a large tokenized corpus (hierarchy level 3).
//!
//! Storage is the corpus text (each non-empty document followed by the separator `u32::MAX`) and
//! the suffix array of the positions that can start a useful match, i.e. every token that is not
//! the last of its document (a match must be followed by at least one token). That makes the
//! index exactly 8 bytes per corpus token: `4 * (tokens + documents)` of text plus
//! `4 * (tokens - documents)` of suffix array.
//!
//! A lookup finds the longest suffix of the context (at most [`MAX_CONTEXT_MATCH`] tokens) that
//! occurs in the corpus followed by at least one token of the same document, by a 4-way search on
//! the match length (a length that occurs implies every shorter one does) whose binary searches
//! run in lockstep. The occurrences of that
//! suffix form one range of the suffix array, sorted by what follows; up to `max_occurrences`
//! evenly spaced ones are read (a stratified sample, so frequent continuations keep their share),
//! their continuations up to `max_len` tokens, stopping at the document end, are counted in a
//! [`ChainTrie`] and ranked.

use std::cmp::Ordering;
use std::path::Path;

use rayon::prelude::*;

use crate::continuation::{ChainTrie, Continuation};
use crate::error::{check_tokens, Error, Result};
use crate::persist::{self, FileContent, FileKind, U32Array};
use crate::suffix_array::suffix_array;

/// Longest context suffix a lookup tries to match.
pub const MAX_CONTEXT_MATCH: usize = 16;
/// Default cap on the occurrences read per lookup.
pub const DEFAULT_MAX_OCCURRENCES: usize = 256;
/// The document separator inside the text; rejected as a token.
pub const SEPARATOR: u32 = u32::MAX;

const KIND: FileKind = FileKind {
    magic: *b"HDCORPUS",
    version: 1,
    name: "hierdraft corpus index",
};

/// Suffix array over a tokenized corpus. Immutable once built; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct CorpusIndex {
    /// Documents, each non-empty one followed by [`SEPARATOR`].
    text: U32Array,
    /// Sorted start positions of the suffixes that begin with a token followed by another token.
    sa: U32Array,
    num_tokens: usize,
    num_documents: usize,
    vocab_size: Option<u32>,
    metadata: String,
    max_occurrences: usize,
}

impl CorpusIndex {
    /// Builds the index over `documents`. Errors: no token at all, a token `>= vocab_size`, the
    /// reserved separator `u32::MAX`, or a corpus of 2^32 - 2 tokens or more.
    pub fn build(documents: &[&[u32]], vocab_size: Option<u32>) -> Result<Self> {
        let total: usize = documents.iter().map(|d| d.len()).sum();
        let mut text = Vec::with_capacity(total + documents.len());
        for doc in documents.iter().filter(|d| !d.is_empty()) {
            text.extend_from_slice(doc);
            text.push(SEPARATOR);
        }
        Self::from_text(text, total, documents.len(), vocab_size)
    }

    /// Builds the index over documents given as one flat token array and `offsets`: document `i`
    /// is `tokens[offsets[i]..offsets[i + 1]]` (so `offsets` has one more entry than there are
    /// documents, starts at 0 and ends at `tokens.len()`).
    pub fn from_flat(tokens: &[u32], offsets: &[usize], vocab_size: Option<u32>) -> Result<Self> {
        let bad = |why: &str| Err(Error::InvalidArgument(format!("document offsets: {why}")));
        if offsets.first() != Some(&0) {
            return bad("must start with 0");
        }
        if offsets.last() != Some(&tokens.len()) {
            return bad("must end with the number of tokens");
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return bad("must be non-decreasing");
        }
        let docs: Vec<&[u32]> = offsets.windows(2).map(|w| &tokens[w[0]..w[1]]).collect();
        Self::build(&docs, vocab_size)
    }

    /// Convenience for owned documents.
    pub fn from_documents(documents: Vec<Vec<u32>>, vocab_size: Option<u32>) -> Result<Self> {
        let docs: Vec<&[u32]> = documents.iter().map(Vec::as_slice).collect();
        Self::build(&docs, vocab_size)
    }

    fn from_text(
        text: Vec<u32>,
        num_tokens: usize,
        num_documents: usize,
        vocab_size: Option<u32>,
    ) -> Result<Self> {
        if num_tokens == 0 {
            return Err(Error::EmptyCorpus);
        }
        if text.len() >= (u32::MAX - 2) as usize {
            return Err(Error::InvalidArgument(format!(
                "corpus too large: {num_tokens} tokens in {num_documents} documents (the index holds < 2^32 - 2)"
            )));
        }
        let separators = text.len() - num_tokens;
        text.par_chunks(1 << 16).try_for_each(|chunk| {
            // Separators were placed by us; validate everything else.
            chunk
                .split(|&t| t == SEPARATOR)
                .try_for_each(|piece| check_tokens(piece, vocab_size))
        })?;
        // A separator count different from the one we placed means a token was u32::MAX.
        let placed = text.par_iter().filter(|&&t| t == SEPARATOR).count();
        if placed != separators {
            return Err(match vocab_size {
                Some(v) if v < SEPARATOR => Error::TokenOutOfVocab {
                    token: SEPARATOR,
                    vocab_size: v,
                },
                _ => Error::ReservedToken { token: SEPARATOR },
            });
        }
        let mut sa = suffix_array(&text);
        sa.retain(|&p| {
            let p = p as usize;
            text[p] != SEPARATOR && text[p + 1] != SEPARATOR
        });
        sa.shrink_to_fit();
        Ok(CorpusIndex {
            text: text.into(),
            sa: sa.into(),
            num_tokens,
            num_documents,
            vocab_size,
            metadata: String::new(),
            max_occurrences: DEFAULT_MAX_OCCURRENCES,
        })
    }

    /// Cap on the occurrences read per lookup.
    pub fn max_occurrences(&self) -> usize {
        self.max_occurrences
    }

    /// Sets the cap on the occurrences read per lookup (at least 1).
    pub fn set_max_occurrences(&mut self, max_occurrences: usize) {
        self.max_occurrences = max_occurrences.max(1);
    }

    /// The vocabulary size given at build time, if any.
    pub fn vocab_size(&self) -> Option<u32> {
        self.vocab_size
    }

    /// Free-form description stored in the file (e.g. tokenizer name and vocabulary hash).
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// Sets the free-form description stored in the file.
    pub fn set_metadata(&mut self, metadata: impl Into<String>) {
        self.metadata = metadata.into();
    }

    /// Number of corpus tokens (separators not counted).
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// Number of documents given at build time (empty ones included).
    pub fn num_documents(&self) -> usize {
        self.num_documents
    }

    /// Bytes of index data (text with separators + suffix array) per corpus token; exactly 8.
    pub fn bytes_per_token(&self) -> f64 {
        let bytes = 4 * (self.text.len() + self.sa.len());
        bytes as f64 / self.num_tokens.max(1) as f64
    }

    /// True when the arrays are used in place from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        self.text.is_mapped() && self.sa.is_mapped()
    }

    /// The longest context suffix (`m` tokens) that occurs followed by a token, and the range of
    /// the suffix array holding those occurrences.
    pub fn longest_match(&self, context: &[u32]) -> Option<(usize, std::ops::Range<usize>)> {
        self.view().longest_match(context)
    }

    fn view(&self) -> View<'_> {
        View {
            text: &self.text,
            sa: &self.sa,
        }
    }

    /// Up to `k` continuations (at most `max_len` tokens each, never crossing a document end)
    /// of the longest suffix of `context` (<= 16 tokens) found in the corpus, best first.
    pub fn lookup(&self, context: &[u32], k: usize, max_len: usize) -> Vec<Continuation> {
        if k == 0 || max_len == 0 {
            return Vec::new();
        }
        let view = self.view();
        let Some((m, range)) = view.longest_match(context) else {
            return Vec::new();
        };
        let count = range.len();
        let samples = count.min(self.max_occurrences);
        let mut trie = ChainTrie::with_capacity(samples * max_len.min(8));
        for i in 0..samples {
            // Evenly spaced over the range, which is sorted by continuation, so the chains come
            // in ascending order (the trie's fast path).
            let idx = range.start + i * count / samples;
            let Some(&pos) = view.sa.get(idx) else {
                continue;
            };
            let start = pos as usize + m;
            let end = start.saturating_add(max_len).min(view.text.len());
            let window = view.text.get(start..end).unwrap_or(&[]);
            let len = window
                .iter()
                .position(|&t| t == SEPARATOR)
                .unwrap_or(window.len());
            trie.insert(&window[..len], 1, 0);
        }
        trie.top_chains(k, max_len)
    }

    /// Writes the index to `path` atomically (see [`crate::persist`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        persist::write_file(
            path.as_ref(),
            &KIND,
            &FileContent {
                vocab_size: self.vocab_size,
                params: &[self.num_tokens as u64, self.num_documents as u64],
                metadata: &self.metadata,
                sections: &[&self.text, &self.sa],
            },
        )
    }

    /// Loads an index saved by [`CorpusIndex::save`], memory-mapped, after validating the header,
    /// checksum and structure.
    pub fn load(path: impl AsRef<Path>) -> Result<CorpusIndex> {
        let file = persist::read_file(path.as_ref(), &KIND)?;
        let [num_tokens, num_documents] = file.params[..] else {
            return Err(file.corrupt("expected 2 parameters"));
        };
        let [text, sa] = &file.sections[..] else {
            return Err(file.corrupt("expected 2 sections"));
        };
        let (num_tokens, num_documents) = (num_tokens as usize, num_documents as usize);
        let separators = text.par_iter().filter(|&&t| t == SEPARATOR).count();
        if num_tokens == 0
            || separators > num_tokens
            || text.len() != num_tokens + separators
            || sa.len() != num_tokens - separators
            || separators > num_documents
            || text.last() != Some(&SEPARATOR)
        {
            return Err(file.corrupt("token, document and suffix counts disagree"));
        }
        if sa.par_iter().any(|&p| p as usize + 1 >= text.len()) {
            return Err(file.corrupt("suffix array position out of range"));
        }
        if let Some(v) = file.vocab_size {
            if text.par_iter().any(|&t| t >= v && t != SEPARATOR) {
                return Err(file.corrupt("token out of the stored vocabulary"));
            }
        }
        Ok(CorpusIndex {
            text: text.clone(),
            sa: sa.clone(),
            num_tokens,
            num_documents,
            vocab_size: file.vocab_size,
            metadata: file.metadata,
            max_occurrences: DEFAULT_MAX_OCCURRENCES,
        })
    }

    /// [`CorpusIndex::load`], failing with [`Error::VocabMismatch`] unless the index was built
    /// for `vocab_size`.
    pub fn load_expecting_vocab(path: impl AsRef<Path>, vocab_size: u32) -> Result<CorpusIndex> {
        let index = Self::load(path)?;
        persist::expect_vocab(index.vocab_size, vocab_size)?;
        Ok(index)
    }
}

/// The two arrays as plain slices, for the search loops.
#[derive(Clone, Copy)]
struct View<'a> {
    text: &'a [u32],
    sa: &'a [u32],
}

impl View<'_> {
    /// Compares the suffix at `pos` with `pattern` (followed by the separator when `sep`); a
    /// suffix that runs out is smaller.
    #[inline]
    fn cmp_at(&self, pos: u32, pattern: &[u32], sep: bool) -> Ordering {
        let start = pos as usize;
        let end = start.saturating_add(pattern.len()).min(self.text.len());
        let window = self.text.get(start..end).unwrap_or(&[]);
        match window.cmp(pattern) {
            Ordering::Equal if sep => match self.text.get(end) {
                Some(&t) => t.cmp(&SEPARATOR),
                None => Ordering::Less,
            },
            other => other,
        }
    }

    /// For each `(pattern, sep)`, the first suffix-array index whose suffix is not smaller than
    /// `pattern` (+ separator when `sep`). The binary searches run in lockstep so that their
    /// independent memory accesses overlap instead of waiting for each other.
    fn lower_bounds(&self, patterns: &[(&[u32], bool)], out: &mut [usize]) {
        const MAX: usize = 8;
        let count = patterns.len().min(MAX).min(out.len());
        let mut lo = [0usize; MAX];
        let mut len = [self.sa.len(); MAX];
        let mut pos = [0u32; MAX];
        loop {
            let mut active = false;
            for i in 0..count {
                if len[i] > 0 {
                    pos[i] = self.sa.get(lo[i] + len[i] / 2).copied().unwrap_or(0);
                    active = true;
                }
            }
            if !active {
                break;
            }
            for i in 0..count {
                if len[i] > 0 {
                    let half = len[i] / 2;
                    let (pattern, sep) = patterns[i];
                    if self.cmp_at(pos[i], pattern, sep) == Ordering::Less {
                        lo[i] += half + 1;
                        len[i] -= half + 1;
                    } else {
                        len[i] = half;
                    }
                }
            }
        }
        out[..count].copy_from_slice(&lo[..count]);
    }

    /// The longest suffix of `context` (after its last separator, at most
    /// [`MAX_CONTEXT_MATCH`] tokens) that occurs followed by a token, with its suffix-array range.
    ///
    /// Existence is monotone in the length (a suffix that occurs implies every shorter one does),
    /// so the length is found by a 4-way search: each round probes up to 3 lengths at once. The
    /// occurrences of the suffix `P_m` are the range between the bounds of `P_m` and of
    /// `P_m + separator` (occurrences followed by the separator sort last), so each probe is two
    /// binary searches, and all searches of a round run in lockstep.
    fn longest_match(&self, context: &[u32]) -> Option<(usize, std::ops::Range<usize>)> {
        const PROBES: usize = 3;
        let after_sep = context
            .iter()
            .rposition(|&t| t == SEPARATOR)
            .map_or(0, |i| i + 1);
        let ctx = &context[after_sep..];
        let (mut found, mut found_range, mut hi) = (0, 0..0, ctx.len().min(MAX_CONTEXT_MATCH) + 1);
        let mut patterns: [(&[u32], bool); 2 * PROBES] = [(&[], false); 2 * PROBES];
        let mut bounds = [0usize; 2 * PROBES];
        while hi - found > 1 {
            let gap = hi - found;
            let mut probes = [0usize; PROBES];
            let mut n = 0;
            for j in 1..=PROBES {
                let m = found + (gap * j).div_ceil(PROBES + 1);
                if m > found && m < hi && (n == 0 || probes[n - 1] != m) {
                    probes[n] = m;
                    n += 1;
                }
            }
            for (i, &m) in probes[..n].iter().enumerate() {
                let p = &ctx[ctx.len() - m..];
                patterns[2 * i] = (p, false);
                patterns[2 * i + 1] = (p, true);
            }
            self.lower_bounds(&patterns[..2 * n], &mut bounds);
            for (i, &m) in probes[..n].iter().enumerate() {
                let range = bounds[2 * i]..bounds[2 * i + 1];
                if range.is_empty() {
                    hi = m;
                    break;
                }
                (found, found_range) = (m, range);
            }
        }
        (found > 0).then_some((found, found_range))
    }
}
