"""Direct decoder layers (`hierdraft.direct_layers`) compute what transformers' modules compute, bit for bit.

Tiny random Llama, Gemma 3, Qwen 2 and Qwen 3 GGUF models (tests/gguf_tiny.py; Gemma 3 with
sliding-window and full layers, Gemma 3 and Qwen 3 with per-head query/key norms, Qwen 2 with biased
q/k/v projections) run a prompt and then tree steps through `forward_tree`
twice, with the direct layers and with the modules, over caches built the same way: every logit
and every cached key and value must be equal, in both numeric modes. Layers the plans cannot run
exactly keep their modules.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from gguf_tiny import tiny_gguf_models

from hierdraft import direct_layers, tree_forward
from hierdraft.gguf_model import load_gguf_model
from hierdraft.kv_cache import TreeKVCache
from hierdraft.quant_modules import dequantized_model, set_numerics
from hierdraft.tree_mask import build_tree_inputs
from hierdraft.tree_probe import check_tree_attention

pytestmark = pytest.mark.skipif(direct_layers._rotary is None, reason="needs hierdraft._core")


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    return tiny_gguf_models(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(
    scope="module", params=["llama-q8_0", "llama-q4_0", "gemma3-q4_k", "gemma3-q6_k", "qwen2-q8_0", "qwen3-q5_0"]
)
def quantized_lm(request, gguf_files):
    return load_gguf_model(gguf_files[request.param])


def _steps(model, use_direct: bool, monkeypatch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Logits of a prompt, then of four tree steps (each keeping one accepted path), and the
    cache's keys and values at the end. The last step outgrows the cache's first buffers (64
    entries), so the layers move to new ones mid-run."""
    if not use_direct:
        monkeypatch.setattr(tree_forward, "direct_layers", lambda m: contextlib.nullcontext())
    else:
        monkeypatch.setattr(tree_forward, "direct_layers", direct_layers.direct_layers)
    layout = check_tree_attention(model)
    rng = np.random.default_rng(7)
    vocab = model.config.vocab_size
    cache = TreeKVCache(layout)
    prompt = rng.integers(1, vocab, size=21).tolist()
    out: list[torch.Tensor] = []
    empty = np.zeros(0, np.int64)
    with torch.inference_mode():
        inputs = build_tree_inputs(layout, prompt, empty, empty, empty, 0, cache.cached_lengths())
        out.append(tree_forward.forward_tree(model, layout, cache.cache, inputs).all())
        cache.commit(len(prompt), np.arange(len(prompt)))
        for n in (1, 7, 12, 70):  # 70: the MLP activation runs in two halves (direct_layers)
            parents = np.array([i // 2 - 1 for i in range(n)], dtype=np.int64)
            depths = np.zeros(n, np.int64)
            for i, p in enumerate(parents):
                depths[i] = 1 if p < 0 else depths[p] + 1
            tokens = rng.integers(1, vocab, size=n)
            chain = [int(rng.integers(1, vocab))]
            tree = build_tree_inputs(layout, chain, tokens, parents, depths, cache.length, cache.cached_lengths())
            out.append(tree_forward.forward_tree(model, layout, cache.cache, tree).all())
            keep = np.array([0, 1, 3], dtype=np.int64)[: 1 + min(n, 2)]  # the chain token and a path
            cache.commit(1 + n, keep)
    kv = [t.clone() for layer in cache.cache.layers for t in (layer.keys, layer.values)]
    return out, kv


@pytest.mark.parametrize("numerics", ["fp32", "int8"])
def test_direct_layers_equal_the_modules_bit_for_bit(quantized_lm, numerics, monkeypatch):
    model = quantized_lm
    plans = direct_layers.layer_plans(model)
    assert len(plans) == model.config.num_hidden_layers, "every layer of these models runs directly"
    set_numerics(model, numerics)
    try:
        got_logits, got_kv = _steps(model, True, monkeypatch)
        want_logits, want_kv = _steps(model, False, monkeypatch)
    finally:
        set_numerics(model, "fp32")
    assert len(got_logits) == len(want_logits) == 5
    for got, want in zip(got_logits, want_logits):
        assert got.shape == want.shape
        assert torch.equal(got, want)
    for got, want in zip(got_kv, want_kv):
        assert torch.equal(got, want)


def test_direct_layers_run_inside_forward_tree_only(quantized_lm):
    model = quantized_lm
    layers = model.base_model.layers
    with direct_layers.direct_layers(model):
        assert all("forward" in vars(layer) for layer in layers)
    assert not any("forward" in vars(layer) for layer in layers)


def test_layers_the_plans_cannot_run_keep_their_modules(gguf_files):
    # float32 linear layers (the dequantized twin): not QuantLinear, so no plan
    twin = dequantized_model(load_gguf_model(gguf_files["gemma3-q4_k"]), keep_fused_norms=True)
    assert direct_layers.layer_plans(twin) == []
    # unfused norms (transformers' own norm modules): no plan either
    plain = dequantized_model(load_gguf_model(gguf_files["llama-q8_0"]))
    assert direct_layers.layer_plans(plain) == []
    with direct_layers.direct_layers(plain):
        assert not any("forward" in vars(layer) for layer in plain.base_model.layers)


def test_a_batch_of_sequences_is_refused(quantized_lm):
    _, plan = direct_layers.layer_plans(quantized_lm)[0]
    width = quantized_lm.config.hidden_size
    with pytest.raises(ValueError, match="one sequence"):
        plan.forward(torch.zeros(2, 3, width))
