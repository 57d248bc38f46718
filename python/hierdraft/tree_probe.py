"""Whether a model really honours a custom tree attention mask: a one-off numerical probe per model.

`check_tree_attention` runs `model_layout.inspect_model`, then verifies a root with two sibling
nodes and compares one node's logits with what it must see and with what it would see if the mask
were ignored. It also decides, numerically, whether the LM head may run apart from the body
(`AttentionLayout.split_head`). The result is cached per model.
"""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from typing import Any

import numpy as np
import torch

from .kv_cache import TreeKVCache
from .model_layout import AttentionLayout, UnsupportedModelError, inspect_model
from .tree_forward import apply_head, forward_tree
from .tree_mask import build_tree_inputs

__all__ = ["check_tree_attention"]

_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_tree_attention(model: Any) -> AttentionLayout:
    """`inspect_model` plus, once per model, a numerical probe that the tree mask is really honoured.

    The probe verifies a root with two sibling nodes b, c and compares node c's logits with a
    plain forward over [root, c] (what c must see) and with a causal forward over [root, b, c] at
    the same positions (what c would see if the mask were ignored).
    """
    layout = inspect_model(model)
    try:
        known = _PROBED.get(model)
        if known is not None and dataclasses.replace(known, split_head=False) == layout:
            return known
    except TypeError:  # not weak-referenceable: probe every time
        pass

    vocab = max(layout.vocab_size or 0, 4)
    a, b, c = vocab // 3, vocab // 2, (2 * vocab) // 3

    def run(chain: list[int], tokens: list[int]) -> torch.Tensor:
        cache = TreeKVCache(layout)
        tok = np.asarray(tokens, dtype=np.int64)
        par = np.full(len(tok), -1, dtype=np.int64)
        dep = np.ones(len(tok), dtype=np.int64)
        inputs = build_tree_inputs(layout, chain, tok, par, dep, 0, cache.cached_lengths())
        return forward_tree(model, layout, cache.cache, inputs).all().float()

    with torch.inference_mode():
        tree_c = run([a], [b, c])[2]
        plain_c = run([a, c], [])[0]
        ids = torch.tensor([[a, b, c]], device=layout.device)
        pos = torch.tensor([[0, 1, 1]], device=layout.device)
        ignored_c = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, 2].float()
    err = (tree_c - plain_c).abs().max().item()
    alt = (tree_c - ignored_c).abs().max().item()
    if not err <= 0.1 * alt:
        raise UnsupportedModelError(
            f"{type(model).__name__} does not honour a custom tree attention mask "
            f"(probe: {err:.3g} away from the masked result, {alt:.3g} from the unmasked one); "
            "it cannot be used with hierdraft"
        )
    layout = dataclasses.replace(layout, split_head=_head_splits(model, layout, [a, b, c]))
    try:
        _PROBED[model] = layout
    except TypeError:
        pass
    return layout


def _head_splits(model: Any, layout: AttentionLayout, ids: list[int]) -> bool:
    """Whether logits may be computed as body + `apply_head` (checked numerically), on CPU only:
    on accelerators one head call over every row is cheaper than waiting for the walk."""
    if layout.device.type != "cpu" or model.get_output_embeddings() is None:
        return False
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return False
    try:
        if layout.cache_kwarg not in inspect.signature(base.forward).parameters:
            return False
        with torch.inference_mode():
            x = torch.tensor([ids], device=layout.device)
            full = model(input_ids=x, use_cache=False).logits[0].float()
            split = apply_head(model, base(input_ids=x, use_cache=False).last_hidden_state[0]).float()
    except Exception:  # noqa: BLE001 - any surprise: keep the plain path
        return False
    tol = 1e-3 * max(full.abs().max().item(), 1.0)
    return full.shape == split.shape and bool(((full - split).abs() <= tol).all())
