"""Tree attention: the inputs of one verification forward over [uncached tokens + draft tree].

A verification forward feeds the model `c >= 1` committed tokens that are not yet in the KV cache
(the whole prompt at the first step, afterwards the last accepted token, the tree's root) followed
by the `n` draft-tree nodes. This module builds, for that forward:

- `input_ids`: the `c` tokens then the node tokens;
- `position_ids`: `cache_len + 0..c-1` for the chain, `cache_len + c - 1 + depth` for a node;
- the 4-D attention mask `(1, 1, q, kv)`: every query sees the KV cache, the chain is causal, a
  node sees the whole chain, its ancestors and itself. Sliding-window layers additionally drop keys
  `window` or more positions behind the query, exactly like transformers' sliding mask. Boolean
  (True = attend) for SDPA, additive float (0 / dtype min) for eager attention. Models with mixed
  layer types (Gemma 3) get a dict `{"full_attention": m, "sliding_attention": m}`, which their
  forward accepts in place of building its own masks.

It also decides whether a model can take such a forward at all (`inspect_model`, plus a one-off
numerical probe); anything else raises `UnsupportedModelError` instead of producing wrong output.
"""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .drafting import ancestor_matrix
from .cpu_matmul import MAX_ROWS, few_rows_linear, kernel_applies, small_batch_linears

__all__ = [
    "UnsupportedModelError",
    "AttentionLayout",
    "TreeInputs",
    "inspect_model",
    "build_tree_inputs",
    "forward_tree",
    "TreeLogits",
    "check_tree_attention",
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


@dataclass
class TreeInputs:
    """The tensors of one verification forward (batch 1)."""

    input_ids: torch.Tensor  # (1, q) long
    position_ids: torch.Tensor  # (1, q) long
    attention_mask: torch.Tensor | dict[str, torch.Tensor] | None  # None: no tree, the model's own causal mask
    num_logits: int  # rows of logits needed: the last chain token + every node (n + 1)


def _text_config(model: Any) -> Any:
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


def inspect_model(model: Any) -> AttentionLayout:
    """Check statically that `model` can run tree verification; describe how to feed it."""
    config = _text_config(model)
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
    emb = model.get_input_embeddings()
    return AttentionLayout(
        attn_implementation=impl,
        layer_types=tuple(types),
        sliding_window=window,
        mask_by_layer_type=by_type,
        cache_kwarg=cache_kwarg,
        has_logits_to_keep="logits_to_keep" in params,
        dtype=emb.weight.dtype,
        device=emb.weight.device,
        vocab_size=getattr(config, "vocab_size", None),
    )


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


class TreeLogits:
    """The target's logits for the rows of one verification forward (row 0: the last chain token,
    row 1 + i: node i), computed eagerly or, with a split head, on demand.

    With a large vocabulary the LM head costs as much as the rest of a small model per row.
    With PyTorch's kernels the cost grows with the rows, so only the rows the verification walk
    asks for (about the accepted length) are computed, one head call per tree level. With
    hierdraft's kernel (`cpu_matmul`) up to `HEAD_ROWS_AT_ONCE` rows cost about one, so the
    first request computes every row in a single call (`all_at_once`).
    """

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        head: Any = None,
        all_at_once: bool = False,
    ):
        source = logits if logits is not None else hidden
        if source is None or (logits is None and head is None):
            raise ValueError("TreeLogits needs logits, or hidden states and a head")
        self._logits = logits
        self._hidden = source
        self._head = head
        self.num_rows = int(source.shape[0])
        self.device = source.device
        self._all_at_once = all_at_once

    def all(self) -> torch.Tensor:
        """(num_rows, vocab) logits."""
        if self._logits is None:
            self._logits = self._head(self._hidden)
        return self._logits

    def rows(self, index: list[int]) -> torch.Tensor:
        """(len(index), vocab) logits of the given rows."""
        if self._logits is not None or self._all_at_once:
            return self.all()[index]
        return self._head(self._hidden[index])


# Rows up to which one call of hierdraft's kernel over every row of a tree beats a head call per
# tree level (Gemma 3 270M's 262k x 640 head, 2 threads, `cargo bench -p hierdraft-kernels`:
# 1 / 4 / 9 / 17 rows 30 / 33 / 47 / 76 ms).
HEAD_ROWS_AT_ONCE = 24


def _few_rows_head(head: Any, hidden: torch.Tensor) -> bool:
    """Whether `_apply_head` runs the head through `cpu_matmul.few_rows_linear`."""
    return hidden.device.type == "cpu" and type(head) is torch.nn.Linear and hidden.shape[0] <= MAX_ROWS


def _apply_head(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    head = model.get_output_embeddings()
    if _few_rows_head(head, hidden):
        logits = few_rows_linear(head, hidden)  # see cpu_matmul: 3-4x faster from 2 rows on
    else:
        logits = head(hidden)
    cap = getattr(_text_config(model), "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def forward_tree(model: Any, layout: AttentionLayout, cache: Any, inputs: TreeInputs) -> TreeLogits:
    """Run the verification forward; returns the logits of the last chain token and of each node."""
    kwargs = {
        "input_ids": inputs.input_ids,
        "position_ids": inputs.position_ids,
        "attention_mask": inputs.attention_mask,
        layout.cache_kwarg: cache,
        "use_cache": True,
    }
    k = inputs.num_logits
    # Plain steps (no tree) run exactly as model.generate would; tree steps on CPU use the
    # weight-major matmul form for their few rows (see cpu_matmul).
    rows = int(inputs.input_ids.shape[1]) if k > 1 and layout.device.type == "cpu" else 1
    with small_batch_linears(model, rows):
        if layout.split_head and k > 1:
            hidden = model.base_model(**kwargs).last_hidden_state[0, -k:]
            head = model.get_output_embeddings()
            all_at_once = (
                k <= HEAD_ROWS_AT_ONCE and _few_rows_head(head, hidden) and kernel_applies(head.weight, hidden)
            )
            return TreeLogits(hidden=hidden, head=lambda h: _apply_head(model, h), all_at_once=all_at_once)
        if layout.has_logits_to_keep:
            kwargs["logits_to_keep"] = k
        return TreeLogits(logits=model(**kwargs).logits[0, -k:])


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
    from .kv_cache import TreeKVCache  # local import: kv_cache depends on this module

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
    """Whether logits may be computed as body + `_apply_head` (checked numerically), on CPU only:
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
            split = _apply_head(model, base(input_ids=x, use_cache=False).last_hidden_state[0]).float()
    except Exception:  # noqa: BLE001 - any surprise: keep the plain path
        return False
    tol = 1e-3 * max(full.abs().max().item(), 1.0)
    return full.shape == split.shape and bool(((full - split).abs() <= tol).all())
