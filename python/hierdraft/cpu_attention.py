"""hierdraft's CPU attention kernel in transformers models, for batch-invariant verification.

PyTorch's attention (SDPA or eager) blocks its reductions by the call's shapes: the number of
query rows, the key length, the vector tail. A query row scored in a tree step (many rows, a
custom mask) can then differ in its last bits from the same row scored in a plain step (one row,
the model's causal mask), and a rare argmax near a tie flips: drafting would change the output.
`hierdraft._core.attention` computes every (head, query row) in one fixed order over that row's
visible keys alone, so a row's numbers never depend on its batch, on keys it cannot see or on
where the cache keeps them (see the kernel's docs).

`kernel_attention(model)` makes the model attend with it for the duration of hierdraft's
forwards, for models that compute their linear layers with hierdraft's kernels too (quantized
GGUF models, float32 CPU models; see `cpu_matmul`): it registers the attention implementation
"hierdraft_cpu" with transformers (SDPA's mask format: boolean, or none for a plain causal
chain) and switches the model's config to it within the block.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .cpu_matmul import uses_kernels

try:
    from ._core import attention as _attention
except ImportError:  # extension not built (pure-Python tests): PyTorch's own attention
    _attention = None

__all__ = ["ATTENTION_NAME", "attend", "kernel_attention", "kernel_attention_forward", "visible_keys"]

ATTENTION_NAME = "hierdraft_cpu"
_REGISTERED = False
_LOCK = threading.Lock()
# id(config) -> [blocks inside, the implementation to restore], for the configs switched now.
_ENTERED: dict[int, list[Any]] = {}


def _visible(mask: torch.Tensor, queries: int, keys: int) -> torch.Tensor:
    """The (queries, keys) boolean visibility of a transformers attention mask (boolean, or
    additive float: 0 visible, the dtype's minimum hidden)."""
    if mask.dim() != 4 or mask.shape[0] != 1:
        raise ValueError(f"hierdraft's attention takes one sequence; got a mask of shape {tuple(mask.shape)}")
    m = mask[0, 0, -queries:, :keys]
    if m.dtype != torch.bool:
        m = m > torch.finfo(m.dtype).min / 2
    return m.contiguous()


def kernel_attention_forward(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function (query (1, heads, q, dim), key/value (1, kv_heads, keys,
    dim)) computed by `hierdraft._core.attention`; returns (1, q, heads, dim) and no weights."""
    if _attention is None:
        raise RuntimeError("hierdraft._core is not built: its attention kernel is unavailable")
    if query.shape[0] != 1 or query.dtype != torch.float32 or query.device.type != "cpu":
        raise ValueError("hierdraft's attention computes one float32 sequence on CPU")
    if dropout:
        raise ValueError("hierdraft's attention is for inference (no dropout)")
    heads, queries, dim = query.shape[1:]
    keys = key.shape[-2]
    if scaling is None:
        scaling = dim**-0.5
    q = query[0].detach().contiguous()
    k, v = key[0].detach(), value[0].detach()
    if k.stride(-1) != 1:
        k = k.contiguous()
    if v.stride(-1) != 1:
        v = v.contiguous()
    out = torch.empty(queries, heads, dim, dtype=torch.float32)
    visible = None if attention_mask is None else visible_keys(attention_mask, queries, keys)
    attend(q.numpy(), k.numpy(), v.numpy(), out.numpy(), float(scaling), visible, sliding_window, softcap)
    return out.unsqueeze(0), None


def visible_keys(mask: torch.Tensor, queries: int, keys: int) -> np.ndarray:
    """The (queries, keys) boolean array of which keys each query row sees, from a transformers
    attention mask (see `_visible`)."""
    return _visible(mask, queries, keys).numpy()


def attend(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    out: np.ndarray,
    scaling: float,
    visible: np.ndarray | None,
    sliding_window: int | None,
    softcap: float | None,
) -> None:
    """The attention kernel on arrays: q (heads, queries, dim), k and v (kv_heads, keys, dim),
    into out (queries, heads, dim). Without a mask the queries are the sequence's last positions,
    causal within `sliding_window`; a mask says everything itself."""
    if _attention is None:
        raise RuntimeError("hierdraft._core is not built: its attention kernel is unavailable")
    window = sliding_window if visible is None else None
    _attention(q, k, v, out, scaling, visible, window, softcap)


def _register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, kernel_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _REGISTERED = True


def attends_with_kernel(model: Any) -> bool:
    """Whether hierdraft's forwards of `model` use the attention kernel."""
    return _attention is not None and uses_kernels(model)


@contextlib.contextmanager
def kernel_attention(model: Any) -> Iterator[None]:
    """Within the block, the model attends with hierdraft's kernel (if it computes with the kernels).

    Blocks may nest and may run in several threads at once over one model: the config switches
    at the first entry and back at the last exit."""
    if not attends_with_kernel(model):
        yield
        return
    _register()
    config = model.config
    with _LOCK:
        entered = _ENTERED.get(id(config))
        if entered is None:
            _ENTERED[id(config)] = [1, config._attn_implementation]
            config._attn_implementation = ATTENTION_NAME
        else:
            entered[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            entered = _ENTERED[id(config)]
            entered[0] -= 1
            if entered[0] == 0:
                config._attn_implementation = entered[1]
                del _ENTERED[id(config)]
