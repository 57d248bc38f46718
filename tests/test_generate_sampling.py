"""Sampling stays lossless: logits processing like model.generate, and a tree walk that follows the
target's own draws, so that the output distribution is unchanged whatever the drafts, and with a
seed the sampled tokens equal plain decoding's.

Statistical tests use fixed seeds (deterministic) and a chi-square goodness-of-fit test against
the exact target distribution (computed by enumerating every prefix); cells with an expected count
below 5 are pooled. Threshold: p > 1e-3 for each test (a correct sampler fails one such test with
probability 1e-3; a wrong one, e.g. accepting drafts greedily, gives p-values far below 1e-10).
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_llama
from scipy.stats import chisquare

from hierdraft.adaptive import AdaptiveDrafter
from hierdraft.drafting import PyDraftTree
from hierdraft.decoding import generate
from hierdraft.draws import PositionDraws
from hierdraft.sampling import SamplingParams, _draw, verify_sampling
from hierdraft.tree_forward import argmax_rows
from hierdraft.tree_forward import TreeLogits

P_MIN = 1e-3


def _chi2_pvalue(observed: np.ndarray, expected_prob: np.ndarray) -> float:
    observed = np.asarray(observed, dtype=np.float64).reshape(-1)
    prob = np.asarray(expected_prob, dtype=np.float64).reshape(-1)
    expected = prob / prob.sum() * observed.sum()
    assert observed[expected == 0].sum() == 0, "a token of probability 0 was produced"
    observed, expected = observed[expected > 0], expected[expected > 0]
    big = expected >= 5
    obs = list(observed[big]) + ([observed[~big].sum()] if (~big).any() else [])
    exp = list(expected[big]) + ([expected[~big].sum()] if (~big).any() else [])
    if len(obs) < 2:
        return 1.0
    return float(chisquare(obs, exp).pvalue)


def test_draw_follows_the_weights_and_never_picks_a_zero():
    weights = torch.tensor([0.1, 0.0, 0.25, 0.0, 0.05, 0.6, 0.0])
    u = np.random.default_rng(5).random(20_000)
    counts = np.bincount([_draw(weights, x) for x in u.tolist()], minlength=len(weights))
    assert _chi2_pvalue(counts, weights.numpy()) > P_MIN


def test_draw_inverts_the_cumulative_weights():
    weights = torch.tensor([0.25, 0.0, 0.5, 0.25])
    assert [_draw(weights, u) for u in (0.0, 0.2499, 0.25, 0.7499, 0.75, 0.9999)] == [0, 0, 2, 2, 3, 3]


def test_draw_at_the_top_of_the_range_takes_the_last_weighted_index():
    weights = torch.tensor([0.3, 0.7, 0.0, 0.0])
    # a uniform number whose product with the total rounds up to the total
    assert _draw(weights, 1.0) == 1


def test_position_draws_are_uniform_and_a_function_of_key_and_position():
    draws = PositionDraws(7)
    u = np.array([draws.uniform(t) for t in range(20_000)])
    assert ((u >= 0) & (u < 1)).all()
    assert _chi2_pvalue(np.histogram(u, bins=20, range=(0, 1))[0], np.full(20, 1 / 20)) > P_MIN
    assert [draws.uniform(t) for t in (5, 2, 5)] == [u[5], u[2], u[5]]  # no hidden state
    assert PositionDraws(7).uniform(3) == u[3]
    # neighbouring keys (the bench's seed, seed + 1, ...) give unrelated numbers
    other = np.array([PositionDraws(8).uniform(t) for t in range(20_000)])
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.05
    assert not np.isin(u[:100], other).any()


def test_position_draws_without_a_seed_follow_torchs_global_generator():
    torch.manual_seed(11)
    a = PositionDraws.from_seed(None).uniform(0)
    torch.manual_seed(11)
    assert PositionDraws.from_seed(None).uniform(0) == a
    assert PositionDraws.from_seed(None).uniform(0) != a


def test_position_draws_refuse_bad_input():
    with pytest.raises(TypeError, match="int"):
        PositionDraws(1.5)
    with pytest.raises(ValueError, match="position"):
        PositionDraws(1).uniform(-1)


def test_argmax_rows_is_torchs_argmax():
    rows = torch.randn(5, 1000, generator=torch.Generator().manual_seed(0))
    rows[1, [10, 500]] = 9.0  # a tie: the first index
    rows[2, 7] = float("nan")  # NaN counts as the maximum, as in torch
    rows[3] = 0.0
    rows[3, 3] = -0.0
    expected = rows.argmax(dim=-1).tolist()
    assert argmax_rows(rows) == expected and expected[1] == 10 and expected[2] == 7
    assert argmax_rows(rows.to(torch.bfloat16)) == rows.to(torch.bfloat16).argmax(dim=-1).tolist()


@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    [(1.0, None, None), (0.7, None, None), (1.3, 5, None), (1.0, None, 0.8), (0.8, 10, 0.9), (1.0, 1, None), (1.0, 0, 1.0)],
)
def test_processing_matches_transformers_warpers(temperature, top_k, top_p):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 3
    logits[0, :10] = 2.5  # ties at the top-k / top-p boundary
    want = warpers(None, logits.clone())
    got = SamplingParams(temperature, top_k, top_p).process(logits)
    assert torch.equal(got, want)


def test_tree_walk_single_step():
    """One verification: P(first token) = p_root and P(second | first) = p of that child's row."""
    v = 6
    tree = PyDraftTree([0, 1, 0, 3, 2, 0, 5], [-1, -1, -1, -1, 0, 0, 3])  # duplicate sibling, zero-p child
    p = torch.tensor(
        [
            [0.40, 0.25, 0.10, 0.15, 0.10, 0.00],  # root: token 5 filtered out (p = 0)
            [0.10, 0.10, 0.50, 0.10, 0.10, 0.10],  # node 0 (token 0)
            [0.30, 0.30, 0.10, 0.10, 0.10, 0.10],  # node 1 (token 1), a leaf
            [0.40, 0.25, 0.10, 0.15, 0.10, 0.00],  # node 2 (duplicate of node 0)
            [0.05, 0.05, 0.05, 0.05, 0.05, 0.75],  # node 3 (token 3)
            [0.20, 0.20, 0.20, 0.20, 0.10, 0.10],  # node 4
            [0.20, 0.20, 0.20, 0.20, 0.10, 0.10],  # node 5
            [0.20, 0.20, 0.20, 0.20, 0.10, 0.10],  # node 6
        ],
        dtype=torch.float32,
    )
    tokens, parents = tree.tokens.astype(np.int64), tree.parents.astype(np.int64)
    logits, params = TreeLogits(logits=torch.log(p)), SamplingParams(temperature=1.0)  # softmax(log p) = p
    n = 12000
    first = np.zeros(v)
    second = {0: np.zeros(v), 1: np.zeros(v), 3: np.zeros(v)}
    for i in range(n):
        out = verify_sampling(logits, tokens, parents, params, PositionDraws(i), 0).tokens
        first[out[0]] += 1
        if len(out) > 1:
            second[out[0]][out[1]] += 1
        else:
            assert out[0] not in second  # a node in the tree always continues
    assert _chi2_pvalue(first, p[0].numpy()) > P_MIN
    for tok, row in ((0, 1), (1, 2), (3, 4)):
        assert second[tok].sum() > 500
        assert _chi2_pvalue(second[tok], p[row].numpy()) > P_MIN


# --- end to end with a tiny model and exact reference distributions --------------------------

V = 8
PROMPT = [1, 3, 5, 6]
NEW = 3


@pytest.fixture(scope="module")
def peaky_llama():
    model = make_tiny_llama(vocab_size=V, num_hidden_layers=1, hidden_size=32, intermediate_size=64, eos_token_id=None, bos_token_id=None, pad_token_id=None, seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)  # peaked next-token distributions (drafts often right)
    return model


def _exact_tables(model, params: SamplingParams):
    """p(next | prompt + prefix) for every generated prefix of length < NEW."""
    tables: dict[tuple[int, ...], np.ndarray] = {}
    with torch.inference_mode():
        for k in range(NEW):
            prefixes = list(itertools.product(range(V), repeat=k))
            ids = torch.tensor([PROMPT + list(pre) for pre in prefixes])
            logits = model(ids).logits[:, -1]
            probs = params.probabilities(logits).double().numpy()
            for pre, row in zip(prefixes, probs):
                tables[pre] = row / row.sum()
    return tables


def _marginals(tables):
    """Exact distributions of token k (k < NEW) and of the pair (token 0, token 1)."""
    marg = [np.zeros(V) for _ in range(NEW)]
    joint01 = np.zeros((V, V))
    for seq in itertools.product(range(V), repeat=NEW):
        p = 1.0
        for k in range(NEW):
            p *= tables[seq[:k]][seq[k]]
        for k in range(NEW):
            marg[k][seq[k]] += p
        joint01[seq[0], seq[1]] += p
    return marg, joint01


class _TableDrafter:
    """Proposes the two likeliest tokens (often right), a random one (often wrong), a duplicate, and
    a likely grandchild chain, read from the exact tables."""

    def __init__(self, tables, seed):
        self.tables, self.rng = tables, np.random.default_rng(seed)

    def start(self, prompt_ids):
        self.generated: list[int] = []
        return self

    def propose(self):
        row = self.tables.get(tuple(self.generated))
        if row is None:
            return PyDraftTree.empty()
        top = np.argsort(-row)
        a, b = int(top[0]), int(top[1])
        r = int(self.rng.integers(0, V))
        chains = [[b], [r, int(self.rng.integers(0, V))], [a]]
        child = self.tables.get(tuple(self.generated + [a]))
        if child is not None:
            chains[-1].append(int(np.argmax(child)))
        order = self.rng.permutation(3)
        tree = PyDraftTree.from_chains([chains[i] for i in order])
        return PyDraftTree(list(tree.tokens) + [b], list(tree.parents) + [-1])  # duplicate sibling

    def accept(self, tokens):
        self.generated.extend(int(t) for t in tokens)

    def finish(self):
        pass


@pytest.mark.parametrize(
    "temperature,top_k,top_p,use_drafter,n",
    [
        (1.0, None, None, True, 2000),
        (0.8, 5, 0.9, True, 2000),
        (1.0, None, None, False, 600),
        (1.0, None, None, "adaptive", 1500),
    ],
)
def test_sampling_distribution_matches_plain_sampling(peaky_llama, temperature, top_k, top_p, use_drafter, n):
    params = SamplingParams(temperature, top_k, top_p)
    tables = _exact_tables(peaky_llama, params)
    marg, joint01 = _marginals(tables)
    counts = [np.zeros(V) for _ in range(NEW)]
    pair = np.zeros((V, V))
    accepted = 0
    steps = 0
    # "adaptive": one AdaptiveDrafter over all runs, so its trimming learns and varies the trees
    shim = SimpleNamespace(start=lambda prompt: shim.current.start(prompt))
    adaptive = AdaptiveDrafter(shim, explore_every=5)
    for i in range(n):
        drafter = _TableDrafter(tables, seed=i) if use_drafter else None
        if use_drafter == "adaptive":
            shim.current, drafter = drafter, adaptive
        res = generate(peaky_llama, PROMPT, drafter, NEW, temperature, top_k, top_p, seed=10_000 + i)
        assert len(res.tokens) == NEW
        for k, t in enumerate(res.tokens):
            counts[k][t] += 1
        pair[res.tokens[0], res.tokens[1]] += 1
        accepted += sum(res.accepted_per_step)
        steps += res.steps
    for k in range(NEW):
        assert _chi2_pvalue(counts[k], marg[k]) > P_MIN, f"position {k}"
    assert _chi2_pvalue(pair, joint01) > P_MIN
    if use_drafter:
        rate = accepted / steps
        assert 0.3 < rate < 1.9, rate  # drafts are often right and often wrong


def test_walk_emits_the_draws_of_its_positions():
    """Each emitted token is the draw of its own row at its own position's number."""
    rng = np.random.default_rng(1)
    params = SamplingParams(temperature=1.0)
    for trial in range(200):
        n = int(rng.integers(0, 12))
        parents = np.array([int(rng.integers(-1, i)) if i else -1 for i in range(n)], dtype=np.int64)
        tree = PyDraftTree(rng.integers(0, 4, size=n), parents)
        tokens = tree.tokens.astype(np.int64)
        logits = torch.randn(n + 1, 4, generator=torch.Generator().manual_seed(trial))
        draws, position = PositionDraws(trial), int(rng.integers(0, 50))
        verdict = verify_sampling(TreeLogits(logits=logits), tokens, parents, params, draws, position)
        rows = [0] + [i + 1 for i in verdict.path]
        probs = params.probabilities(logits)
        assert verdict.tokens == [_draw(probs[r], draws.uniform(position + k)) for k, r in enumerate(rows)]
        for k, node in enumerate(verdict.path):  # the path is the first child holding each draw
            parent = parents[node]
            siblings = [c for c in range(n) if parents[c] == parent and tokens[c] == verdict.tokens[k]]
            assert node == siblings[0]
        last = verdict.path[-1] if verdict.path else -1
        assert verdict.tokens[-1] not in [tokens[c] for c in range(n) if parents[c] == last]


class _RandomTreeDrafter:
    """Random trees over the whole (tiny) vocabulary: right at times, wrong at others."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def start(self, prompt_ids):
        return self

    def propose(self):
        n = int(self.rng.integers(0, 10))
        parents = [int(self.rng.integers(-1, i)) if i else -1 for i in range(n)]
        return PyDraftTree(self.rng.integers(0, V, size=n), parents)

    def accept(self, tokens):
        pass

    def finish(self):
        pass


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, 4, 0.9)])
def test_same_seed_same_samples_whatever_the_drafter(peaky_llama, temperature, top_k, top_p):
    tables = _exact_tables(peaky_llama, SamplingParams(temperature, top_k, top_p))
    accepted = 0
    for seed in range(12):
        plain = generate(peaky_llama, PROMPT, None, 20, temperature, top_k, top_p, seed=seed).tokens
        for drafter in (_RandomTreeDrafter(seed), _TableDrafter(tables, seed)):
            res = generate(peaky_llama, PROMPT, drafter, 20, temperature, top_k, top_p, seed=seed)
            assert res.tokens == plain, (seed, type(drafter).__name__)
            accepted += sum(res.accepted_per_step)
    assert accepted > 50  # the trees were really walked


def test_seed_reproducibility(peaky_llama):
    run = lambda seed: generate(peaky_llama, PROMPT, None, 12, temperature=1.0, seed=seed).tokens  # noqa: E731
    assert run(5) == run(5)
    assert len({tuple(run(s)) for s in range(6)}) > 1


def test_greedy_walk_lazy_and_batched_agree():
    """The CPU (lazy, row by row) and accelerator (batched) greedy walks pick the same path."""
    from hierdraft.drafting import ancestor_matrix
    from hierdraft.sampling import verify_greedy

    rng = np.random.default_rng(0)
    for trial in range(300):
        v = 4  # tiny vocabulary: many matches, duplicate siblings, ties between paths
        n = int(rng.integers(0, 20))
        parents = np.array([int(rng.integers(-1, i)) if i else -1 for i in range(n)], dtype=np.int64)
        tree = PyDraftTree(rng.integers(0, v, size=n), parents)
        tokens, depths = tree.tokens.astype(np.int64), tree.depths.astype(np.int64)
        anc = ancestor_matrix(parents, depths)
        raw = torch.randn(n + 1, v, generator=torch.Generator().manual_seed(trial))
        hidden, head = raw.clone(), lambda h: h * 1.0
        a = verify_greedy(TreeLogits(logits=raw), tokens, parents, depths, anc, batched=True)
        b = verify_greedy(TreeLogits(logits=raw), tokens, parents, depths, anc, batched=False)
        c = verify_greedy(TreeLogits(hidden=hidden, head=head), tokens, parents, depths, anc, batched=False)
        assert a == b == c
        target = raw.argmax(-1).tolist()  # the emitted tokens are the target's own argmaxes
        rows = [0] + [i + 1 for i in a.path]
        assert a.tokens == [target[r] for r in rows]
