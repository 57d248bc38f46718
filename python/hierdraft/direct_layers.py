"""Decoder layers of quantized models run as direct kernel calls instead of transformers' module tree.

A step of a small model on CPU is dominated by per-call overhead: one Gemma 3 270M step goes
through about 300 module calls, each with its hooks, keyword handling and wrapper checks, around
kernels that take a few microseconds. Within `direct_layers(model)`, every decoder layer of a known
architecture whose linears are `QuantLinear`s and whose norms are `FusedRMSNorm`s runs as one
function (`LayerPlan.forward`) instead.

The rule: the function makes the same arithmetic as the modules, in the same order: the modules'
own kernel calls (`QuantLinear.project`, with `qlinear_group` where it equals separate products,
`FusedRMSNorm.normalize`, the attention kernel), a rotary kernel with PyTorch's float32
operations (`hierdraft._core.rotary`), and PyTorch's element-wise operations for the activation
and the residual sums. Its outputs are
therefore the modules' outputs bit for bit, which `tests/test_direct_layers.py` checks; every
exactness property of the module path carries over. Layers of other classes, or with parts it does
not know, keep their modules.

Known layouts: Gemma 3 (norms around both the attention and the MLP, per-head query/key norms)
and Llama (a norm before each).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .cpu_attention import kernel_attention_forward
from .fused_norm import FusedRMSNorm
from .quant_modules import QuantLinear

try:
    from ._core import qlinear_group as _qlinear_group
    from ._core import rotary as _rotary
except ImportError:  # extension not built: no direct layers (the modules run)
    _qlinear_group = _rotary = None

__all__ = ["LayerPlan", "direct_layers", "layer_plans"]

# Decoder layer classes by layout: "sandwich" normalises the attention's and the MLP's inputs and
# outputs (Gemma 3); "pre" normalises their inputs only (Llama).
LAYOUTS = {"Gemma3DecoderLayer": "sandwich", "LlamaDecoderLayer": "pre"}

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _norm(module: Any) -> FusedRMSNorm | None:
    return module if type(module) is FusedRMSNorm else None


def _linear(module: Any) -> QuantLinear | None:
    return module if type(module) is QuantLinear else None


def _project_all(layers: tuple[QuantLinear, ...], x: torch.Tensor) -> list[torch.Tensor]:
    """`[layer(x) for layer in layers]`: in one kernel dispatch when the float32 products have no
    bias (`qlinear_group` equals the separate products bit for bit), else one by one."""
    if x.shape[0] == 0 or any(layer.numerics != "fp32" or layer.bias is not None for layer in layers):
        return [layer.project(x) for layer in layers]
    outs = [torch.empty(x.shape[0], layer.out_features, dtype=torch.float32) for layer in layers]
    _qlinear_group(x.numpy(), [layer.qweight for layer in layers], [out.numpy() for out in outs])
    return outs


def _rotated(x: torch.Tensor, cos: np.ndarray, sin: np.ndarray) -> torch.Tensor:
    """transformers' `x * cos + rotate_half(x) * sin` for contiguous (rows, heads, dim) `x`, by
    one kernel call with the same float32 operations."""
    out = torch.empty_like(x)
    if x.numel():
        _rotary(x.numpy(), cos, sin, out.numpy())
    return out


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
        **_: Any,
    ) -> torch.Tensor:
        """The layer's output for `hidden_states` (1, rows, hidden), as the module computes it."""
        if hidden_states.dim() != 3 or hidden_states.shape[0] != 1 or position_embeddings is None:
            raise ValueError("direct layers compute one sequence with its position embeddings")
        cache = cache if cache is not None else past_key_values
        lin, norm = self.linears, self.norms
        rows, width = hidden_states.shape[1], hidden_states.shape[2]
        x = hidden_states.detach().reshape(rows, width).contiguous()

        h = norm["input_layernorm"].normalize(x)  # type: ignore[union-attr]
        q, k, v = _project_all((lin["q"], lin["k"], lin["v"]), h)
        q = q.view(rows, self.heads, self.head_dim)
        k = k.view(rows, self.kv_heads, self.head_dim)
        v = v.view(rows, self.kv_heads, self.head_dim)
        if norm.get("q_norm") is not None:
            q = norm["q_norm"].normalize(q)  # type: ignore[union-attr]
        if norm.get("k_norm") is not None:
            k = norm["k_norm"].normalize(k)  # type: ignore[union-attr]
        cos, sin = (t.detach().reshape(rows, self.head_dim).contiguous().numpy() for t in position_embeddings)
        q, k = _rotated(q, cos, sin), _rotated(k, cos, sin)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, heads, rows, head_dim)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        attended, _ = kernel_attention_forward(
            self.attention, q, k, v, attention_mask, scaling=self.scaling, sliding_window=self.sliding_window
        )
        a = lin["o"].project(attended.reshape(rows, -1))

        if self.layout == "sandwich":
            x = x + norm["post_attention_layernorm"].normalize(a)  # type: ignore[union-attr]
            h = norm["pre_feedforward_layernorm"].normalize(x)  # type: ignore[union-attr]
        else:
            x = x + a
            h = norm["post_attention_layernorm"].normalize(x)  # type: ignore[union-attr]
        gate, up = _project_all((lin["gate"], lin["up"]), h)
        m = lin["down"].project(self.act(gate) * up)
        if self.layout == "sandwich":
            m = norm["post_feedforward_layernorm"].normalize(m)  # type: ignore[union-attr]
        return (x + m).view(1, rows, width)


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
    for layer, plan in found:
        layer.forward = plan.forward
    try:
        yield
    finally:
        for layer, _ in found:
            vars(layer).pop("forward", None)
