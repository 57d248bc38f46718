"""KV cache pruning: after each step the cache holds exactly the accepted path, in order.

Checks the entry counts (full layers: every committed token; sliding layers: the last window - 1),
that memory never grows with rejected drafts, and the cached keys/values themselves against a
plain forward over the same tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _generate_helpers import PROMPTS, DeepWideDrafter, RandomDrafter, greedy_reference
from conftest import SLIDING_WINDOW, TINY_VOCAB

from hierdraft.drafting import PyDraftTree
from hierdraft.decoding import SpeculativeDecoder
from hierdraft.kv_cache import TreeKVCache
from hierdraft.model_layout import FULL, SLIDING, inspect_model

NEW = 40


def _expected_entries(decoder, committed):
    return [
        committed if t == FULL else min(committed, SLIDING_WINDOW - 1) for t in decoder.layout.layer_types
    ]


@pytest.mark.parametrize("drafter_kind", ["none", "random64", "deep_wide"])
def test_cache_holds_accepted_path_only(tiny_lm, drafter_kind):
    prompt = PROMPTS[5]
    ref = greedy_reference(tiny_lm, prompt, NEW)
    drafter = {
        "none": None,
        "random64": RandomDrafter(TINY_VOCAB, budget=64, seed=3),
        "deep_wide": DeepWideDrafter(ref, depth=20, fanout=4, seed=5),
    }[drafter_kind]
    dec = SpeculativeDecoder(tiny_lm, prompt, drafter=drafter, max_new_tokens=NEW)
    plain = SpeculativeDecoder(tiny_lm, prompt, drafter=None, max_new_tokens=NEW)
    plain_steps = plain.steps()
    plain_bytes = {}
    produced = 0
    for new in plain_steps:
        produced += len(new)
        plain_bytes[produced] = plain.cache.nbytes()
    for new in dec.steps():
        if len(dec.tokens) == NEW:
            break  # the final step does not update the cache
        committed = len(prompt) + len(dec.tokens) - 1  # all but the last (bonus) token
        assert dec.cache.length == committed
        assert dec.cache.entries() == _expected_entries(dec, committed)
        assert dec.cache.nbytes() == plain_bytes[len(dec.tokens)]  # rejected drafts leave no trace
    assert dec.tokens == ref


def test_cached_keys_match_plain_forward(tiny_gemma3):
    """The pruned cache equals the cache of a plain forward over prompt + accepted tokens."""
    model = tiny_gemma3
    prompt = PROMPTS[4]
    ref = greedy_reference(model, prompt, NEW)
    dec = SpeculativeDecoder(model, prompt, drafter=DeepWideDrafter(ref, depth=12, fanout=4, seed=11), max_new_tokens=NEW)
    steps = dec.steps()
    while len(dec.tokens) < 20:
        next(steps)
    assert len(dec.tokens) < NEW
    committed = prompt + dec.tokens[:-1]
    assert dec.cache.length == len(committed)
    layout = inspect_model(model)
    fresh = TreeKVCache(layout)
    with torch.inference_mode():
        model(
            input_ids=torch.tensor([committed]),
            position_ids=torch.arange(len(committed))[None],
            cache=fresh.cache,
            use_cache=True,
        )
    for got, want, layer_type in zip(dec.cache.layers, fresh.layers, layout.layer_types):
        n = got.held()
        torch.testing.assert_close(got.keys, want.keys[..., -n:, :], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got.values, want.values[..., -n:, :], rtol=1e-9, atol=1e-9)
        if layer_type == SLIDING:
            assert n == SLIDING_WINDOW - 1
    steps.close()


def test_commit_moves_accepted_nodes(tiny_llama):
    """commit() with a non-contiguous accepted path keeps chain + those nodes, in order."""
    layout = inspect_model(tiny_llama)
    cache = TreeKVCache(layout)
    layer = cache.layers[0]
    cache.length = 0
    # fake a forward of 3 chain tokens + 5 nodes: entry value = index
    for lay in cache.layers:
        lay.lazy_initialization(torch.zeros(1, 1, 0, 2), torch.zeros(1, 1, 0, 2))
        data = torch.arange(8, dtype=torch.float64).repeat_interleave(2).reshape(1, 1, 8, 2)
        lay.update(data.clone(), data.clone())
    cache.commit(8, np.array([0, 1, 2, 4, 7]))
    assert cache.length == 5
    assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 4, 7]
    assert layer.get_seq_length() == 5


def test_tree_sibling_isolation(tiny_llama):
    """A node's logits do not depend on its siblings (the tree mask), only on its ancestors."""
    from hierdraft.tree_forward import forward_tree
    from hierdraft.tree_mask import build_tree_inputs

    layout = inspect_model(tiny_llama)
    prompt = [11, 12, 13]
    tree = PyDraftTree.from_chains([[20, 21], [30, 31, 32], [20, 40]])
    cache = TreeKVCache(layout)
    with torch.inference_mode():
        inputs = build_tree_inputs(
            layout, prompt, tree.tokens, tree.parents, tree.depths, 0, cache.cached_lengths()
        )
        logits = forward_tree(tiny_llama, layout, cache.cache, inputs).all()
        for path_nodes in ([0, 1], [2, 3, 4], [0, 5]):
            seq = prompt + [int(tree.tokens[i]) for i in path_nodes]
            plain = tiny_llama(torch.tensor([seq])).logits[0]
            for k, node in enumerate(path_nodes):
                torch.testing.assert_close(logits[node + 1], plain[len(prompt) + k], rtol=1e-9, atol=1e-9)


def test_split_head_is_detected_and_exact(tiny_lm):
    """On CPU the LM head runs only on the rows the walk reaches; it must equal the model's head."""
    from hierdraft.tree_forward import forward_tree
    from hierdraft.tree_mask import build_tree_inputs
    from hierdraft.tree_probe import check_tree_attention

    layout = check_tree_attention(tiny_lm)
    assert layout.split_head  # Llama and Gemma 3 (final logit soft-capping included) split cleanly
    tree = PyDraftTree.from_chains([[20, 21], [30, 31, 32]])
    outs = []
    for split in (True, False):
        lay = dataclasses.replace(layout, split_head=split)
        cache = TreeKVCache(lay)
        with torch.inference_mode():
            inputs = build_tree_inputs(lay, [7, 8, 9], tree.tokens, tree.parents, tree.depths, 0, cache.cached_lengths())
            out = forward_tree(tiny_lm, lay, cache.cache, inputs)
            outs.append((out.all(), out.rows([3, 0])))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(outs[0][1], outs[1][0][[3, 0]], rtol=1e-9, atol=1e-9)
