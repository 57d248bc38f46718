"""Property tests of hierdraft.ModelStore (frozen build and online add) against the reference."""

from __future__ import annotations

import numpy as np
from core_reference import as_chains, check_ranked, model_lookup
from core_strategies import token_lists, tokens
from hypothesis import given, settings
from hypothesis import strategies as st

import hierdraft


@st.composite
def configs(draw: st.DrawFn) -> dict[str, int]:
    min_n = draw(st.integers(1, 3))
    return {
        "min_ngram": min_n,
        "max_ngram": min_n + draw(st.integers(0, 2)),
        "continuation_len": draw(st.integers(1, 8)),
        "top_k": draw(st.integers(1, 10)),
    }


@settings(max_examples=250, deadline=None)
@given(
    seqs=token_lists(),
    context=tokens(12),
    cfg=configs(),
    k=st.integers(0, 10),
    max_len=st.integers(0, 10),
)
def test_lookup_matches_reference(
    seqs: list[list[int]], context: list[int], cfg: dict[str, int], k: int, max_len: int
) -> None:
    store = hierdraft.ModelStore.build([np.array(s, dtype=np.int64) for s in seqs], **cfg)
    ref = model_lookup(seqs, context, k, max_len, **cfg)
    check_ranked(store.lookup(context, k=k, max_len=max_len), ref, k)
    # Contexts drawn from the data itself always hit.
    for s in seqs[:2]:
        ctx = s[: len(s) // 2 + 1]
        ref = model_lookup(seqs, ctx, k, max_len, **cfg)
        check_ranked(store.lookup(ctx, k=k, max_len=max_len), ref, k)


@settings(max_examples=120, deadline=None)
@given(base=token_lists(max_docs=3), online=token_lists(max_docs=4), context=tokens(6))
def test_online_add_equals_build_without_pruning(
    base: list[list[int]], online: list[list[int]], context: list[int]
) -> None:
    # With top_k large enough that pruning keeps everything, counts add up exactly; the order
    # may differ (newer data wins ties), so compare the (chain, score) sets of all chains.
    cfg = {"min_ngram": 1, "max_ngram": 3, "continuation_len": 4, "top_k": 10_000}
    store = hierdraft.ModelStore.build(base, **cfg)
    for seq in online:
        store.add(seq)
    ref = model_lookup(base + online, context, 10_000, 4, **cfg)
    got = as_chains(store.lookup(context, k=10_000, max_len=4))
    assert {c for c, _ in got} == {c for c, _ in ref.chains}
    assert sorted(s for _, s in got) == sorted(s for _, s in ref.chains)


def test_empty_store_grows_with_add() -> None:
    store = hierdraft.ModelStore(vocab_size=100, metadata="tok=demo")
    assert store.num_keys == 0
    assert store.lookup([1, 2]) == []
    store.add([1, 2, 3, 4])
    store.add(np.array([1, 2, 3, 5], dtype=np.uint32))
    found = [(a.tolist(), s) for a, s in store.lookup([9, 1, 2], k=4, max_len=8)]
    assert found[0][0][0] == 3 and found[0][1] == 1.0
    assert {tuple(c) for c, _ in found} == {(3, 4), (3, 5)}
    assert store.num_keys > 0
    assert store.vocab_size == 100 and store.metadata == "tok=demo"
    assert (store.min_ngram, store.max_ngram, store.continuation_len, store.top_k) == (1, 3, 6, 8)
    assert "ModelStore" in repr(store)


def test_build_accepts_generators_and_tuples() -> None:
    store = hierdraft.ModelStore.build(((1, 2, 3) for _ in range(3)))
    assert [a.tolist() for a, _ in store.lookup((1, 2))] == [[3]]
