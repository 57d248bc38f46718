"""hierdraft's attention kernel (hierdraft.cpu_attention): it computes what PyTorch's attention
computes, a query row's result is bit for bit the same whatever else is in its call, and it is
switched on only within hierdraft's forwards."""

from __future__ import annotations

import pytest
import torch

import hierdraft
from hierdraft import _core
from conftest import make_tiny_llama
from hierdraft.cpu_attention import ATTENTION_NAME, attends_with_kernel, kernel_attention, kernel_attention_forward


class _Module:
    num_key_value_groups = 2


def _case(queries: int, keys: int, capacity: int, seed: int = 0, heads: int = 4, kv_heads: int = 2, dim: int = 40):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, queries, dim, generator=g)
    kbuf = torch.randn(1, kv_heads, capacity, dim, generator=g)
    vbuf = torch.randn(1, kv_heads, capacity, dim, generator=g)
    return q, kbuf[:, :, :keys], vbuf[:, :, :keys]  # views of larger buffers, like the KV cache's


def _reference(q, k, v, visible, scaling):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q.double() @ k.double().transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~visible, float("-inf"))
    return (scores.softmax(-1) @ v.double()).transpose(1, 2).float()


def test_matches_a_float64_reference_with_a_mask_and_causally():
    q, k, v = _case(queries=5, keys=23, capacity=64)
    mask = torch.rand(5, 23, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[:, 0] = True
    got, weights = kernel_attention_forward(_Module(), q, k, v, mask[None, None], scaling=0.2)
    assert weights is None
    torch.testing.assert_close(got, _reference(q, k, v, mask, 0.2), atol=1e-5, rtol=1e-5)
    causal = torch.ones(5, 23, dtype=torch.bool).tril(23 - 5)
    got, _ = kernel_attention_forward(_Module(), q, k, v, None, scaling=0.2)
    torch.testing.assert_close(got, _reference(q, k, v, causal, 0.2), atol=1e-5, rtol=1e-5)
    window = causal & ~torch.ones(5, 23, dtype=torch.bool).tril(23 - 5 - 7)
    got, _ = kernel_attention_forward(_Module(), q, k, v, None, scaling=0.2, sliding_window=7)
    torch.testing.assert_close(got, _reference(q, k, v, window, 0.2), atol=1e-5, rtol=1e-5)


def test_an_additive_float_mask_means_the_same_as_a_boolean_one():
    q, k, v = _case(queries=3, keys=9, capacity=9)
    mask = torch.rand(3, 9, generator=torch.Generator().manual_seed(2)) > 0.5
    mask[:, 0] = True
    additive = torch.zeros(3, 9).masked_fill(~mask, torch.finfo(torch.float32).min)
    a, _ = kernel_attention_forward(_Module(), q, k, v, mask[None, None], scaling=0.3)
    b, _ = kernel_attention_forward(_Module(), q, k, v, additive[None, None], scaling=0.3)
    assert torch.equal(a, b)


def test_a_tree_row_equals_the_same_row_scored_alone_bit_for_bit():
    # A "tree step": 6 queries over 30 cached keys + their own 6; query 3 sees the cache, query 0
    # and itself. Scored alone (plain step: causal, one query), over a cache laid out elsewhere,
    # it must give the same bits.
    q, k, v = _case(queries=6, keys=36, capacity=80, seed=3)
    mask = torch.zeros(6, 36, dtype=torch.bool)
    mask[:, :30] = True
    for i in range(6):
        mask[i, 30] = True
        mask[i, 30 + i] = True
    tree, _ = kernel_attention_forward(_Module(), q, k, v, mask[None, None], scaling=0.25)
    keys = [*range(31), 33]
    k_alone = torch.zeros(1, 2, 50, 40)
    v_alone = torch.zeros(1, 2, 50, 40)
    k_alone[:, :, : len(keys)] = k[:, :, keys]
    v_alone[:, :, : len(keys)] = v[:, :, keys]
    alone, _ = kernel_attention_forward(
        _Module(), q[:, :, 3:4], k_alone[:, :, : len(keys)], v_alone[:, :, : len(keys)], None, scaling=0.25
    )
    assert torch.equal(alone[0, 0], tree[0, 3])


def test_bad_inputs_are_clear_errors():
    q, k, v = _case(queries=2, keys=4, capacity=4)
    with pytest.raises(ValueError, match="float32"):
        kernel_attention_forward(_Module(), q.double(), k, v, None, scaling=1.0)
    with pytest.raises(ValueError, match="one sequence"):
        kernel_attention_forward(_Module(), q, k, v, torch.ones(2, 1, 2, 4, dtype=torch.bool), scaling=1.0)
    out = torch.empty(2, 4, 40)
    with pytest.raises(ValueError, match="kv_heads"):
        _core.attention(q[0].numpy(), k[0].numpy(), v[0, :, :3].contiguous().numpy(), out.numpy(), 1.0)
    with pytest.raises(ValueError, match="out has shape"):
        _core.attention(q[0].numpy(), k[0].numpy(), v[0].numpy(), out[:1].numpy(), 1.0)
    with pytest.raises(ValueError, match="causal"):
        _core.attention(q[0].numpy(), k[0, :, :1].numpy(), v[0, :, :1].numpy(), out.numpy(), 1.0)


def test_the_kernel_attends_only_within_hierdrafts_forwards():
    model = make_tiny_llama(dtype=torch.float32)
    before = model.config._attn_implementation
    assert attends_with_kernel(model)
    with kernel_attention(model):
        inside = model.config._attn_implementation
        with kernel_attention(model):  # nested (or another thread's) block
            pass
        still_inside = model.config._attn_implementation
    assert inside == still_inside == ATTENTION_NAME
    assert model.config._attn_implementation == before
    calls = []
    original = hierdraft.cpu_attention._attention

    def counting(*args):
        calls.append(args[0].shape)
        return original(*args)

    hierdraft.cpu_attention._attention = counting
    try:
        result = hierdraft.generate(model, torch.tensor([[1, 5, 9, 4]]), max_new_tokens=4)
    finally:
        hierdraft.cpu_attention._attention = original
    assert len(result.tokens) == 4
    assert len(calls) >= 4 * model.config.num_hidden_layers  # every layer of every step
    assert model.config._attn_implementation == before
