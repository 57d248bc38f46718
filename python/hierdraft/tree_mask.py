"""The inputs of one verification forward over [uncached committed tokens + draft tree].

A verification forward feeds the model `c >= 1` committed tokens that are not yet in the KV cache
(the whole prompt at the first step, afterwards the last accepted token, the tree's root) followed
by the `n` draft-tree nodes. `build_tree_inputs` builds, for that forward:

- `input_ids`: the `c` tokens then the node tokens;
- `position_ids`: `cache_len + 0..c-1` for the chain, `cache_len + c - 1 + depth` for a node;
- the 4-D attention mask `(1, 1, q, kv)`: every query sees the KV cache, the chain is causal, a
  node sees the whole chain, its ancestors and itself. Sliding-window layers additionally drop keys
  `window` or more positions behind the query, exactly like transformers' sliding mask. Boolean
  (True = attend) for SDPA, additive float (0 / dtype min) for eager attention. Models with mixed
  layer types (Gemma 3) get a dict `{"full_attention": m, "sliding_attention": m}`, which their
  forward accepts in place of building its own masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .drafting import ancestor_matrix
from .model_layout import SLIDING, AttentionLayout

__all__ = ["TreeInputs", "build_tree_inputs"]


@dataclass
class TreeInputs:
    """The tensors of one verification forward (batch 1)."""

    input_ids: torch.Tensor  # (1, q) long
    position_ids: torch.Tensor  # (1, q) long
    attention_mask: torch.Tensor | dict[str, torch.Tensor] | None  # None: no tree, the model's own causal mask
    num_logits: int  # rows of logits needed: the last chain token + every node (n + 1)


def _to_mask_format(allowed: torch.Tensor, layout: AttentionLayout) -> torch.Tensor:
    allowed = allowed[None, None]
    if layout.attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=layout.dtype, device=allowed.device).masked_fill_(
            ~allowed, torch.finfo(layout.dtype).min
        )
    return allowed


def build_tree_inputs(
    layout: AttentionLayout,
    chain: np.ndarray | list[int],
    tokens: np.ndarray,
    parents: np.ndarray,
    depths: np.ndarray,
    cache_len: int,
    cached: dict[str, int],
    anc: np.ndarray | None = None,
) -> TreeInputs:
    """Inputs for one forward over `chain` (uncached committed tokens) + the tree nodes.

    `cache_len` is the number of committed tokens already in the cache; `cached[layer_type]` the
    number of entries a layer of that type holds now (the last ones, for sliding layers).
    `anc` is the tree's ancestor matrix if the caller already has it.
    """
    device = layout.device
    chain = np.asarray(chain, dtype=np.int64)
    c, n = len(chain), len(tokens)
    q = c + n
    offsets = np.concatenate([np.arange(c, dtype=np.int64), (c - 1) + np.asarray(depths, dtype=np.int64)])
    host = np.stack([np.concatenate([chain, np.asarray(tokens, dtype=np.int64)]), offsets + cache_len])
    ids_pos = torch.from_numpy(host).to(device, non_blocking=True)
    input_ids, position_ids = ids_pos[0:1], ids_pos[1:2]

    if n == 0:
        # A plain causal chain: let the model build its own mask from the cache (exactly what
        # model.generate does, so plain decoding is bit-identical to it, SDPA's is_causal fast path included).
        return TreeInputs(input_ids=input_ids, position_ids=position_ids, attention_mask=None, num_logits=1)

    block = torch.ones((q, q), dtype=torch.bool, device=device).tril_()
    block[:c, c:] = False
    if anc is None:
        anc = ancestor_matrix(parents, depths)
    block[c:, c:] = torch.from_numpy(anc).to(device, non_blocking=True)

    masks: dict[str, torch.Tensor] = {}
    for layer_type in layout.present_types:
        held = cached[layer_type]
        allowed = torch.cat([torch.ones((q, held), dtype=torch.bool, device=device), block], dim=1)
        if layer_type == SLIDING:
            key_pos = torch.cat(
                [torch.arange(cache_len - held, cache_len, device=device), position_ids[0]]
            )
            assert layout.sliding_window is not None
            allowed &= (position_ids[0][:, None] - key_pos[None, :]) < layout.sliding_window
        masks[layer_type] = _to_mask_format(allowed, layout)
    mask = masks if layout.mask_by_layer_type else masks[layout.present_types[0]]
    return TreeInputs(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, num_logits=n + 1)


