"""The KV cache of a speculative decoding request, pruned to the accepted path after every step.

transformers' own sliding-window cache layer drops everything older than `window - 1` tokens as
soon as a forward writes to it, rejected draft nodes included, so a rejected draft would evict
entries that are still needed. `TreeKVCache` therefore builds the cache itself, as a
`DynamicCache` whose layers never drop anything inside a forward:

- full-attention layers hold every committed token;
- sliding-window layers hold the last `window - 1` committed tokens (what transformers keeps,
  and all the next forward can see), trimmed after each step, never during one.

After a verification forward every layer holds `held + q` entries (q = chain + tree nodes);
`commit(keep)` keeps only the entries of the accepted path (the chain and the accepted nodes, in
order), moving the few accepted node entries next to the chain instead of copying the cache. The
prompt is never recomputed and memory never grows with rejected drafts.

Each layer writes into a buffer with room to spare (doubling when full) and hands the attention
views of it: appending a step's entries copies only those entries, where transformers' own layer
concatenates, i.e. copies the whole cache, at every forward. A sliding layer drops its oldest
entries by moving the start of its view; the buffer is compacted when the view reaches its end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .model_layout import FULL, SLIDING, AttentionLayout, UnsupportedModelError

try:
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError as exc:  # pragma: no cover - depends on the installed transformers
    raise ImportError("hierdraft needs transformers >= 4.56 (cache layers API)") from exc

__all__ = ["PrunableLayer", "TreeKVCache"]


# Entries of room a layer's buffer starts with (it doubles when full).
MIN_CAPACITY = 64


class PrunableLayer(DynamicLayer):
    """A dynamic layer that appends during a forward and keeps a chosen subset afterwards.

    `keys` / `values` are views `[start, start + held)` of `_key_buf` / `_value_buf` along the
    sequence axis. `get_seq_length` reports the number of committed tokens (for sliding layers, as
    transformers' sliding layer does, the absolute length rather than the entries held).
    """

    def __init__(self, window: int | None = None) -> None:
        super().__init__()
        self.window = window
        self.is_sliding = window is not None
        self.cumulative_length = 0
        self._key_buf: torch.Tensor | None = None
        self._value_buf: torch.Tensor | None = None
        self._start = 0
        self._array_of: torch.Tensor | None = None  # the buffer `_array_views` views
        self._array_views: tuple[np.ndarray, np.ndarray] = ()  # type: ignore[assignment]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        end, q = self._reserve(key_states, value_states)
        assert self._key_buf is not None and self._value_buf is not None
        self._key_buf[..., end : end + q, :] = key_states
        self._value_buf[..., end : end + q, :] = value_states
        self._appended(q)
        return self.keys, self.values

    def append_arrays(self, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`update` for one sequence's new entries as float32 arrays (rows, kv_heads, dim), the
        layout the projections produce; returns every held entry as (kv_heads, entries, dim)
        array views of the buffers (what the attention kernel reads)."""
        q = keys.shape[0]
        if self.is_initialized and self._has_room((1, keys.shape[1]), self.held() + q):
            end = self._start + self.held()  # the usual step: no tensor is needed
        else:
            # (1, kv_heads, rows, dim) views: the shapes and dtype `update` would be given
            states = (torch.from_numpy(t).permute(1, 0, 2).unsqueeze(0) for t in (keys, values))
            end, q = self._reserve(*states)
        key_buf, value_buf = self._arrays
        key_buf[0, :, end : end + q] = keys.transpose(1, 0, 2)
        value_buf[0, :, end : end + q] = values.transpose(1, 0, 2)
        self._appended(q)
        start, stop = self._start, end + q
        return key_buf[0, :, start:stop], value_buf[0, :, start:stop]

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[int, int]:
        """Room for the new entries: returns where they go in the buffers and how many there are."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held, q = self.held(), key_states.shape[-2]
        self._make_room(key_states, value_states, held + q)
        return self._start + held, q

    def _appended(self, q: int) -> None:
        self._view(self.held() + q)
        self.cumulative_length += q

    @property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The buffers as arrays (made once per buffer)."""
        if self._array_of is not self._key_buf:
            assert self._key_buf is not None and self._value_buf is not None
            self._array_views = (self._key_buf.numpy(), self._value_buf.numpy())
            self._array_of = self._key_buf
        return self._array_views

    def _make_room(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        """Make the buffers hold `needed` entries from `_start` on: compact or grow them."""
        if self._has_room(tuple(key_states.shape[:-2]), needed):
            return
        buf = self._key_buf
        held = self.held()
        capacity = max(MIN_CAPACITY, 2 * needed, buf.shape[-2] if buf is not None else 0)
        shape_k = (*key_states.shape[:-2], capacity, key_states.shape[-1])
        shape_v = (*value_states.shape[:-2], capacity, value_states.shape[-1])
        keys = key_states.new_empty(shape_k)
        values = value_states.new_empty(shape_v)
        if held:
            keys[..., :held, :] = self.keys
            values[..., :held, :] = self.values
        self._key_buf, self._value_buf, self._start = keys, values, 0

    def _has_room(self, lead: tuple[int, ...], needed: int) -> bool:
        """Whether the buffers, laid out for `lead` = (batch, heads), hold `needed` entries from
        `_start` on."""
        buf = self._key_buf
        return buf is not None and tuple(buf.shape[:-2]) == lead and self._start + needed <= buf.shape[-2]

    def _view(self, held: int) -> None:
        assert self._key_buf is not None and self._value_buf is not None
        self.keys = self._key_buf[..., self._start : self._start + held, :]
        self.values = self._value_buf[..., self._start : self._start + held, :]

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def get_max_length(self) -> int:
        return -1 if self.window is None else self.window

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        held = self.held()
        return held + query_length, self.cumulative_length - held

    def held(self) -> int:
        return 0 if not self.is_initialized or self.keys is None or self.keys.numel() == 0 else self.keys.shape[-2]

    def keep(self, old: int, q: int, fixed: int, move: torch.Tensor | None, m: int) -> None:
        """Of the `old + q` entries keep the first `old`, then `m` new ones: the first `fixed` new
        entries stay where they are, the new entries `move` are copied right after them."""
        keys, values = self.keys, self.values
        assert keys is not None and values is not None
        if keys.shape[-2] != old + q:
            raise RuntimeError(f"KV cache out of sync: a layer holds {keys.shape[-2]} entries, expected {old + q}")
        if move is not None:  # move the accepted node entries right after the chain
            src = move.to(keys.device) + old
            dst = slice(old + fixed, old + m)
            keys[..., dst, :] = keys.index_select(-2, src)
            values[..., dst, :] = values.index_select(-2, src)
        total = old + m
        drop = 0 if self.window is None else max(0, total - (self.window - 1))
        self._start += drop
        self._view(total - drop)
        self.cumulative_length += m - q


class _TreeCache(DynamicCache):
    """A DynamicCache made of `PrunableLayer`s (one per decoder layer)."""

    def __init__(self, layers: list[PrunableLayer]) -> None:  # noqa: D107 - bypasses DynamicCache's config logic
        super(DynamicCache, self).__init__(layers=list(layers))


class TreeKVCache:
    """The cache of one request plus the number of committed tokens it holds."""

    def __init__(self, layout: AttentionLayout) -> None:
        self.layout = layout
        self.layers = [
            PrunableLayer(layout.sliding_window if t == SLIDING else None) for t in layout.layer_types
        ]
        self.cache = _TreeCache(self.layers)
        self.length = 0  # committed tokens (positions 0..length-1)

    def cached_lengths(self) -> dict[str, int]:
        """Entries a layer of each type holds now."""
        out = {FULL: self.length}
        if self.layout.sliding_window is not None:
            out[SLIDING] = min(self.length, self.layout.sliding_window - 1)
        return out

    def commit(self, q: int, keep: np.ndarray) -> None:
        """After a forward over `q` new tokens, keep new entries `keep` (increasing indices).

        `keep` lists the chain (0..c-1) then the accepted nodes (c + node index).
        """
        keep = np.asarray(keep, dtype=np.int64)
        m = len(keep)
        held = self.cached_lengths()
        in_place = keep == np.arange(m)
        fixed = m if in_place.all() else int(np.argmin(in_place))
        move = None if fixed == m else torch.from_numpy(keep[fixed:]).to(self.layout.device)
        for layer, layer_type in zip(self.layers, self.layout.layer_types):
            if not layer.is_initialized:
                raise UnsupportedModelError(
                    "a decoder layer did not write to the KV cache (KV sharing / non-attention layers are not supported)"
                )
            layer.keep(held[layer_type], q, fixed, move, m)
        self.length += m

    def entries(self) -> list[int]:
        """Entries held per layer (for tests and memory accounting)."""
        return [layer.held() for layer in self.layers]

    def nbytes(self) -> int:
        """Bytes of the entries the layers hold (their buffers have room for up to twice as many)."""
        total = 0
        for layer in self.layers:
            if layer.keys is not None and layer.values is not None:
                total += layer.keys.nelement() * layer.keys.element_size()
                total += layer.values.nelement() * layer.values.element_size()
        return total
