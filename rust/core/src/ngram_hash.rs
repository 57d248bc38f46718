//! A fixed, platform-independent hash of short token n-grams. It is persisted inside model-store
//! hash tables, so it must never change between versions (unlike `ahash`, whose output may).

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const MUL: u64 = 0xD6E8_FEB8_6659_FD93;

/// Mixes one more token into a running hash.
#[inline]
pub(crate) fn push(hash: u64, token: u32) -> u64 {
    let x = (hash ^ u64::from(token)).wrapping_mul(MUL);
    x ^ (x >> 32)
}

/// The hash of `tokens`, read from the last token backwards: `hash(&s[i..])` for every `i` of a
/// slice `s` is produced by [`suffix_hashes`] in one pass.
#[inline]
pub(crate) fn hash(tokens: &[u32]) -> u64 {
    tokens.iter().rev().fold(SEED, |h, &t| push(h, t))
}

/// Calls `f(n, hash(&tokens[len - n..]))` for n = 1..=min(max_n, len): the hashes of all suffixes
/// of `tokens` up to `max_n` tokens, each computed incrementally from the previous one.
#[inline]
pub(crate) fn suffix_hashes(tokens: &[u32], max_n: usize, mut f: impl FnMut(usize, u64)) {
    let mut h = SEED;
    for (i, &t) in tokens.iter().rev().take(max_n).enumerate() {
        h = push(h, t);
        f(i + 1, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_hashes_match_hash() {
        let s = [5u32, 9, 1, 1, 7];
        let mut seen = Vec::new();
        suffix_hashes(&s, 4, |n, h| seen.push((n, h)));
        assert_eq!(seen.len(), 4);
        for (n, h) in seen {
            assert_eq!(h, hash(&s[s.len() - n..]));
        }
    }
}
