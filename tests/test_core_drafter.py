"""Tests of hierdraft.HierarchicalDrafter / DraftSession / DraftTree: the merged prefix tree
equals a pure-Python merge of the levels' lookups, tree invariants, ancestor mask, batching and
the session life cycle."""

from __future__ import annotations

import numpy as np
import pytest
from core_reference import RefTree, ancestor_mask
from core_strategies import token_lists, tokens
from hypothesis import given, settings
from hypothesis import strategies as st

import hierdraft

LEVELS = ("context", "model", "corpus")


def reference_tree(drafter: hierdraft.HierarchicalDrafter, seq: list[int]) -> RefTree:
    """Reads the levels in order, inserting each level's ranked chains until the budget is full."""
    tree = RefTree(drafter.budget, drafter.max_depth)
    for level in drafter.order:
        if tree.full():
            break
        if level == "context":
            ctx = hierdraft.ContextStore(drafter.context_min_ngram, drafter.context_max_ngram)
            ctx.extend(seq)
            found = ctx.lookup(drafter.context_candidates, drafter.max_depth)
        elif level == "model":
            if drafter.model_store is None:
                continue
            found = drafter.model_store.lookup(seq, drafter.model_candidates, drafter.max_depth)
        else:
            if drafter.corpus_index is None:
                continue
            found = drafter.corpus_index.lookup(seq, drafter.corpus_candidates, drafter.max_depth)
        for chain, _ in found:
            tree.insert(tuple(int(t) for t in chain), LEVELS.index(level))
            if tree.full():
                break
    return tree


def check_invariants(tree: hierdraft.DraftTree, budget: int, max_depth: int) -> None:
    n = len(tree)
    assert n <= budget
    assert tree.tokens.dtype == np.uint32 and tree.parents.dtype == np.int32
    assert tree.depths.dtype == np.int32 and tree.sources.dtype == np.uint8
    assert tree.tokens.shape == tree.parents.shape == tree.depths.shape == tree.sources.shape == (n,)
    seen = set()
    for i in range(n):
        p = int(tree.parents[i])
        assert -1 <= p < i
        assert tree.depths[i] == (1 if p < 0 else tree.depths[p] + 1)
        assert 1 <= tree.depths[i] <= max_depth
        assert tree.sources[i] in (0, 1, 2)
        assert (p, int(tree.tokens[i])) not in seen, "shared prefixes must be stored once"
        seen.add((p, int(tree.tokens[i])))
    mask = tree.ancestor_mask()
    assert mask.dtype == np.bool_ and mask.shape == (n, n)
    assert np.array_equal(mask, ancestor_mask(tree.parents.tolist()))


@st.composite
def drafter_settings(draw: st.DrawFn) -> dict[str, object]:
    min_n = draw(st.integers(1, 3))
    return {
        "order": tuple(draw(st.permutations(LEVELS))[: draw(st.integers(1, 3))]),
        "budget": draw(st.integers(1, 40)),
        "max_depth": draw(st.integers(1, 10)),
        "context_candidates": draw(st.integers(1, 8)),
        "model_candidates": draw(st.integers(1, 8)),
        "corpus_candidates": draw(st.integers(1, 8)),
        "context_min_ngram": min_n,
        "context_max_ngram": min_n + draw(st.integers(0, 3)),
    }


@settings(max_examples=200, deadline=None)
@given(
    model_data=token_lists(max_docs=4),
    corpus_data=token_lists(max_docs=4),
    prompt=tokens(60),
    steps=st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=4), max_size=4),
    cfg=drafter_settings(),
    use_model=st.booleans(),
    use_corpus=st.booleans(),
)
def test_tree_matches_reference_merge(
    model_data: list[list[int]],
    corpus_data: list[list[int]],
    prompt: list[int],
    steps: list[list[int]],
    cfg: dict[str, object],
    use_model: bool,
    use_corpus: bool,
) -> None:
    model = hierdraft.ModelStore.build(model_data) if use_model else None
    corpus = (
        hierdraft.CorpusIndex.build(corpus_data) if use_corpus and any(corpus_data) else None
    )
    drafter = hierdraft.HierarchicalDrafter(model_store=model, corpus_index=corpus, **cfg)  # type: ignore[arg-type]
    session = drafter.start(prompt)
    seq = list(prompt)
    for step in [*steps, None]:
        tree = session.propose()
        check_invariants(tree, drafter.budget, drafter.max_depth)
        ref = reference_tree(drafter, seq)
        assert tree.tokens.tolist() == ref.tokens
        assert tree.parents.tolist() == ref.parents
        assert tree.depths.tolist() == ref.depths
        assert tree.sources.tolist() == ref.sources
        if step is None:
            break
        session.accept(step)
        seq += step
        assert session.tokens.tolist() == seq
    assert session.generated.tolist() == seq[len(prompt) :]
    session.finish(learn=True)


def test_levels_in_order_and_budget_stops_early() -> None:
    model = hierdraft.ModelStore.build([[1, 2, 30, 31, 32]])
    corpus = hierdraft.CorpusIndex.build([[1, 2, 40, 41]])
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]
    full = hierdraft.HierarchicalDrafter(model, corpus, budget=64).start(prompt).propose()
    assert full.sources.tolist() == [0] * 8 + [1] * 3 + [2] * 2
    assert full.tokens.tolist() == [3, 4, 5, 6, 7, 8, 9, 1, 30, 31, 32, 40, 41]
    # A budget the context level fills alone: the other levels contribute nothing.
    small = hierdraft.HierarchicalDrafter(model, corpus, budget=5).start(prompt).propose()
    assert small.tokens.tolist() == [3, 4, 5, 6, 7] and set(small.sources.tolist()) == {0}
    reordered = hierdraft.HierarchicalDrafter(
        model, corpus, order=("corpus", "model"), budget=4
    ).start(prompt).propose()
    assert reordered.tokens.tolist() == [40, 41, 30, 31]
    assert reordered.sources.tolist() == [2, 2, 1, 1]


def test_shared_prefix_stored_once() -> None:
    model = hierdraft.ModelStore.build([[1, 5, 6, 7]])
    corpus = hierdraft.CorpusIndex.build([[1, 5, 6, 9]])
    tree = hierdraft.HierarchicalDrafter(model, corpus).start([1]).propose()
    assert tree.tokens.tolist() == [5, 6, 7, 9]
    assert tree.parents.tolist() == [-1, 0, 1, 1]
    assert tree.sources.tolist() == [1, 1, 1, 2]
    assert tree.ancestor_mask().tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, False, True],
    ]
    assert "DraftTree(n=4" in repr(tree)


def test_empty_tree() -> None:
    tree = hierdraft.HierarchicalDrafter().start([]).propose()
    assert len(tree) == 0
    assert tree.ancestor_mask().shape == (0, 0)
    assert tree.tokens.dtype == np.uint32


def test_propose_batch_equals_single() -> None:
    corpus = hierdraft.CorpusIndex.build([list(range(50)) * 3])
    drafter = hierdraft.HierarchicalDrafter(corpus_index=corpus)
    sessions = [drafter.start([i, i + 1, i + 2]) for i in range(20)]
    batch = drafter.propose_batch([*sessions, sessions[0]])
    assert len(batch) == 21
    for s, t in zip([*sessions, sessions[0]], batch):
        single = s.propose()
        assert t.tokens.tolist() == single.tokens.tolist()
        assert t.parents.tolist() == single.parents.tolist()
    assert drafter.propose_batch([]) == []


def test_finish_learns_generated_tokens_only() -> None:
    model = hierdraft.ModelStore()
    drafter = hierdraft.HierarchicalDrafter(model_store=model)
    assert drafter.model_store is model
    s = drafter.start([100, 101])
    s.accept([7, 8])
    s.accept(np.array([9], dtype=np.int32))
    assert s.prompt_len == 2 and s.generated.tolist() == [7, 8, 9]
    s.finish()
    assert s.finished
    s.finish()  # idempotent
    assert [a.tolist() for a, _ in model.lookup([7])] == [[8, 9]]
    assert model.lookup([100]) == []  # the prompt is not learned
    t = drafter.start([1])
    t.accept([7, 8])
    t.finish(learn=False)
    assert [a.tolist() for a, _ in model.lookup([7])] == [[8, 9]]


def test_finished_session_rejects_use() -> None:
    s = hierdraft.HierarchicalDrafter().start([1, 2])
    s.finish()
    for call in (s.propose, lambda: s.accept([1]), lambda: s.tokens):
        with pytest.raises(ValueError, match="finished"):
            call()
    with pytest.raises(ValueError, match="finished"):
        hierdraft.HierarchicalDrafter().propose_batch([s])
    assert "finished" in repr(s)


def test_drafter_properties() -> None:
    d = hierdraft.HierarchicalDrafter()
    assert d.order == ("context", "model", "corpus")
    assert (d.budget, d.max_depth) == (16, 8)
    assert (d.context_candidates, d.model_candidates, d.corpus_candidates) == (8, 8, 8)
    assert (d.context_min_ngram, d.context_max_ngram) == (1, 4)
    assert d.model_store is None and d.corpus_index is None and d.vocab_size is None
    assert "HierarchicalDrafter" in repr(d)
    v = hierdraft.HierarchicalDrafter(
        hierdraft.ModelStore(vocab_size=50), hierdraft.CorpusIndex.build([[1]], vocab_size=40)
    )
    assert v.vocab_size == 40
