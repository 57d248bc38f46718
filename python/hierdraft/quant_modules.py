"""`nn.Module`s whose weights stay in a GGUF file's own block format (`hierdraft._core.QuantTensor`).

- `QuantLinear`: `x @ W^T (+ bias)` by hierdraft's quantized kernel, for any number of rows. Every
  output element is summed in one fixed order that depends only on the inner dimension, so a
  row's result never depends on the other rows of its call (plain decoding and tree steps agree
  by construction), and it equals the float32 product over the dequantized weights computed by
  `hierdraft._core.linear_rows` bit for bit.
  `QuantLinear.greedy_argmax` gives each row's argmax of that product for a Q8_0 weight (an LM
  head) from a 5-bit proxy of it (`hierdraft._core.GreedyHead`): the same index, reading about
  two thirds of the bytes.
- `QuantEmbedding`: a token embedding (optionally scaled, as Gemma's is) that dequantizes only the
  rows of the tokens it is given.

Both compute in float32 on CPU and hold no weight parameter (the blocks are usually a memory
map of the GGUF file).

`QuantLinear` computes in one of the numeric modes of `hierdraft.numerics` (`set_numerics`):
"fp32" with `QuantTensor.linear`, "int8" with `QuantTensor.linear_int8` (integer sums are exact
and the block scales are applied in one fixed order, so it is just as batch-invariant). `dequantized_model` turns every such module back into a plain float32
`nn.Linear` / `nn.Embedding` holding the dequantized weights: the reference model the exactness
tests compare against.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

import numpy as np
import torch
from torch import nn

from .numerics import DEFAULT_NUMERICS, resolve_numerics

try:
    from ._core import GreedyHead as _GreedyHead
except ImportError:  # extension not built: no greedy proxies (full products answer)
    _GreedyHead = None

__all__ = [
    "QuantLinear",
    "QuantEmbedding",
    "is_quantized",
    "dequantized_model",
    "set_numerics",
    "model_numerics",
    "weight_formats",
]

COMPUTE_DTYPE = torch.float32
DEVICE = torch.device("cpu")
# The greedy proxy of each QuantLinear that built one (None: it cannot have one). Kept outside
# the module, so that copying a model never tries to copy a proxy.
_GREEDY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
def _check_input(x: torch.Tensor, what: str) -> None:
    if x.device.type != "cpu":
        raise RuntimeError(f"{what} computes on CPU; got a tensor on {x.device} (load a float model for accelerators)")
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{what} is for inference only (no gradients through quantized weights)")


class QuantLinear(nn.Module):
    """A linear layer over a weight kept in GGUF blocks (`weight`: a `QuantTensor` of shape
    (out_features, in_features)); float32 in and out."""

    def __init__(self, weight: Any, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.qweight = weight
        self.out_features, self.in_features = (int(d) for d in weight.shape)
        self.bias = None if bias is None else nn.Parameter(bias.to(COMPUTE_DTYPE), requires_grad=False)
        self.compute_dtype = COMPUTE_DTYPE
        self.numerics = DEFAULT_NUMERICS

    @property
    def device(self) -> torch.device:
        return DEVICE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "QuantLinear")
        if x.dtype != COMPUTE_DTYPE:
            raise TypeError(f"QuantLinear computes in float32; got {x.dtype} input")
        flat = x.detach().reshape(-1, self.in_features).contiguous()
        return self.project(flat).reshape(*x.shape[:-1], self.out_features)

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        """The layer's output for `flat`, a contiguous float32 CPU tensor (rows, in_features) that
        `forward` checked (or a caller that made it itself: `hierdraft.direct_layers`)."""
        out = torch.empty(flat.shape[0], self.out_features, dtype=COMPUTE_DTYPE)
        self.project_array(flat.numpy(), out.numpy())
        return out

    def project_array(self, flat: np.ndarray, out: np.ndarray) -> None:
        """`project` on C-ordered float32 arrays: `flat` (rows, in_features) times the weights
        (plus the bias) into `out` (rows, out_features)."""
        if flat.shape[0]:
            product = self.qweight.linear if self.numerics == "fp32" else self.qweight.linear_int8
            product(flat, out)
        if self.bias is not None:
            out += self.bias.detach().numpy()

    def has_greedy_argmax(self) -> bool:
        """Whether `greedy_argmax` answers for this layer: float32 numerics, no bias, and a Q8_0
        weight with finite block scales (its proxy is built here, once, on first use)."""
        return self._greedy() is not None

    def greedy_argmax(self, flat: np.ndarray) -> np.ndarray:
        """The first maximal index of each row of `project_array(flat)` (NaN counting as maximal,
        as in `torch.argmax`) for C-ordered float32 `flat` (rows, in_features), as int64 (rows,).
        Ranked by the weight's 5-bit proxy with a proven error bound; only the rows the bound cannot
        rule out are computed exactly (`hierdraft._core.GreedyHead`)."""
        head = self._greedy()
        if head is None:
            raise RuntimeError(f"this layer has no greedy proxy ({self.extra_repr()})")
        return head.argmax(flat)

    def _greedy(self) -> Any:
        if _GreedyHead is None or self.numerics != "fp32" or self.bias is not None or self.qweight.qtype != "Q8_0":
            return None
        if self not in _GREEDY:
            try:
                _GREEDY[self] = _GreedyHead(self.qweight)
            except ValueError:  # a non-finite block scale: the bound would not hold
                _GREEDY[self] = None
        return _GREEDY[self]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"qtype={self.qweight.qtype}, numerics={self.numerics}, bias={self.bias is not None}"
        )


class QuantEmbedding(nn.Module):
    """A token embedding over a table kept in GGUF blocks (`weight`: a `QuantTensor` of shape
    (num_embeddings, embedding_dim)). `embed_scale`, when given, multiplies every looked-up row
    (Gemma's scaled embedding). `original_class` is the embedding class this one stands in for
    (`dequantized_model` restores it)."""

    def __init__(
        self,
        weight: Any,
        padding_idx: int | None = None,
        embed_scale: torch.Tensor | None = None,
        original_class: type[nn.Embedding] = nn.Embedding,
    ) -> None:
        super().__init__()
        self.qweight = weight
        self.original_class = original_class
        self.num_embeddings, self.embedding_dim = (int(d) for d in weight.shape)
        self.padding_idx = padding_idx
        self.compute_dtype = COMPUTE_DTYPE
        if embed_scale is not None:
            self.register_buffer("embed_scale", embed_scale.detach().clone(), persistent=False)
        else:
            self.embed_scale = None

    @property
    def device(self) -> torch.device:
        return DEVICE

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        _check_input(input_ids, "QuantEmbedding")
        flat = input_ids.detach().reshape(-1).to(torch.int64).contiguous()
        out = torch.empty(flat.numel(), self.embedding_dim, dtype=COMPUTE_DTYPE)
        if flat.numel():
            self.qweight.dequantize_rows(flat.numpy(), out.numpy())  # raises on ids out of range
        out = out.reshape(*input_ids.shape, self.embedding_dim)
        if self.embed_scale is not None:
            out = out * self.embed_scale.to(COMPUTE_DTYPE)  # as Gemma's scaled embedding does
        return out

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, qtype={self.qweight.qtype}"


def set_numerics(model: nn.Module, numerics: str | None = None) -> nn.Module:
    """Switch every `QuantLinear` of `model` to the numeric mode `numerics` (see the module docs;
    None: `resolve_numerics`). Returns `model`."""
    numerics = resolve_numerics(numerics)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if numerics != "fp32" and layers and not hasattr(layers[0].qweight, "linear_int8"):
        raise RuntimeError("this build of hierdraft._core has no int8 kernels")
    for layer in layers:
        layer.numerics = numerics
    return model


def model_numerics(model: nn.Module) -> str | None:
    """The numeric mode of `model`'s quantized layers (None for a float model)."""
    modes = {m.numerics for m in model.modules() if isinstance(m, QuantLinear)}
    if len(modes) > 1:
        raise RuntimeError(f"the model's quantized layers mix numeric modes {sorted(modes)}")
    return modes.pop() if modes else None


def weight_formats(model: nn.Module) -> dict[str, int]:
    """How many layers of `model` hold their weights in each GGUF format ({} for a float model)."""
    found = Counter(m.qweight.qtype for m in model.modules() if isinstance(m, (QuantLinear, QuantEmbedding)))
    return dict(sorted(found.items()))


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of `model` computes on GGUF blocks."""
    return any(isinstance(m, (QuantLinear, QuantEmbedding)) for m in model.modules())


def dequantized_model(model: nn.Module, keep_fused_norms: bool = False) -> nn.Module:
    """Replace, in place, every quantized layer of `model` by a float32 `nn.Linear` /
    `nn.Embedding` holding its dequantized weights (shared between a tied embedding and head,
    as in the original), and its fused norms by transformers' own modules unless
    `keep_fused_norms`. Returns `model`: transformers' model over the dequantized weights."""
    from .fused_norm import unfuse_norms

    if not keep_fused_norms:
        unfuse_norms(model)
    tables: dict[int, torch.Tensor] = {}

    def table(qweight: Any) -> torch.Tensor:
        key = id(qweight)
        if key not in tables:
            tables[key] = torch.from_numpy(qweight.dequantize())
        return tables[key]

    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLinear):
            plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            plain.weight = nn.Parameter(table(module.qweight), requires_grad=False)
            if module.bias is not None:
                plain.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=False)
        elif isinstance(module, QuantEmbedding):
            plain = _plain_embedding(module, table(module.qweight))
        else:
            continue
        model.set_submodule(name, plain)
    return model


def _plain_embedding(module: QuantEmbedding, weight: torch.Tensor) -> nn.Module:
    plain = nn.Embedding(module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx, device="meta")
    # e.g. Gemma's scaled embedding: an nn.Embedding plus the `embed_scale` buffer set below
    plain.__class__ = module.original_class
    plain.weight = nn.Parameter(weight, requires_grad=False)
    if module.embed_scale is not None:
        plain.register_buffer("embed_scale", module.embed_scale.detach().clone(), persistent=False)
    return plain
