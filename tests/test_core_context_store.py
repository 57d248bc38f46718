"""Property tests of hierdraft.ContextStore against the pure-Python reference lookup."""

from __future__ import annotations

import numpy as np
from core_reference import check_ranked, context_lookup
from core_strategies import tokens
from hypothesis import given, settings
from hypothesis import strategies as st

import hierdraft


@settings(max_examples=300, deadline=None)
@given(
    seq=tokens(),
    k=st.integers(0, 10),
    max_len=st.integers(0, 10),
    ngrams=st.tuples(st.integers(1, 5), st.integers(0, 4)),
)
def test_lookup_matches_reference(
    seq: list[int], k: int, max_len: int, ngrams: tuple[int, int]
) -> None:
    min_n, extra = ngrams
    store = hierdraft.ContextStore(min_ngram=min_n, max_ngram=min_n + extra)
    store.extend(np.array(seq, dtype=np.uint32))
    ref = context_lookup(seq, k, max_len, min_n, min_n + extra)
    check_ranked(store.lookup(k=k, max_len=max_len), ref, k)


@settings(max_examples=100, deadline=None)
@given(seq=tokens(), cuts=st.lists(st.integers(0, 200), max_size=6))
def test_incremental_extend_equals_one_extend(seq: list[int], cuts: list[int]) -> None:
    whole = hierdraft.ContextStore()
    whole.extend(seq)
    parts = hierdraft.ContextStore()
    bounds = sorted({0, len(seq), *(c for c in cuts if c <= len(seq))})
    for a, b in zip(bounds, bounds[1:]):
        parts.extend(seq[a:b])
        ref = context_lookup(seq[:b], 4, 6)
        check_ranked(parts.lookup(4, 6), ref, 4)
    assert len(parts) == len(whole) == len(seq)
    assert parts.tokens.tolist() == seq
    assert parts.tokens.dtype == np.uint32
    got = [(a.tolist(), s) for a, s in parts.lookup()]
    assert got == [(a.tolist(), s) for a, s in whole.lookup()]


def test_known_example() -> None:
    store = hierdraft.ContextStore()
    store.extend([5, 6, 7, 8, 5, 6, 9, 5, 6])
    found = store.lookup(k=3, max_len=2)
    assert [(a.tolist(), s) for a, s in found] == [([9, 5], 0.5), ([7, 8], 0.5)]
    assert store.min_ngram == 1 and store.max_ngram == 4
    assert "ContextStore" in repr(store)


def test_empty_and_no_match() -> None:
    store = hierdraft.ContextStore()
    assert store.lookup() == []
    store.extend([1, 2, 3])
    assert store.lookup() == []
    assert store.lookup(k=0) == [] and store.lookup(max_len=0) == []
