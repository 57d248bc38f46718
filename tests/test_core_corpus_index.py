"""Property tests of hierdraft.CorpusIndex against the pure-Python reference lookup."""

from __future__ import annotations

import numpy as np
from core_reference import check_ranked, corpus_lookup
from core_strategies import token_lists, tokens
from hypothesis import given, settings
from hypothesis import strategies as st

import hierdraft


@settings(max_examples=250, deadline=None)
@given(
    docs=token_lists(max_docs=5, max_size=60),
    context=tokens(20),
    k=st.integers(0, 10),
    max_len=st.integers(0, 10),
)
def test_lookup_matches_reference(
    docs: list[list[int]], context: list[int], k: int, max_len: int
) -> None:
    if not any(docs):
        return
    index = hierdraft.CorpusIndex.build([np.array(d, dtype=np.uint32) for d in docs])
    assert index.num_tokens == sum(map(len, docs))
    assert index.num_documents == len(docs)
    check_ranked(index.lookup(context, k=k, max_len=max_len), corpus_lookup(docs, context, k, max_len), k)
    # Contexts taken from the corpus, long ones included (match capped at 16 tokens).
    for d in docs[:2]:
        ctx = context + d[: len(d) // 2 + 1]
        ref = corpus_lookup(docs, ctx, k, max_len)
        check_ranked(index.lookup(ctx, k=k, max_len=max_len), ref, k)


def test_no_match_crosses_documents() -> None:
    index = hierdraft.CorpusIndex.build([[1, 2, 3], [4, 5, 6]])
    assert index.lookup([3]) == []  # 3 ends its document
    assert [a.tolist() for a, _ in index.lookup([2, 3, 4])] == [[5, 6]]
    assert [a.tolist() for a, _ in index.lookup([2], max_len=8)] == [[3]]


def test_frequency_ranking_and_scores() -> None:
    docs = [[7, 1, 2]] * 3 + [[7, 1, 3, 4]]
    index = hierdraft.CorpusIndex.build(docs, vocab_size=10, metadata="m")
    found = [(a.tolist(), s) for a, s in index.lookup([7], k=4, max_len=4)]
    assert found == [([1, 2], 1.0), ([1, 3, 4], 0.25)]
    assert index.vocab_size == 10 and index.metadata == "m"
    assert 0 < index.bytes_per_token <= 8.0 + 1e-9
    assert "CorpusIndex" in repr(index)


def test_empty_documents_are_counted_but_hold_nothing() -> None:
    index = hierdraft.CorpusIndex.build([[], [1, 2], []])
    assert index.num_documents == 3 and index.num_tokens == 2
    assert [a.tolist() for a, _ in index.lookup([1])] == [[2]]
