"""hierdraft.adaptive: trimming draft trees to the nodes worth verifying, losslessly."""

from __future__ import annotations

import numpy as np
import pytest

from _generate_helpers import PROMPTS, OracleDrafter, RandomDrafter, greedy_reference
from hierdraft.adaptive import DEFAULT_EXPLORE_EVERY, AcceptanceStats, AdaptiveDrafter, StepCost, choose_prefix
from hierdraft.decoding import generate
from hierdraft.drafting import PyDraftTree, keep_nodes


def test_choose_prefix_balances_value_and_cost():
    values = np.array([0.9, 0.5, 0.05, 0.01])
    flat = np.ones(5)  # free nodes: take everything of positive value
    assert choose_prefix(values, flat) == 4
    steep = 1.0 + 0.2 * np.arange(5)  # each node costs 20% of a step: only the likely ones pay
    assert choose_prefix(values, steep) == 2
    assert choose_prefix(np.array([0.01, 0.01]), 1.0 + 0.5 * np.arange(3)) == 0


def test_acceptance_stats_prior_and_learning():
    stats = AcceptanceStats(prior=0.3, prior_weight=2.0)
    bucket = (0, 1, True)
    assert stats.rate(bucket) == pytest.approx(0.3)
    assert stats.rate(bucket, prior=0.8) == pytest.approx(0.8)
    stats.update([bucket] * 8, [True] * 8)
    assert stats.rate(bucket) == pytest.approx((8 + 0.6) / 10)
    stats.update([(1, 2, False)] * 8, [False] * 8)
    assert stats.rate((1, 2, False)) == pytest.approx(0.6 / 10)
    with pytest.raises(ValueError):
        AcceptanceStats(prior=1.5)


def test_step_cost_fits_a_line():
    cost = StepCost()
    assert cost.predict(4) is None
    for n in (2, 4, 8, 16, 2, 4, 8, 16):
        cost.observe(n, 0.1 + 0.005 * n)
    cost.observe(0, 0.08)
    predicted = cost.predict(16)
    assert predicted[0] == pytest.approx(0.08)
    assert predicted[10] == pytest.approx(0.15)
    assert predicted[16] == pytest.approx(0.18)


def test_step_cost_forgets_steps_outside_its_window():
    cost = StepCost(window=16)
    rng = np.random.default_rng(0)
    steps = [(int(n), 0.05 + 0.01 * n if i < 40 else 0.2 + 0.002 * n) for i, n in enumerate(rng.integers(1, 17, 60))]
    for n, t in steps:
        cost.observe(n, t)
    slope, intercept = np.polyfit([n for n, _ in steps[-16:]], [t for _, t in steps[-16:]], 1)
    predicted = cost.predict(16)
    assert predicted[1:] == pytest.approx(intercept + slope * np.arange(1, 17), rel=1e-6)


def test_step_cost_uses_prior_slope_when_counts_are_uniform():
    cost = StepCost(prior_slope=0.04)
    for _ in range(10):
        cost.observe(16, 0.2)
    predicted = cost.predict(16)
    assert predicted[16] == pytest.approx(0.2)
    assert predicted[16] > predicted[8] > predicted[1]


def test_keep_nodes_renumbers_parents_and_rejects_orphans():
    tokens = np.array([10, 11, 12, 13])
    parents = np.array([-1, 0, -1, 2])
    depths = np.array([1, 2, 1, 2])
    t, p, d = keep_nodes(tokens, parents, depths, np.array([True, False, True, True]))
    assert t.tolist() == [10, 12, 13] and p.tolist() == [-1, -1, 1] and d.tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match="parent"):
        keep_nodes(tokens, parents, depths, np.array([False, True, True, True]))


class _FixedTrees:
    """A drafter whose every proposal is the same tree; records what the session passes on."""

    def __init__(self, tree: PyDraftTree):
        self.tree, self.accepted = tree, []

    def start(self, prompt_ids):
        return self

    def propose(self):
        return self.tree

    def accept(self, tokens):
        self.accepted.append(list(tokens))

    def finish(self):
        pass


def test_useless_branches_are_trimmed_and_trees_stay_closed():
    # chain 1-2-3 is always accepted, branch 7-8 never
    tree = PyDraftTree.from_chains([[1, 2, 3], [7, 8]], sources=[0, 2])
    inner = _FixedTrees(tree)
    drafter = AdaptiveDrafter(inner, explore_every=1000)
    drafter.cost = StepCost(prior_slope=0.05)
    session = drafter.start([0])
    sizes = []
    for step in range(40):
        proposed = session.propose()
        sizes.append(len(proposed))
        parents = proposed.parents
        assert all(p < i for i, p in enumerate(parents))  # still a valid, closed tree
        session.accept([1, 2, 3, 4])
        drafter.cost.observe(len(proposed), 0.1 + 0.005 * len(proposed))
    assert sizes[0] == 5  # nothing known yet: the whole tree
    assert sizes[-1] == 3 and proposed.tokens.tolist() == [1, 2, 3]
    assert inner.accepted[-1] == [1, 2, 3, 4]  # accept() reaches the wrapped session unchanged


def test_exploration_steps_verify_a_few_nodes_more():
    # chain 1-2-3-4-5-6 is never accepted: the choice drops every node, and each fourth step
    # verifies the first explore_nodes of the ranking (the chain's start) all the same
    tree = PyDraftTree.from_chains([[1, 2, 3, 4, 5, 6]])
    drafter = AdaptiveDrafter(_FixedTrees(tree), explore_every=4, explore_nodes=2)
    session = drafter.start([0])
    sizes, explored = [], []
    for step in range(1, 17):
        proposed = session.propose()
        sizes.append(len(proposed))
        if step % 4 == 0:
            explored.append(proposed.tokens.tolist())
        session.accept([9])
        drafter.cost.observe(len(proposed), 0.1 + 0.02 * len(proposed))
    assert sizes[0] == 6  # nothing known yet: the whole tree
    assert explored[1:] == [[1, 2]] * 3
    assert sizes[-2] == 0  # not an exploration step: nothing is worth verifying
    with pytest.raises(ValueError):
        AdaptiveDrafter(_FixedTrees(tree), explore_nodes=-1)


def _cut_then_good(explore_every: int) -> list[int]:
    """Chain 1-2-3 whose second token is rejected for the first 6 steps and accepted after:
    the tokens the session proposes at the end."""
    tree = PyDraftTree.from_chains([[1, 2, 3]])
    drafter = AdaptiveDrafter(_FixedTrees(tree), explore_every=explore_every)
    session = drafter.start([0])
    for step in range(80):
        proposed = session.propose()
        session.accept([1, 9] if step < 6 else [1, 2, 3, 4])
        drafter.cost.observe(len(proposed), 0.1 + 0.02 * len(proposed))
    return session.propose().tokens.tolist()


def test_a_bucket_cut_after_unlucky_rejections_comes_back():
    # once cut, the second token is only measured again by exploring steps: with the default
    # exploration it is verified, found accepted and kept; without exploration it stays cut
    assert _cut_then_good(explore_every=1000) == [1]
    assert _cut_then_good(explore_every=DEFAULT_EXPLORE_EVERY) == [1, 2, 3]


@pytest.mark.parametrize("prompt", [PROMPTS[0], PROMPTS[6], PROMPTS[9]])
def test_greedy_output_is_unchanged(tiny_lm, prompt):
    want = greedy_reference(tiny_lm, prompt, 24)
    for inner in (OracleDrafter(want, noise=3, seed=2), RandomDrafter(256, budget=12, seed=3)):
        drafter = AdaptiveDrafter(inner, explore_every=3)
        for _ in range(3):  # statistics carry over between requests
            res = generate(tiny_lm, prompt, drafter, max_new_tokens=24)
            assert res.tokens == want


def test_wrapper_passes_other_attributes_through():
    inner = _FixedTrees(PyDraftTree.empty())
    inner.budget = 16
    drafter = AdaptiveDrafter(inner)
    assert drafter.budget == 16
    session = drafter.start([1, 2])
    assert len(session.propose()) == 0
    session.accept([5])
    session.finish()
    with pytest.raises(ValueError):
        AdaptiveDrafter(inner, explore_every=0)
