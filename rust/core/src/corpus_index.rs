//! `CorpusIndex`: a suffix array over a large tokenized corpus (hierarchy level 3).
//!
//! Storage is the corpus text (each non-empty document followed by the separator `u32::MAX`) and
//! the suffix array of the positions that can start a useful match, i.e. every token that is not
//! the last of its document (a match must be followed by at least one token). That makes the
//! index exactly 8 bytes per corpus token: `4 * (tokens + documents)` of text plus
//! `4 * (tokens - documents)` of suffix array.
//!
//! A lookup finds the longest suffix of the context (at most [`MAX_CONTEXT_MATCH`] tokens) that
//! occurs in the corpus followed by at least one token of the same document, by a search on the
//! match length (a length that occurs implies every shorter one does) that probes 4 lengths per
//! round with one binary search each, the searches of a round running in lockstep. The
//! occurrences of that suffix form one range of the suffix array, sorted by what follows; up to
//! `max_occurrences` evenly spaced ones are read (a stratified sample, so frequent continuations
//! keep their share), their continuations up to `max_len` tokens, stopping at the document end,
//! are counted in a [`ChainTrie`] and ranked.
//!
//! Latency: the index is far larger than the caches, so a lookup is dominated by random reads
//! (two dependent ones per binary-search step, two per occurrence read). The code is arranged so
//! that these reads overlap instead of waiting for each other: the searches of a round advance
//! together and read one step ahead, and the occurrences are read in tight passes before any
//! counting. The occurrence cap bounds the tail: reading and ranking cost grows with it.
//! A request's next lookup, one decoding step later, can start from its last match
//! ([`CorpusIndex::lookup_continuing`] with a [`MatchHint`]): usually only the match's own range
//! is searched then (see [`crate::match_hint`]), with the same result.

use std::cmp::Ordering;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use rayon::prelude::*;

use crate::continuation::{ChainTrie, Continuation};
use crate::error::{check_tokens, Error, Result};
use crate::match_hint::{Found, MatchHint, Plan};
use crate::persist::{self, FileContent, FileKind, U32Array};
use crate::shared_store::SharedStore;
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
    /// Identifies this index (and its clones, which hold the same arrays) to a [`MatchHint`].
    id: u64,
}

/// Source of [`CorpusIndex::id`]s; 0 is never handed out.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, AtomicOrdering::Relaxed)
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
            id: next_id(),
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
        self.view().longest_match_upto(context, MAX_CONTEXT_MATCH)
    }
    fn view(&self) -> View<'_> {
        View {
            text: &self.text,
            sa: &self.sa,
        }
    }

    /// [`CorpusIndex::longest_match`] of a context that may continue the one `hint` was made
    /// for (the same request one step later), searching only where the longer match can be (see
    /// [`crate::match_hint`]); the result is the same. `hint` then describes `context`.
    pub fn longest_match_continuing(
        &self,
        context: &[u32],
        hint: &mut MatchHint,
    ) -> Option<(usize, std::ops::Range<usize>)> {
        let view = self.view();
        let found = match hint.plan(self.id, context) {
            Plan::Known(found) => found,
            Plan::Extend { len, within } => view
                .match_within(&context[context.len() - len..], within)
                .map(|range| (len, range))
                .or_else(|| view.longest_match_upto(context, len - 1)),
            Plan::Search { limit } => view.longest_match_upto(context, limit),
        };
        hint.record(self.id, context, &found);
        found
    }

    /// Up to `k` continuations (at most `max_len` tokens each, never crossing a document end)
    /// of the longest suffix of `context` (<= 16 tokens) found in the corpus, best first.
    pub fn lookup(&self, context: &[u32], k: usize, max_len: usize) -> Vec<Continuation> {
        if k == 0 || max_len == 0 {
            return Vec::new();
        }
        self.continuations(self.longest_match(context), k, max_len)
    }

    /// [`CorpusIndex::lookup`] of a context that may continue the one `hint` was made for: the
    /// same continuations, found with [`CorpusIndex::longest_match_continuing`].
    pub fn lookup_continuing(
        &self,
        context: &[u32],
        k: usize,
        max_len: usize,
        hint: &mut MatchHint,
    ) -> Vec<Continuation> {
        if k == 0 || max_len == 0 {
            return Vec::new();
        }
        self.continuations(self.longest_match_continuing(context, hint), k, max_len)
    }

    /// The best `k` continuations of the occurrences of a longest match.
    fn continuations(&self, found: Found, k: usize, max_len: usize) -> Vec<Continuation> {
        let Some((m, range)) = found else {
            return Vec::new();
        };
        let view = self.view();
        let samples = range.len().min(self.max_occurrences);
        let starts = view.sample_starts(range, m, samples);
        view.prefetch_windows(&starts, max_len);
        // The chains arrive in ascending order, so neighbours share prefixes (the trie's fast
        // path).
        let mut trie = ChainTrie::with_capacity(samples * max_len.min(8));
        for &start in &starts {
            trie.insert(view.window(start, max_len), 1, 0);
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
            id: next_id(),
        })
    }

    /// [`CorpusIndex::load`], failing with [`Error::VocabMismatch`] unless the index was built
    /// for `vocab_size`.
    pub fn load_expecting_vocab(path: impl AsRef<Path>, vocab_size: u32) -> Result<CorpusIndex> {
        <Self as SharedStore>::load_expecting_vocab(path.as_ref(), vocab_size)
    }
}

/// The two arrays as plain slices, for the search loops.
#[derive(Clone, Copy)]
struct View<'a> {
    text: &'a [u32],
    sa: &'a [u32],
}

/// One binary search of [`View::lower_bounds`]: the first suffix-array index in `start..end`
/// whose suffix is not smaller than `pattern` (followed by the separator when `sep`), or `end`.
#[derive(Clone, Copy)]
struct Search<'p> {
    pattern: &'p [u32],
    sep: bool,
    start: usize,
    /// Clamped to the suffix array's length.
    end: usize,
}

impl Default for Search<'_> {
    fn default() -> Self {
        Search {
            pattern: &[],
            sep: false,
            start: 0,
            end: usize::MAX,
        }
    }
}

/// Lengths probed per round by [`View::longest_match_upto`]: with at most [`MAX_CONTEXT_MATCH`]
/// lengths, two rounds always suffice. More searches at once stop paying off: they compete for
/// the same memory bandwidth.
const PROBES: usize = 4;
/// Most searches [`View::lower_bounds`] runs at once.
const MAX_SEARCHES: usize = PROBES;

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

    /// The suffix-array entry at `idx` (0 past the end: a harmless position to read ahead).
    #[inline]
    fn entry(&self, idx: usize) -> u32 {
        self.sa.get(idx).copied().unwrap_or(0)
    }

    /// Runs the binary searches in lockstep and writes each result to `out`.
    ///
    /// Every step is two dependent random reads (a suffix-array entry, then the text it points
    /// to), so the searches are latency-bound. Two things shorten the wait: all reads of a step
    /// are issued before any comparison branches on them, so they overlap across searches; and
    /// each search reads the suffix-array entries of both possible next midpoints together with
    /// the text of the current one, so a step waits for one read instead of two in a row.
    fn lower_bounds(&self, searches: &[Search<'_>], out: &mut [usize]) {
        debug_assert!(searches.len() <= MAX_SEARCHES && searches.len() <= out.len());
        let count = searches.len().min(MAX_SEARCHES).min(out.len());
        let n = self.sa.len();
        let mut lo = [0usize; MAX_SEARCHES];
        let mut len = [0usize; MAX_SEARCHES];
        let mut pos = [0u32; MAX_SEARCHES];
        for (i, search) in searches[..count].iter().enumerate() {
            lo[i] = search.start.min(n);
            len[i] = search.end.min(n).saturating_sub(lo[i]);
            pos[i] = self.entry(lo[i] + len[i] / 2);
        }
        let mut first = [0u32; MAX_SEARCHES];
        let mut next = [(0u32, 0u32); MAX_SEARCHES];
        let mut active = count > 0;
        while active {
            for i in 0..count {
                let half = len[i] / 2;
                let right = len[i].saturating_sub(half + 1);
                first[i] = self.text.get(pos[i] as usize).copied().unwrap_or(SEPARATOR);
                next[i] = (
                    self.entry(lo[i] + half / 2),
                    self.entry(lo[i] + half + 1 + right / 2),
                );
            }
            active = false;
            for i in 0..count {
                if len[i] == 0 {
                    continue;
                }
                let half = len[i] / 2;
                let Search { pattern, sep, .. } = searches[i];
                let order = match pattern.first() {
                    Some(&t) if t != first[i] => first[i].cmp(&t),
                    _ => self.cmp_at(pos[i], pattern, sep),
                };
                if order == Ordering::Less {
                    (lo[i], len[i], pos[i]) = (lo[i] + half + 1, len[i] - half - 1, next[i].1);
                } else {
                    (len[i], pos[i]) = (half, next[i].0);
                }
                active |= len[i] > 0;
            }
        }
        out[..count].copy_from_slice(&lo[..count]);
    }

    /// True when the suffix at suffix-array index `idx` starts with `pattern` followed by a token.
    fn occurs_at(&self, idx: usize, pattern: &[u32]) -> bool {
        let Some(&pos) = self.sa.get(idx) else {
            return false;
        };
        let (start, end) = (pos as usize, pos as usize + pattern.len());
        self.text.get(start..end) == Some(pattern)
            && self.text.get(end).is_some_and(|&t| t != SEPARATOR)
    }

    /// The longest suffix of `context` (after its last separator, at most `limit` <=
    /// [`MAX_CONTEXT_MATCH`] tokens) that occurs followed by a token, with its suffix-array range.
    ///
    /// Existence is monotone in the length (a suffix that occurs implies every shorter one does),
    /// so the length is found by a search that probes [`PROBES`] lengths per round. A probe is a
    /// single binary search: the suffixes starting with `P_m` form one range of the suffix array
    /// in which those followed by the separator come last, so `P_m` occurs followed by a token
    /// exactly when the first suffix not smaller than `P_m` starts with `P_m` and is not followed
    /// by the separator. The end of the range found is one more search, for `P_m + separator`,
    /// started at its first occurrence.
    fn longest_match_upto(&self, context: &[u32], limit: usize) -> Found {
        let after_sep = context
            .iter()
            .rposition(|&t| t == SEPARATOR)
            .map_or(0, |i| i + 1);
        let ctx = &context[after_sep..];
        let suffix = |m: usize| &ctx[ctx.len() - m..];
        let longest = ctx.len().min(MAX_CONTEXT_MATCH).min(limit);
        let (mut found, mut first, mut hi) = (0, 0, longest + 1);
        let mut searches = [Search::default(); PROBES];
        let mut bounds = [0usize; PROBES];
        while hi - found > 1 {
            let gap = hi - found;
            let mut lengths = [0usize; PROBES];
            let mut n = 0;
            for j in 1..=PROBES {
                let m = found + (gap * j).div_ceil(PROBES + 1);
                if m > found && m < hi && (n == 0 || lengths[n - 1] != m) {
                    lengths[n] = m;
                    n += 1;
                }
            }
            for (search, &m) in searches.iter_mut().zip(&lengths[..n]) {
                search.pattern = suffix(m);
            }
            self.lower_bounds(&searches[..n], &mut bounds);
            for (&m, &bound) in lengths[..n].iter().zip(&bounds) {
                if !self.occurs_at(bound, suffix(m)) {
                    hi = m;
                    break;
                }
                (found, first) = (m, bound);
            }
        }
        if found == 0 {
            return None;
        }
        Some((
            found,
            first..self.occurrences_end(suffix(found), first, usize::MAX),
        ))
    }

    /// The end of the suffix-array range of `pattern`'s occurrences followed by a token, which
    /// starts at `first` and ends by `end`: the suffixes followed by the separator come last.
    fn occurrences_end(&self, pattern: &[u32], first: usize, end: usize) -> usize {
        let search = Search {
            pattern,
            sep: true,
            start: first,
            end,
        };
        let mut bound = [0usize];
        self.lower_bounds(&[search], &mut bound);
        bound[0]
    }

    /// The suffix-array range of `pattern`'s occurrences followed by a token, when they all lie
    /// in `within` and there is at least one (None otherwise).
    fn match_within(
        &self,
        pattern: &[u32],
        within: std::ops::Range<usize>,
    ) -> Option<std::ops::Range<usize>> {
        let search = Search {
            pattern,
            sep: false,
            start: within.start,
            end: within.end,
        };
        let mut first = [0usize];
        self.lower_bounds(&[search], &mut first);
        let first = first[0];
        (first < within.end && self.occurs_at(first, pattern))
            .then(|| first..self.occurrences_end(pattern, first, within.end))
    }

    /// The text positions right after `m` tokens of `samples` occurrences evenly spaced over the
    /// suffix-array `range`: a stratified sample, since the range is sorted by what follows.
    fn sample_starts(&self, range: std::ops::Range<usize>, m: usize, samples: usize) -> Vec<usize> {
        let count = range.len();
        (0..samples)
            .map(|i| self.entry(range.start + i * count / samples) as usize + m)
            .collect()
    }

    /// Reads the first and last token of every continuation window (`max_len` tokens from each
    /// of `starts`) in one tight loop, so that these random reads overlap instead of waiting for
    /// each other; the windows are then in cache when the trie is built.
    fn prefetch_windows(&self, starts: &[usize], max_len: usize) {
        let at = |i: usize| self.text.get(i).copied().unwrap_or(0);
        let mut touched = 0u32;
        for &start in starts {
            touched ^= at(start) ^ at(start.saturating_add(max_len.saturating_sub(1)));
        }
        // Keeps the loads, whose only purpose is to bring the lines into the cache.
        std::hint::black_box(touched);
    }

    /// The continuation at `start`: at most `max_len` tokens, stopping at the document end.
    fn window(&self, start: usize, max_len: usize) -> &[u32] {
        let end = start.saturating_add(max_len).min(self.text.len());
        let window = self.text.get(start..end).unwrap_or(&[]);
        let len = window
            .iter()
            .position(|&t| t == SEPARATOR)
            .unwrap_or(window.len());
        &window[..len]
    }
}
