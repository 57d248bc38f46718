"""What a tree-verification forward needs to know about a model, checked statically.

`inspect_model` reads a transformers causal LM's configuration and forward signature and
describes how to feed it one verification forward (`AttentionLayout`: attention implementation,
layer types and sliding window, mask format, cache argument, dtype, device). Anything it cannot
verify exactly raises `UnsupportedModelError` instead of producing wrong output. The numerical
probe that the mask is really honoured lives in `tree_probe`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "FULL",
    "SLIDING",
    "SUPPORTED_ATTENTION",
    "UnsupportedModelError",
    "AttentionLayout",
    "inspect_model",
    "text_config",
]

FULL = "full_attention"
SLIDING = "sliding_attention"
SUPPORTED_ATTENTION = ("sdpa", "eager")


class UnsupportedModelError(RuntimeError):
    """The model cannot run a tree-verification forward (custom 4-D mask + position ids + pruned cache)."""


@dataclass(frozen=True)
class AttentionLayout:
    """What a verification forward needs to know about a model."""

    attn_implementation: str
    layer_types: tuple[str, ...]  # FULL or SLIDING, one per decoder layer
    sliding_window: int | None  # the window of the SLIDING layers
    mask_by_layer_type: bool  # pass {"full_attention": m, "sliding_attention": m}
    cache_kwarg: str  # "cache" (transformers >= 5) or "past_key_values"
    has_logits_to_keep: bool
    dtype: torch.dtype
    device: torch.device
    vocab_size: int | None
    split_head: bool = False  # run the body and the LM head separately (set by check_tree_attention)

    @property
    def present_types(self) -> tuple[str, ...]:
        return tuple(t for t in (FULL, SLIDING) if t in self.layer_types)


def text_config(model: Any) -> Any:
    """The decoder's configuration (the text part of a multimodal config)."""
    config = model.config
    getter = getattr(config, "get_text_config", None)
    if getter is not None:
        try:
            return getter(decoder=True)
        except TypeError:
            return getter()
    return config


def _layer_types(config: Any) -> tuple[list[str], list[int | None]]:
    """Layer types and windows, decided the way transformers' own DynamicCache decides them."""
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        types, kwargs = get_layer_types_and_kwargs(config)
        windows = [kw.get("sliding_window") for kw in kwargs]
        return list(types), windows
    except (ImportError, AttributeError, TypeError):
        pass
    n = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    types = list(getattr(config, "layer_types", None) or [SLIDING if window is not None else FULL] * n)
    return types, [window if t == SLIDING else None for t in types]


def _takes_mask_dict(model: Any) -> bool:
    """Whether the base model's forward accepts a per-layer-type dict of prepared masks."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if base is None or base is model:
        base = model
    try:
        src = inspect.getsource(type(base).forward)
    except (OSError, TypeError):
        return False
    return "causal_mask_mapping" in src and "dict" in src


def _activation_dtype_device(model: Any) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's activations: those of its input embedding table, or,
    for an embedding kept in a quantized format, the float dtype it computes in."""
    emb = model.get_input_embeddings()
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.dtype, weight.device
    return emb.compute_dtype, emb.device


def inspect_model(model: Any) -> AttentionLayout:
    """Check statically that `model` can run tree verification; describe how to feed it."""
    config = text_config(model)
    name = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedModelError(f"{name}: encoder-decoder models are not supported (decoder-only causal LMs only)")
    if not getattr(config, "is_causal", True) or getattr(config, "use_bidirectional_attention", False):
        raise UnsupportedModelError(f"{name}: bidirectional attention cannot be verified with a causal tree mask")
    impl = getattr(model.config, "_attn_implementation", None) or getattr(config, "_attn_implementation", None)
    if impl not in SUPPORTED_ATTENTION:
        raise UnsupportedModelError(
            f"{name} uses attn_implementation={impl!r}, which cannot take a custom tree attention mask; "
            'load the model with attn_implementation="sdpa" (or "eager")'
        )
    types, windows = _layer_types(config)
    bad = sorted({t for t in types if t not in (FULL, SLIDING)})
    if bad:
        raise UnsupportedModelError(
            f"{name} has layer types {bad}; hierdraft verifies trees only on full and sliding-window attention layers"
        )
    sliding = {w for t, w in zip(types, windows) if t == SLIDING}
    if None in sliding or len(sliding) > 1:
        raise UnsupportedModelError(f"{name}: sliding-window layers must share one window size, got {sorted(map(str, sliding))}")
    window = next(iter(sliding)) if sliding else None
    mixed = len(set(types)) > 1
    by_type = mixed and _takes_mask_dict(model)
    if mixed and not by_type:
        raise UnsupportedModelError(
            f"{name} mixes full and sliding-window layers but its forward does not accept per-layer-type masks"
        )
    params = inspect.signature(model.forward).parameters
    if "cache" in params:
        cache_kwarg = "cache"
    elif "past_key_values" in params:
        cache_kwarg = "past_key_values"
    else:
        raise UnsupportedModelError(f"{name}.forward takes no KV cache argument")
    for needed in ("attention_mask", "position_ids"):
        if needed not in params:
            raise UnsupportedModelError(f"{name}.forward takes no {needed} argument")
    dtype, device = _activation_dtype_device(model)
    return AttentionLayout(
        attn_implementation=impl,
        layer_types=tuple(types),
        sliding_window=window,
        mask_by_layer_type=by_type,
        cache_kwarg=cache_kwarg,
        has_logits_to_keep="logits_to_keep" in params,
        dtype=dtype,
        device=device,
        vocab_size=getattr(config, "vocab_size", None),
    )


