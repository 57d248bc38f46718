"""Greedy exactness: hierdraft.generate must equal model.generate(do_sample=False) token for token.

Tiny random Llama and Gemma 3 (mixed sliding-window/full layers, window 8) in float64, so that the
tree-shaped forward and the one-token-at-a-time reference cannot differ by float round-off; many
prompts (random, repetitive, longer than the window), outputs of 40 tokens, and adversarial drafters.
"""

from __future__ import annotations

import pytest
import torch
from _generate_helpers import (
    PROMPTS,
    BudgetDrafter,
    DeepWideDrafter,
    NgramDrafter,
    OracleDrafter,
    RandomDrafter,
    greedy_reference,
)
from conftest import TINY_VOCAB, tiny_model

from hierdraft.decoding import generate

NEW = 40


def _check(model, prompt, drafter, max_new_tokens=NEW):
    ref = greedy_reference(model, prompt, max_new_tokens)
    res = generate(model, prompt, drafter=drafter, max_new_tokens=max_new_tokens)
    assert res.tokens == ref, f"prompt {prompt}: {res.tokens} != {ref}"
    return res


def test_plain_decoding_matches_generate(tiny_lm):
    for prompt in PROMPTS:
        res = _check(tiny_lm, prompt, None)
        assert res.steps == len(res.tokens)
        assert res.mean_accepted_tokens == 1.0
        assert sum(res.accepted_per_step) == 0


@pytest.mark.parametrize("kind", ["random", "oracle", "oracle_noisy", "deep_wide", "ngram"])
def test_drafters_match_generate(tiny_lm, kind):
    accepted = 0
    for i, prompt in enumerate(PROMPTS):
        ref = greedy_reference(tiny_lm, prompt, NEW)
        drafter = {
            "random": lambda: RandomDrafter(TINY_VOCAB, budget=24, seed=i),
            "oracle": lambda: OracleDrafter(ref, depth=6),
            "oracle_noisy": lambda: OracleDrafter(ref, depth=10, noise=5, seed=i),
            "deep_wide": lambda: DeepWideDrafter(ref, depth=24, fanout=4, seed=i),
            "ngram": lambda: NgramDrafter(),
        }[kind]()
        res = _check(tiny_lm, prompt, drafter)
        accepted += sum(res.accepted_per_step)
        assert res.steps == len(res.accepted_per_step) == len(res.draft_times) == len(res.verify_times)
        assert sum(res.accepted_per_step) + res.steps >= len(res.tokens)
        session = drafter.sessions[0]
        assert session.finished
        assert sum(session.accepted, []) == res.tokens
    if kind == "oracle":
        assert accepted > 0.7 * NEW * len(PROMPTS)  # the oracle's drafts are accepted
    if kind in ("oracle_noisy", "deep_wide", "ngram"):
        assert accepted > 0


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 8, 16, 32, 64])
def test_budgets(tiny_lm, budget):
    for i, prompt in enumerate(PROMPTS[::3]):
        ref = greedy_reference(tiny_lm, prompt, NEW)
        res = _check(tiny_lm, prompt, BudgetDrafter(ref, budget=budget, seed=budget * 31 + i))
        assert max(res.tree_sizes) <= budget


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_eager_attention(kind):
    model = tiny_model(kind, attn="eager")
    for i, prompt in enumerate(PROMPTS[::2]):
        ref = greedy_reference(model, prompt, NEW)
        _check(model, prompt, DeepWideDrafter(ref, depth=12, fanout=3, seed=i))


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_float32(kind):
    """float32 as users run it; the oracle's chains are accepted in one forward of many tokens."""
    model = tiny_model(kind, dtype=torch.float32)
    for prompt in PROMPTS[::2]:
        ref = greedy_reference(model, prompt, NEW)
        _check(model, prompt, OracleDrafter(ref, depth=8, noise=2))


def test_input_formats(tiny_llama):
    prompt = PROMPTS[3]
    ref = greedy_reference(tiny_llama, prompt, 10)
    import numpy as np

    for ids in (prompt, np.array(prompt), torch.tensor(prompt), torch.tensor([prompt]), np.array([prompt], dtype=np.int32)):
        assert generate(tiny_llama, ids, max_new_tokens=10).tokens == ref
