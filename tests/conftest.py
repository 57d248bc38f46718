"""Shared pytest fixtures: tiny randomly initialised causal LMs (no downloads) for the generate tests.

If the Rust extension is not built yet, `import hierdraft` fails in its `__init__`; the pure-Python
modules (hierdraft.decoding, hierdraft.drafting, ...) are then exposed through a bare package so
their tests still run.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

_PKG = Path(__file__).resolve().parent.parent / "python" / "hierdraft"
try:
    import hierdraft  # noqa: F401
except ImportError:
    _stub = types.ModuleType("hierdraft")
    _stub.__path__ = [str(_PKG)]
    sys.modules["hierdraft"] = _stub

# The test machine is small and shared: one intra-op thread is faster for tiny models.
torch.set_num_threads(1)

TINY_VOCAB = 256
TINY_EOS = 2
SLIDING_WINDOW = 8
# What every tiny model shares: the token ids, the context, the (large) initial weights.
_TINY_COMMON = dict(
    vocab_size=TINY_VOCAB,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=TINY_EOS,
    pad_token_id=0,
    initializer_range=0.1,
)


def _tiny(config_class, model_class, dtype: torch.dtype, seed: int, kwargs: dict, overrides: dict):
    torch.manual_seed(seed)
    return model_class(config_class(**{**_TINY_COMMON, **kwargs, **overrides})).eval().to(dtype)


def make_tiny_llama(attn: str = "sdpa", dtype: torch.dtype = torch.float64, seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation=attn,
    )
    return _tiny(LlamaConfig, LlamaForCausalLM, dtype, seed, kwargs, overrides)


def make_tiny_qwen(version: int = 3, dtype: torch.dtype = torch.float32, seed: int = 0, **overrides):
    """Qwen 2 (biased q/k/v projections) or Qwen 3 (per-head query/key norms), in the shapes a
    GGUF file of them can say (transformers reads no head size from a Qwen GGUF: Qwen 3 keeps
    its default of 128)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_class, model_class = {2: (Qwen2Config, Qwen2ForCausalLM), 3: (Qwen3Config, Qwen3ForCausalLM)}[version]
    kwargs = dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=10_000.0,
        tie_word_embeddings=False,
    )
    if version == 3:
        kwargs["head_dim"] = 128
    return _tiny(config_class, model_class, dtype, seed, kwargs, overrides)


def make_tiny_gemma3(attn: str = "sdpa", dtype: torch.dtype = torch.float64, seed: int = 0, **overrides):
    """Gemma 3 with sliding-window (window 8) and full layers mixed; prompts + outputs exceed the window."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    kwargs = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=SLIDING_WINDOW,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        final_logit_softcapping=5.0,  # exercised by the split LM head
        attn_implementation=attn,
    )
    return _tiny(Gemma3TextConfig, Gemma3ForCausalLM, dtype, seed, kwargs, overrides)


_MODELS: dict[tuple, torch.nn.Module] = {}


def tiny_model(kind: str, attn: str = "sdpa", dtype: torch.dtype = torch.float64):
    """Cached tiny model: kind is "llama" or "gemma3"."""
    key = (kind, attn, dtype)
    if key not in _MODELS:
        maker = {"llama": make_tiny_llama, "gemma3": make_tiny_gemma3}[kind]
        _MODELS[key] = maker(attn=attn, dtype=dtype)
    return _MODELS[key]


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_gemma3():
    return tiny_model("gemma3")


@pytest.fixture(scope="session", params=["llama", "gemma3"])
def tiny_lm(request):
    """Each tiny model in turn (float64, SDPA)."""
    return tiny_model(request.param)
