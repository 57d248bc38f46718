"""Greedy exactness with the real Rust HierarchicalDrafter (context level, plus a model store).

Needs the built extension: without it the import fails and so does the file (never skipped).
"""

from __future__ import annotations

import pytest
from _generate_helpers import PROMPTS, greedy_reference

from hierdraft import _core as core
from hierdraft.decoding import generate

NEW = 40


@pytest.mark.parametrize("budget", [1, 4, 16, 64])
def test_hierarchical_drafter_greedy_exact(tiny_lm, budget):
    drafter = core.HierarchicalDrafter(order=("context",), budget=budget, max_depth=8)
    accepted = 0
    for prompt in PROMPTS:
        ref = greedy_reference(tiny_lm, prompt, NEW)
        res = generate(tiny_lm, prompt, drafter=drafter, max_new_tokens=NEW)
        assert res.tokens == ref, f"prompt {prompt}"
        assert max(res.tree_sizes) <= budget
        accepted += sum(res.accepted_per_step)
    assert accepted > 0  # random tiny models repeat themselves: context n-grams hit


def test_hierarchical_drafter_with_model_store(tiny_gemma3):
    outputs = [greedy_reference(tiny_gemma3, p, NEW) for p in PROMPTS[:5]]
    store = core.ModelStore.build(outputs)
    drafter = core.HierarchicalDrafter(model_store=store, order=("context", "model"), budget=16, max_depth=8)
    for prompt, ref in zip(PROMPTS[:5], outputs):
        res = generate(tiny_gemma3, prompt, drafter=drafter, max_new_tokens=NEW)
        assert res.tokens == ref
        assert sum(res.accepted_per_step) > 0


def test_hierarchical_drafter_eos_and_length(tiny_llama):
    drafter = core.HierarchicalDrafter(order=("context",), budget=16, max_depth=8)
    for prompt in PROMPTS[6:]:
        ref = greedy_reference(tiny_llama, prompt, NEW)
        eos = ref[6]
        want = greedy_reference(tiny_llama, prompt, NEW, eos_token_id=eos)
        assert generate(tiny_llama, prompt, drafter, NEW, eos_token_id=eos).tokens == want
        assert generate(tiny_llama, prompt, drafter, 5).tokens == ref[:5]
