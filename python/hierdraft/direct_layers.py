"""Decoder layers of quantized models run as direct kernel calls instead of transformers' module tree.

A step of a small model on CPU is dominated by per-call overhead: one Gemma 3 270M step goes
through about 300 module calls, each with its hooks, keyword handling and wrapper checks, around
kernels that take a few microseconds. Within `direct_layers(model)`, every decoder layer of a known
architecture whose linears are `QuantLinear`s and whose norms are `FusedRMSNorm`s runs as one
function (`LayerPlan.forward`) instead.

The rule: the function makes the same arithmetic as the modules, in the same order: the modules'
own kernel calls (`QuantLinear.project_array`, with `qlinear_group` where it equals separate
products, `FusedRMSNorm.normalize_array`, the attention kernel), a rotary kernel with PyTorch's
float32 operations (`hierdraft._core.rotary`), the model's own activation module, and float32
element-wise products and sums (one IEEE rounding each, the same in numpy as in PyTorch). Its
outputs are therefore the modules' outputs bit for bit, which `tests/test_direct_layers.py`
checks; every exactness property of the module path carries over. Layers of other classes, or
with parts it does not know, keep their modules.

Between the kernel calls the function works on numpy arrays, not tensors: on this project's
machines a PyTorch operation's dispatch costs several times a numpy one, and a step makes
hundreds of them. The new keys and values go straight into the cache's buffers
(`PrunableLayer.append_arrays`), and what every layer of one forward derives from the same
tensors (the attention mask's visibility, the rotary tables) is made once (`_Memo`).

Known layouts: Gemma 3 (norms around both the attention and the MLP, per-head query/key norms),
Llama, Qwen 2 (biased q/k/v projections) and Qwen 3 (per-head query/key norms), each with a norm
before the attention and the MLP.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .cpu_attention import attend, visible_keys
from .fused_norm import FusedRMSNorm
from .kv_cache import PrunableLayer
from .quant_modules import QuantLinear

try:
    from ._core import qlinear_group as _qlinear_group
    from ._core import rotary as _rotary
except ImportError:  # extension not built: no direct layers (the modules run)
    _qlinear_group = _rotary = None

__all__ = ["LayerPlan", "direct_layers", "layer_plans"]

# Decoder layer classes by layout: "sandwich" normalises the attention's and the MLP's inputs and
# outputs (Gemma 3); "pre" normalises their inputs only (Llama, Qwen 2 with its biased q/k/v
# projections, Qwen 3 with its per-head query/key norms).
LAYOUTS = {
    "Gemma3DecoderLayer": "sandwich",
    "LlamaDecoderLayer": "pre",
    "Qwen2DecoderLayer": "pre",
    "Qwen3DecoderLayer": "pre",
}

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Rows from which the MLP activation runs in two halves on two threads (see
# `_activated_product`): below it, handing half to a thread costs about what it saves.
PARALLEL_ACTIVATION_ROWS = 64
# Values per split point of the activation: a multiple of the widest vector loop PyTorch's CPU
# kernels take (two AVX-512 vectors of 16 floats).
_SPLIT_ALIGN = 64


def _norm(module: Any) -> FusedRMSNorm | None:
    return module if type(module) is FusedRMSNorm else None


def _linear(module: Any) -> QuantLinear | None:
    return module if type(module) is QuantLinear else None


def _project_all(layers: tuple[QuantLinear, ...], x: np.ndarray) -> list[np.ndarray]:
    """`[layer(x) for layer in layers]` on arrays: in one kernel dispatch when the float32
    products have no bias (`qlinear_group` equals the separate products bit for bit), else one by
    one."""
    outs = [np.empty((x.shape[0], layer.out_features), dtype=np.float32) for layer in layers]
    if x.shape[0] == 0 or any(layer.numerics != "fp32" or layer.bias is not None for layer in layers):
        for layer, out in zip(layers, outs):
            layer.project_array(x, out)
    else:
        _qlinear_group(x, [layer.qweight for layer in layers], outs)
    return outs


def _normalized(norm: FusedRMSNorm, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    norm.normalize_array(x, out)
    return out


def _rotated(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """transformers' `x * cos + rotate_half(x) * sin` for contiguous (rows, heads, dim) `x`, by
    one kernel call with the same float32 operations."""
    out = np.empty_like(x)
    if x.size:
        _rotary(x, cos, sin, out)
    return out


def _activated_product(act: Callable[[torch.Tensor], torch.Tensor], gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """`act(gate) * up`, as the MLP module computes it. From `PARALLEL_ACTIVATION_ROWS` rows on
    (a prompt), the rows are done in two halves on two threads: PyTorch runs on one thread while
    hierdraft decodes (`cpu_matmul.kernel_threads`), and its element-wise kernels release the GIL.

    The values are the same either way. PyTorch's element-wise CPU loops take whole vectors (two
    of up to 16 floats at a time) and finish any rest with a scalar loop whose last bits may
    differ; both halves hold a multiple of `_SPLIT_ALIGN` values, as the whole does, so no value
    reaches the scalar loop in either."""
    rows, width = gate.shape
    out = np.empty_like(up)

    def part(lo: int, hi: int) -> None:
        np.multiply(act(torch.from_numpy(gate[lo:hi])).numpy(), up[lo:hi], out=out[lo:hi])

    if rows < PARALLEL_ACTIVATION_ROWS or width % _SPLIT_ALIGN:
        part(0, rows)
        return out
    half = rows // 2
    other = _activation_helper().submit(part, half, rows)
    part(0, half)
    other.result()
    return out


@functools.cache
def _activation_helper() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="hierdraft-activation")


class _Memo:
    """Arrays derived from the tensors every layer of one forward receives (the attention masks,
    the rotary tables), made once per forward. Each entry keeps its tensor alive, so that no other
    tensor can take its id while the memo lives (one `direct_layers` block)."""

    def __init__(self) -> None:
        self._found: dict[tuple[int, int, int], tuple[torch.Tensor, Any]] = {}

    def get(self, tensor: torch.Tensor, a: int, b: int, make: Callable[[], Any]) -> Any:
        key = (id(tensor), a, b)
        hit = self._found.get(key)
        if hit is None or hit[0] is not tensor:
            hit = self._found[key] = (tensor, make())
        return hit[1]


@dataclass(frozen=True)
class LayerPlan:
    """What one decoder layer computes, gathered once from its modules."""

    layout: str
    layer_idx: int
    attention: Any
    norms: dict[str, FusedRMSNorm | None]
    linears: dict[str, QuantLinear]
    act: Callable[[torch.Tensor], torch.Tensor]
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    sliding_window: int | None

    @staticmethod
    def of(layer: Any) -> LayerPlan | None:
        """The plan of `layer`, or None when this module cannot run it bit for bit as the layer."""
        layout = LAYOUTS.get(type(layer).__name__)
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if layout is None or attn is None or mlp is None or _rotary is None:
            return None
        if getattr(attn.config, "attn_logit_softcapping", None) is not None:
            return None
        names = {"q": (attn, "q_proj"), "k": (attn, "k_proj"), "v": (attn, "v_proj"), "o": (attn, "o_proj"),
                 "gate": (mlp, "gate_proj"), "up": (mlp, "up_proj"), "down": (mlp, "down_proj")}
        linears = {key: _linear(getattr(owner, attr, None)) for key, (owner, attr) in names.items()}
        if any(v is None for v in linears.values()):
            return None
        norm_names = ["input_layernorm", "post_attention_layernorm"]
        if layout == "sandwich":
            norm_names += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        norms = {name: _norm(getattr(layer, name, None)) for name in norm_names}
        if any(n is None for n in norms.values()):
            return None
        for name in ("q_norm", "k_norm"):
            module = getattr(attn, name, None)
            norms[name] = None if module is None else _norm(module)
            if module is not None and norms[name] is None:
                return None
        head_dim = int(attn.head_dim)
        if head_dim % 2:
            return None
        q_rows, k_rows = linears["q"].out_features, linears["k"].out_features  # type: ignore[union-attr]
        if q_rows % head_dim or k_rows % head_dim or linears["v"].out_features != k_rows:  # type: ignore[union-attr]
            return None
        return LayerPlan(
            layout=layout,
            layer_idx=int(attn.layer_idx),
            attention=attn,
            norms=norms,
            linears=linears,  # type: ignore[arg-type]
            act=mlp.act_fn,
            heads=q_rows // head_dim,
            kv_heads=k_rows // head_dim,
            head_dim=head_dim,
            scaling=float(attn.scaling),
            sliding_window=getattr(attn, "sliding_window", None),
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        memo: _Memo | None = None,
        **_: Any,
    ) -> torch.Tensor:
        """The layer's output for `hidden_states` (1, rows, hidden), as the module computes it.

        The work between kernel calls is done on numpy arrays (views, no copies where the module
        makes none): a tensor operation costs several times a numpy one, and a step of a small
        model makes hundreds of them."""
        if hidden_states.dim() != 3 or hidden_states.shape[0] != 1 or position_embeddings is None:
            raise ValueError("direct layers compute one sequence with its position embeddings")
        memo = memo if memo is not None else _Memo()
        cache = cache if cache is not None else past_key_values
        lin, norm = self.linears, self.norms
        rows, width = hidden_states.shape[1], hidden_states.shape[2]
        x = hidden_states.detach().reshape(rows, width).contiguous().numpy()

        h = _normalized(norm["input_layernorm"], x)  # type: ignore[arg-type]
        q, k, v = _project_all((lin["q"], lin["k"], lin["v"]), h)
        q = q.reshape(rows, self.heads, self.head_dim)
        k = k.reshape(rows, self.kv_heads, self.head_dim)
        v = v.reshape(rows, self.kv_heads, self.head_dim)
        if norm.get("q_norm") is not None:
            q = _normalized(norm["q_norm"], q)  # type: ignore[arg-type]
        if norm.get("k_norm") is not None:
            k = _normalized(norm["k_norm"], k)  # type: ignore[arg-type]
        cos, sin = (
            memo.get(t, rows, self.head_dim, lambda t=t: t.detach().reshape(rows, self.head_dim).contiguous().numpy())
            for t in position_embeddings
        )
        q, k = _rotated(q, cos, sin), _rotated(k, cos, sin)
        keys, values = self._cached(cache, k, v)
        visible = None
        if attention_mask is not None:
            total = keys.shape[-2]
            visible = memo.get(attention_mask, rows, total, lambda: visible_keys(attention_mask, rows, total))
        attended = np.empty((rows, self.heads, self.head_dim), dtype=np.float32)
        attend(np.ascontiguousarray(q.transpose(1, 0, 2)), keys, values, attended,
               self.scaling, visible, self.sliding_window, None)
        a = np.empty((rows, lin["o"].out_features), dtype=np.float32)
        lin["o"].project_array(attended.reshape(rows, -1), a)

        if self.layout == "sandwich":
            x = x + _normalized(norm["post_attention_layernorm"], a)  # type: ignore[arg-type]
            h = _normalized(norm["pre_feedforward_layernorm"], x)  # type: ignore[arg-type]
        else:
            x = x + a
            h = _normalized(norm["post_attention_layernorm"], x)  # type: ignore[arg-type]
        gate, up = _project_all((lin["gate"], lin["up"]), h)
        mixed = _activated_product(self.act, gate, up)
        m = np.empty((rows, lin["down"].out_features), dtype=np.float32)
        lin["down"].project_array(mixed, m)
        if self.layout == "sandwich":
            m = _normalized(norm["post_feedforward_layernorm"], m)  # type: ignore[arg-type]
        return torch.from_numpy(x + m).view(1, rows, width)


    def _cached(self, cache: Any, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The layer's keys and values, (kv_heads, entries, head_dim), once `k` and `v` (rows,
        kv_heads, head_dim) are appended to `cache` (if any)."""
        layers = getattr(cache, "layers", None)
        layer = layers[self.layer_idx] if layers is not None and self.layer_idx < len(layers) else None
        if isinstance(layer, PrunableLayer) and not getattr(cache, "offloading", False):
            return layer.append_arrays(k, v)
        # (1, kv_heads, rows, head_dim) views, as the modules hand them to the cache
        keys, values = (torch.from_numpy(t).permute(1, 0, 2).unsqueeze(0) for t in (k, v))
        if cache is not None:
            keys, values = cache.update(keys, values, self.layer_idx)
        keys, values = keys.detach()[0], values.detach()[0]
        return (t.numpy() if t.stride(-1) == 1 else t.contiguous().numpy() for t in (keys, values))  # type: ignore[return-value]


def layer_plans(model: Any) -> list[tuple[Any, LayerPlan]]:
    """The decoder layers of `model` that run directly, with their plans (cached per model)."""
    try:
        found = _PLANS.get(model)
    except TypeError:
        found = None
    if found is None:
        layers = getattr(getattr(model, "base_model", model), "layers", None) or []
        found = [(layer, plan) for layer in layers if (plan := LayerPlan.of(layer)) is not None]
        try:
            _PLANS[model] = found
        except TypeError:
            pass
    return found


@contextlib.contextmanager
def direct_layers(model: Any) -> Iterator[None]:
    """Within the block, the decoder layers `layer_plans` finds run as their plans' `forward`."""
    found = layer_plans(model)
    memo = _Memo()
    for layer, plan in found:
        layer.forward = functools.partial(plan.forward, memo=memo)
    try:
        yield
    finally:
        for layer, _ in found:
            vars(layer).pop("forward", None)
