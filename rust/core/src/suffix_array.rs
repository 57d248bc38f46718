//! Suffix array construction by induced sorting (SA-IS, Nong, Zhang & Chan 2009): linear time
//! over an integer alphabet, used to index the corpus.
//!
//! [`suffix_array`] takes any `u32` string: it first maps the tokens to dense ranks (keeping
//! their order), appends a unique smallest sentinel and runs SA-IS, so the result is the exact
//! lexicographic order of the suffixes under plain `u32` comparison.

use rayon::prelude::*;

const EMPTY: u32 = u32::MAX;

/// Positions of all suffixes of `text` in lexicographic order (`u32` comparison, a proper
/// prefix sorting first). `text.len()` must be below `u32::MAX - 1`.
pub(crate) fn suffix_array(text: &[u32]) -> Vec<u32> {
    assert!(text.len() < (u32::MAX - 1) as usize, "text too long");
    if text.is_empty() {
        return Vec::new();
    }
    let (mut s, alphabet) = dense_ranks(text);
    s.push(0);
    let mut sa = sais(&s, alphabet);
    // sa[0] is the sentinel.
    sa.remove(0);
    sa
}

/// Maps tokens to ranks 1..=sigma preserving order; returns the ranked string and sigma + 1.
fn dense_ranks(text: &[u32]) -> (Vec<u32>, usize) {
    let max = text.par_iter().copied().max().unwrap_or(0) as usize;
    if max < 4 * text.len() + (1 << 16) {
        let mut map = vec![0u32; max + 1];
        for &t in text {
            map[t as usize] = 1;
        }
        let mut next = 0u32;
        for slot in map.iter_mut() {
            if *slot != 0 {
                next += 1;
                *slot = next;
            }
        }
        let ranked = text.par_iter().map(|&t| map[t as usize]).collect();
        (ranked, next as usize + 1)
    } else {
        let mut distinct = text.to_vec();
        distinct.par_sort_unstable();
        distinct.dedup();
        let ranked = text
            .par_iter()
            .map(|t| distinct.binary_search(t).map_or(0, |r| r as u32 + 1))
            .collect();
        (ranked, distinct.len() + 1)
    }
}

/// Suffix types as a bitset (1 = S-type: smaller than the next suffix, 0 = L-type). A bitset
/// stays cache-resident where a byte per position would not, and the passes read it randomly.
struct Types {
    bits: Vec<u64>,
}

impl Types {
    fn new(s: &[u32]) -> Self {
        let n = s.len();
        let mut bits = vec![0u64; n.div_ceil(64)];
        let mut next_s = true;
        bits[(n - 1) / 64] |= 1 << ((n - 1) % 64);
        for i in (0..n - 1).rev() {
            let is_s = s[i] < s[i + 1] || (s[i] == s[i + 1] && next_s);
            if is_s {
                bits[i / 64] |= 1 << (i % 64);
            }
            next_s = is_s;
        }
        Types { bits }
    }

    #[inline]
    fn is_s(&self, i: usize) -> bool {
        (self.bits[i / 64] >> (i % 64)) & 1 == 1
    }

    #[inline]
    fn is_lms(&self, i: usize) -> bool {
        i > 0 && self.is_s(i) && !self.is_s(i - 1)
    }
}

fn bucket_counts(s: &[u32], alphabet: usize) -> Vec<u32> {
    let mut counts = vec![0u32; alphabet];
    for &c in s {
        counts[c as usize] += 1;
    }
    counts
}

fn bucket_heads(counts: &[u32], out: &mut [u32]) {
    let mut sum = 0;
    for (o, &c) in out.iter_mut().zip(counts) {
        *o = sum;
        sum += c;
    }
}

fn bucket_tails(counts: &[u32], out: &mut [u32]) {
    let mut sum = 0;
    for (o, &c) in out.iter_mut().zip(counts) {
        sum += c;
        *o = sum;
    }
}

/// Induces the order of L-type then S-type suffixes from the LMS suffixes already in `sa`.
fn induce(s: &[u32], types: &Types, counts: &[u32], bkt: &mut [u32], sa: &mut [u32]) {
    let n = s.len();
    bucket_heads(counts, bkt);
    for i in 0..n {
        let j = sa[i];
        if j != EMPTY && j > 0 && !types.is_s(j as usize - 1) {
            let c = s[j as usize - 1] as usize;
            sa[bkt[c] as usize] = j - 1;
            bkt[c] += 1;
        }
    }
    bucket_tails(counts, bkt);
    for i in (0..n).rev() {
        let j = sa[i];
        if j != EMPTY && j > 0 && types.is_s(j as usize - 1) {
            let c = s[j as usize - 1] as usize;
            bkt[c] -= 1;
            sa[bkt[c] as usize] = j - 1;
        }
    }
}

/// True when the LMS substrings starting at `a` and `b` are equal (same chars and types).
fn lms_substrings_equal(s: &[u32], types: &Types, a: usize, b: usize) -> bool {
    let n = s.len();
    if a == n - 1 || b == n - 1 {
        return a == b;
    }
    let mut d = 0;
    loop {
        let (x, y) = (a + d, b + d);
        if s[x] != s[y] || types.is_s(x) != types.is_s(y) {
            return false;
        }
        if d > 0 {
            let (ex, ey) = (types.is_lms(x), types.is_lms(y));
            if ex || ey {
                return ex && ey;
            }
        }
        d += 1;
    }
}

/// SA-IS on `s`, whose last element is a unique smallest sentinel and whose values are
/// `< alphabet`.
fn sais(s: &[u32], alphabet: usize) -> Vec<u32> {
    let n = s.len();
    let mut sa = vec![EMPTY; n];
    if n == 1 {
        sa[0] = 0;
        return sa;
    }
    let types = Types::new(s);
    let counts = bucket_counts(s, alphabet);
    let mut bkt = vec![0u32; alphabet];

    // 1. Sort the LMS substrings: LMS positions at their bucket tails, then induce.
    bucket_tails(&counts, &mut bkt);
    for i in (1..n).rev() {
        if types.is_lms(i) {
            let c = s[i] as usize;
            bkt[c] -= 1;
            sa[bkt[c] as usize] = i as u32;
        }
    }
    induce(s, &types, &counts, &mut bkt, &mut sa);

    // 2. Name the LMS substrings in sorted order; equal substrings share a name.
    let mut names = vec![EMPTY; n / 2 + 1];
    let mut name = 0u32;
    let mut prev: Option<usize> = None;
    for &p in sa.iter() {
        let p = p as usize;
        if !types.is_lms(p) {
            continue;
        }
        if let Some(q) = prev {
            if !lms_substrings_equal(s, &types, p, q) {
                name += 1;
            }
        }
        names[p / 2] = name;
        prev = Some(p);
    }
    let num_names = name as usize + 1;
    let lms_positions: Vec<u32> = (1..n)
        .filter(|&i| types.is_lms(i))
        .map(|i| i as u32)
        .collect();
    let reduced: Vec<u32> = names.into_iter().filter(|&x| x != EMPTY).collect();
    debug_assert_eq!(reduced.len(), lms_positions.len());

    // 3. Order the LMS suffixes: directly when the names are unique, else recursively.
    let sa1 = if num_names == reduced.len() {
        let mut sa1 = vec![0u32; reduced.len()];
        for (i, &c) in reduced.iter().enumerate() {
            sa1[c as usize] = i as u32;
        }
        sa1
    } else {
        sais(&reduced, num_names)
    };
    drop(reduced);

    // 4. Place the sorted LMS suffixes at their bucket tails and induce the full order.
    sa.fill(EMPTY);
    bucket_tails(&counts, &mut bkt);
    for &r in sa1.iter().rev() {
        let p = lms_positions[r as usize];
        let c = s[p as usize] as usize;
        bkt[c] -= 1;
        sa[bkt[c] as usize] = p;
    }
    drop(sa1);
    drop(lms_positions);
    induce(s, &types, &counts, &mut bkt, &mut sa);
    sa
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(text: &[u32]) -> Vec<u32> {
        let mut sa: Vec<u32> = (0..text.len() as u32).collect();
        sa.sort_by(|&a, &b| text[a as usize..].cmp(&text[b as usize..]));
        sa
    }

    #[test]
    fn small_cases() {
        for text in [
            vec![],
            vec![7],
            vec![1, 1, 1, 1],
            vec![3, 2, 1],
            vec![2, 1, 2, 1, 2, 1, 2],
            vec![u32::MAX, 0, u32::MAX - 1, 0, u32::MAX],
        ] {
            assert_eq!(suffix_array(&text), naive(&text), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn matches_naive_small_alphabet(text in proptest::collection::vec(0u32..3, 0..300)) {
            prop_assert_eq!(suffix_array(&text), naive(&text));
        }

        #[test]
        fn matches_naive_any_ids(text in proptest::collection::vec(any::<u32>(), 0..200)) {
            prop_assert_eq!(suffix_array(&text), naive(&text));
        }

        #[test]
        fn matches_naive_periodic(unit in proptest::collection::vec(0u32..4, 1..6), reps in 1usize..40, tail in proptest::collection::vec(0u32..4, 0..5)) {
            let mut text: Vec<u32> = unit.iter().copied().cycle().take(unit.len() * reps).collect();
            text.extend(tail);
            prop_assert_eq!(suffix_array(&text), naive(&text));
        }
    }
}
