"""The quantized path: models loaded from GGUF files compute on the file's own blocks.

Tiny random Llama (Q8_0, Q4_0), Gemma 3 (Q4_K, Q6_K; sliding-window and full layers), Qwen 2 (Q8_0;
biased q/k/v projections) and Qwen 3 (Q5_0; per-head query/key norms) models are written as GGUF
files (tests/gguf_tiny.py) and loaded with `hierdraft.gguf_model.load_gguf_model`:
- loading keeps every linear layer and the embedding in blocks, shares the tied head, and gives the
  same numbers as the float32 model holding the dequantized weights (bit for bit when hierdraft's
  float32 kernel runs that model, as hierdraft's forwards do);
- greedy output with any drafter equals plain decoding and `model.generate`, exactly, and so does
  sampled output with a seed equal plain sampling's with that seed;
- bad files and unsupported tensors are refused with clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _generate_helpers import PROMPTS, DeepWideDrafter, NgramDrafter, OracleDrafter, RandomDrafter, greedy_reference
from gguf_tiny import tiny_gguf_models, write_tiny_gguf

from hierdraft import cpu_matmul
from hierdraft.decoding import generate
from hierdraft.gguf_model import load_gguf_model
from hierdraft.quant_modules import QuantEmbedding, QuantLinear, dequantized_model, is_quantized

NEW = 24


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    return tiny_gguf_models(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(
    scope="module", params=["llama-q8_0", "llama-q4_0", "gemma3-q4_k", "gemma3-q6_k", "qwen2-q8_0", "qwen3-q5_0"]
)
def quantized_file(request, gguf_files):
    return gguf_files[request.param]


@pytest.fixture(scope="module")
def quantized_lm(quantized_file):
    return load_gguf_model(quantized_file)


@pytest.fixture(scope="module")
def float_reference(quantized_file):
    """The same file loaded again, with every quantized layer turned into a float32 one
    (transformers' own model over the dequantized weights)."""
    return dequantized_model(load_gguf_model(quantized_file))


@pytest.fixture(scope="module")
def float_twin(quantized_file):
    """The dequantized float model that keeps hierdraft's fused norms: only the linear layers differ."""
    return dequantized_model(load_gguf_model(quantized_file), keep_fused_norms=True)


def test_loading_keeps_the_blocks(quantized_lm):
    from hierdraft.fused_norm import FusedRMSNorm, NORM_SHIFT

    model = quantized_lm
    assert not [m for m in model.modules() if type(m).__name__ in NORM_SHIFT]  # every norm is fused
    assert any(isinstance(m, FusedRMSNorm) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [], "every linear layer computes on GGUF blocks"
    quant = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert quant and is_quantized(model)
    assert isinstance(model.get_input_embeddings(), QuantEmbedding)
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    assert isinstance(head, QuantLinear)
    if model.config.tie_word_embeddings:
        assert head.qweight is emb.qweight  # one table, not two
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    # what stays a tensor is small: norms (and biases)
    assert sum(p.numel() for p in model.parameters()) < 0.05 * sum(m.qweight.shape[0] * m.qweight.shape[1] for m in quant)


def _logits(model, ids):
    with torch.inference_mode(), cpu_matmul.kernel_linears(model):
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.skipif(not cpu_matmul.FAST_KERNEL, reason="bit-exactness needs hierdraft's float32 kernel on the float model")
def test_quantized_model_equals_its_dequantized_float_model_bit_for_bit(quantized_lm, float_twin):
    assert not is_quantized(float_twin)
    for prompt in PROMPTS[:6]:
        assert torch.equal(_logits(quantized_lm, prompt), _logits(float_twin, prompt))


def test_dequantized_model_with_torch_kernels_is_close(quantized_lm, float_reference):
    reference = float_reference
    ids = torch.tensor([PROMPTS[5]])
    with torch.inference_mode():
        got, want = quantized_lm(ids).logits, reference(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_plain_decoding_matches_generate(quantized_lm):
    for prompt in PROMPTS:
        ref = greedy_reference(quantized_lm, prompt, NEW)
        res = generate(quantized_lm, prompt, max_new_tokens=NEW)
        assert res.tokens == ref, prompt


@pytest.mark.parametrize("kind", ["random", "oracle_noisy", "deep_wide", "ngram"])
def test_drafters_match_plain_decoding(quantized_lm, kind):
    vocab = quantized_lm.config.vocab_size
    accepted = 0
    for i, prompt in enumerate(PROMPTS):
        plain = generate(quantized_lm, prompt, max_new_tokens=NEW).tokens
        drafter = {
            "random": lambda: RandomDrafter(vocab, budget=24, seed=i),
            "oracle_noisy": lambda: OracleDrafter(plain, depth=10, noise=5, seed=i),
            "deep_wide": lambda: DeepWideDrafter(plain, depth=24, fanout=4, seed=i),
            "ngram": lambda: NgramDrafter(),
        }[kind]()
        res = generate(quantized_lm, prompt, drafter=drafter, max_new_tokens=NEW)
        assert res.tokens == plain, f"prompt {prompt}"
        accepted += sum(res.accepted_per_step)
    if kind in ("oracle_noisy", "deep_wide"):
        assert accepted > 0  # the trees were really verified


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.8, 20, 0.9)])
def test_sampled_drafting_equals_plain_sampling_with_the_same_seed(quantized_lm, temperature, top_k, top_p):
    vocab = quantized_lm.config.vocab_size
    accepted = 0
    for i, prompt in enumerate(PROMPTS):
        plain = generate(quantized_lm, prompt, max_new_tokens=NEW, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=i).tokens
        for drafter in (OracleDrafter(plain, depth=10, noise=5, seed=i), RandomDrafter(vocab, budget=24, seed=i)):
            res = generate(quantized_lm, prompt, drafter=drafter, max_new_tokens=NEW, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=i)
            assert res.tokens == plain, f"prompt {prompt}"
            accepted += sum(res.accepted_per_step)
    assert accepted > 0  # the trees were really walked


def test_llama_rows_are_reordered_back(gguf_files, tmp_path):
    """llama.cpp stores q/k rows interleaved per head; loading must undo it (exactly, by moving rows)."""
    from conftest import make_tiny_llama

    source = make_tiny_llama(dtype=torch.float32)
    model = load_gguf_model(write_tiny_gguf(source, tmp_path / "f32.gguf", "F32"))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        got = getattr(model.model.layers[0].self_attn, name).qweight.dequantize()
        want = getattr(source.model.layers[0].self_attn, name).weight.detach().numpy()
        assert np.array_equal(got, want), name
    ids = torch.tensor([PROMPTS[3]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, rtol=1e-5, atol=1e-5)


def test_bad_files_are_refused(tmp_path, gguf_files):
    from hierdraft._core import GgufFormatError

    good = gguf_files["llama-q8_0"].read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good[: len(good) - 100])
    with pytest.raises(GgufFormatError, match="past the end|truncated"):
        load_gguf_model(truncated)
    wrong = tmp_path / "magic.gguf"
    wrong.write_bytes(b"GGUX" + good[4:])
    with pytest.raises(GgufFormatError, match="magic"):
        load_gguf_model(wrong)
    with pytest.raises(FileNotFoundError):
        load_gguf_model(tmp_path / "missing.gguf")


def test_numeric_modes_are_named_and_checked(quantized_file, monkeypatch):
    from hierdraft import models
    from hierdraft.numerics import resolve_numerics
    from hierdraft.quant_modules import model_numerics, set_numerics, weight_formats

    monkeypatch.delenv("HIERDRAFT_NUMERICS", raising=False)
    assert resolve_numerics(None) == "fp32" and resolve_numerics("INT8") == "int8"
    monkeypatch.setenv("HIERDRAFT_NUMERICS", "int8")
    assert resolve_numerics(None) == "int8"
    with pytest.raises(ValueError, match="unknown numeric mode"):
        resolve_numerics("fp8")
    model = load_gguf_model(quantized_file)
    assert model_numerics(model) == "fp32"
    formats = weight_formats(model)
    assert sum(formats.values()) == sum(1 for m in model.modules() if isinstance(m, (QuantLinear, QuantEmbedding)))
    with pytest.raises(ValueError, match="needs a GGUF model"):
        models.load_model(quantized_file, quantized=False, numerics="int8")
    float_model = dequantized_model(load_gguf_model(quantized_file))
    assert model_numerics(float_model) is None and weight_formats(float_model) == {}
    assert set_numerics(model, "fp32") is model


@pytest.mark.parametrize("kind", ["deep_wide", "random"])
def test_int8_mode_stays_exact_within_the_mode(quantized_file, kind):
    """In the int8 mode drafting and plain decoding agree token for token (batch invariance);
    the mode's logits stay close to the fp32 mode's."""
    from hierdraft.quant_modules import set_numerics

    model = set_numerics(load_gguf_model(quantized_file), "int8")
    fp32 = load_gguf_model(quantized_file)
    vocab = model.config.vocab_size
    for i, prompt in enumerate(PROMPTS[::2]):
        plain = generate(model, prompt, max_new_tokens=NEW).tokens
        drafter = DeepWideDrafter(plain, depth=16, fanout=3, seed=i) if kind == "deep_wide" else RandomDrafter(vocab, budget=16, seed=i)
        assert generate(model, prompt, drafter=drafter, max_new_tokens=NEW).tokens == plain, prompt
    ids = torch.tensor([PROMPTS[5]])
    with torch.inference_mode():
        a, b = model(ids).logits, fp32(ids).logits
    assert not torch.equal(a, b)  # really another mode
    assert (a - b).abs().max() <= 0.05 * b.abs().max()
