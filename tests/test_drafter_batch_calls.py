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
