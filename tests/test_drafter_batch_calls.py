"""The drafter's batch calls for engines that step many requests at once (the vLLM proposer):
``propose_chains`` (propose_batch cut to each tree's best chain) and ``accept_batch``."""

from __future__ import annotations

import numpy as np
import pytest

import hierdraft


def test_propose_chains_is_propose_batch_cut_to_best_chains():
    rng = np.random.default_rng(3)
    corpus = hierdraft.CorpusIndex.build([rng.integers(0, 30, 3000)])
    drafter = hierdraft.HierarchicalDrafter(corpus_index=corpus, budget=20)
    sessions = [drafter.start(rng.integers(0, 30, 200)) for _ in range(9)]
    sessions.append(sessions[0])  # a session may be listed twice
    max_lens = [int(k) for k in rng.integers(0, 9, len(sessions))]
    chains = drafter.propose_chains(sessions, max_lens)
    trees = drafter.propose_batch(sessions)
    assert chains == [t.best_chain(k).tolist() for t, k in zip(trees, max_lens)]
    assert all(isinstance(c, list) and len(c) <= k for c, k in zip(chains, max_lens))
    assert any(chains)
    assert drafter.propose_chains([], []) == []
    with pytest.raises(ValueError, match="2 entries for 1 sessions"):
        drafter.propose_chains(sessions[:1], [3, 4])
    with pytest.raises(ValueError, match=r"max_lens\[1\]"):
        drafter.propose_chains(sessions[:2], [3, -1])
    sessions[1].finish()
    with pytest.raises(ValueError, match=r"sessions\[1\].*finished"):
        drafter.propose_chains(sessions[:2], [3, 3])


def test_accept_batch_equals_accept_for_each_session():
    rng = np.random.default_rng(4)
    store = hierdraft.ModelStore.build([rng.integers(0, 40, 500) for _ in range(4)], vocab_size=40)
    drafter = hierdraft.HierarchicalDrafter(model_store=store)
    prompts = [rng.integers(0, 40, 50) for _ in range(5)]
    batched = [drafter.start(p) for p in prompts]
    single = [drafter.start(p) for p in prompts]
    for _ in range(6):
        new = [rng.integers(0, 40, int(rng.integers(1, 4))).tolist() for _ in prompts]
        drafter.accept_batch(batched, new)
        for s, t in zip(single, new):
            s.accept(t)
    for a, b in zip(batched, single):
        assert np.array_equal(a.tokens, b.tokens)
    assert drafter.propose_chains(batched, [6] * 5) == drafter.propose_chains(single, [6] * 5)
    drafter.accept_batch([], [])
    with pytest.raises(ValueError, match="1 entries for 2 sessions"):
        drafter.accept_batch(batched[:2], [[1]])
    before = [len(s.tokens) for s in batched[:3]]
    with pytest.raises(ValueError, match=r"tokens\[1\]: token 45"):
        drafter.accept_batch(batched[:3], [[1], [45], [2]])
    assert [len(s.tokens) for s in batched[:3]] == [before[0] + 1, before[1], before[2]]
    with pytest.raises(ValueError, match=r"tokens\[0\]\[1\] = -3"):
        drafter.accept_batch(batched[:1], [[1, -3]])
    batched[1].finish()
    with pytest.raises(ValueError, match=r"sessions\[1\].*finished"):
        drafter.accept_batch(batched[:2], [[1], [1]])


def _batch(rng, rows: int, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A token matrix with stale values past each row's length, and the lengths."""
    tokens = rng.integers(0, 30, size=(rows, width)).astype(dtype)
    lengths = rng.integers(10, width, size=rows).astype(np.int32)
    return tokens, lengths


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32])
def test_session_table_drafts_what_fresh_sessions_draft(dtype):
    rng = np.random.default_rng(5)
    corpus = hierdraft.CorpusIndex.build([rng.integers(0, 30, 3000)])
    drafter = hierdraft.HierarchicalDrafter(corpus_index=corpus, budget=6, max_depth=6)
    table = hierdraft._core.SessionTable(drafter, 6, 64, 8)
    tokens, lengths = _batch(rng, 7, 64, dtype)
    new = [[0] * int(rng.integers(0, 3)) for _ in range(5)]  # rows 5 and 6 are past the batch
    drafted = [False] * 5  # a row has a session once it had new tokens
    for step in range(6):
        drafted = [d or bool(t) for d, t in zip(drafted, new)]
        chains = table.step(new, lengths, tokens)
        assert len(chains) == 5 and all(isinstance(c, list) for c in chains)
        for i, chain in enumerate(chains):
            n = int(lengths[i])
            room = min(6, 64 - n)
            want = drafter.start(tokens[i, :n]).propose().best_chain(room).tolist() if new[i] else []
            assert chain == want, (step, i)
            if drafted[i]:
                assert np.array_equal(table.row_tokens(i), tokens[i, :n].astype(np.uint32))
            else:
                assert table.row_tokens(i) is None
        for i in range(5):
            grow = int(rng.integers(0, 3)) if lengths[i] < 62 else 0
            lengths[i] += grow
            new[i] = [0] * grow
    assert table.started == table.live == sum(drafted) >= 4 and table.row_tokens(5) is None
    table.close()
    assert table.live == table.idle == 0


def test_session_table_refuses_bad_input():
    drafter = hierdraft.HierarchicalDrafter()
    table = hierdraft._core.SessionTable(drafter, 4, 32, 2, learn=False, parallel_min_rows=3)
    assert (table.max_chain, table.max_model_len, table.max_idle, table.learn, table.parallel_min_rows) == (
        4, 32, 2, False, 3)
    assert table.drafter is drafter
    tokens = np.ones((2, 32), dtype=np.int32)
    lengths = np.array([3, 3], dtype=np.int32)
    assert table.step([], lengths, tokens) == []
    cases = [
        (("nope", lengths, tokens), TypeError, "list of token lists"),
        (([5], lengths, tokens), TypeError, r"new_tokens\[0\]"),
        (([[1]], [3], tokens), TypeError, "numpy array"),
        (([[1]], lengths.astype(np.float32), tokens), TypeError, "lengths must have dtype"),
        (([[1]], np.array([-1, 3]), tokens), ValueError, "negative"),
        (([[1]], lengths, tokens[0]), ValueError, "2 dimension"),
        (([[1]], lengths, tokens.astype(np.int16)), TypeError, "tokens must have dtype"),
        (([[1]], lengths, np.asfortranarray(tokens)), ValueError, "C-contiguous"),
        (([[1], [1], [1]], lengths, tokens), ValueError, "2 lengths for 3 rows"),
        (([[1, 1, 1, 1]], lengths, tokens), ValueError, "row 0: length 3 with 4 new"),
    ]
    for args, exc, match in cases:
        with pytest.raises(exc, match=match):
            table.step(*args)
    with pytest.raises(ValueError, match="max_chain must be >= 0"):
        hierdraft._core.SessionTable(drafter, -1, 32, 2)
    with pytest.raises(ValueError, match="max_chain >= 1"):
        hierdraft._core.SessionTable(drafter, 0, 32, 2)
    fresh = [drafter.start(tokens[i, :3]).propose().best_chain(4).tolist() for i in range(2)]
    assert table.step([[1], [1]], lengths, tokens) == fresh == [[1], [1]]  # still usable
    assert "live=2" in repr(table)
