"""hierdraft's CPU kernels in the model's linear layers, and the threads they run on.

The rule (batch invariance): on CPU, a model that runs hierdraft's kernels runs them in every
forward hierdraft makes, for every row count, one included. Each output element of those
kernels is summed in one fixed order that depends only on the inner dimension, so a row's numbers
never depend on what else is in its batch: the root row of a tree step equals the row of a plain
step, the prompt rows of a prefill that also carries a draft tree equal those of a plain prefill,
and "greedy output with drafts equals plain decoding" holds by construction for the linear
layers instead of by luck. (PyTorch's BLAS picks different blockings for different row counts,
and so does llama.cpp's batched decode, which is why neither is used for verification here.)

- `QuantLinear` layers (GGUF models, `quant_modules`) always compute with the quantized kernel.
- Plain float32 `nn.Linear` layers of a CPU model are routed through `hierdraft._core.linear_rows`
  for the duration of hierdraft's forwards (`kernel_linears`); layers that already carry an
  instance-level `forward` (e.g. accelerate hooks) are left alone. Without AVX2/FMA the kernel's
  portable path would be slow, so such models then keep PyTorch's own kernels.

The kernels run on their own thread pool. PyTorch's threads would spin on the same two cores
between ops and slow both down many times over, so `kernel_threads` runs PyTorch on one thread
while a request decodes (the rest of the forward, norms and attention, is small).
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from .quant_modules import QuantLinear, is_quantized

try:
    from ._core import kernels_path, kernels_use_simd, linear_rows
except ImportError:  # extension not built (pure-Python tests): PyTorch's own kernels
    linear_rows = None
    FAST_KERNEL = False
    KERNELS_PATH = "portable"
else:
    FAST_KERNEL = bool(kernels_use_simd())
    KERNELS_PATH = str(kernels_path())

# Rows up to which one call of the float32 kernel over every row of a tree beats one head call
# per tree level (the float32 kernel's cost grows slowly with rows; see the README's kernel table).
FLOAT_HEAD_ROWS_AT_ONCE = 24
# A quantized head's cost grows with every row beyond a few (it converts the blocks for each
# row), so it computes all rows of small trees only, and otherwise the walk's likely rows.
QUANT_HEAD_ROWS_AT_ONCE = 4
# Kernel paths on which a greedy one-row head goes through the head's proxy (`greedy_head`). On
# the AVX-512 path the full product of one row holds 8 weight rows' accumulators and beat the
# proxy pass (scripts/bench_greedy_head.py: paired ratio 1.15 for the proxy, 6.00 against 5.22 ms,
# one run on an AMD EPYC with AVX-512), so there the head computes every logit; the proxy's 112 MiB
# are then never built.
GREEDY_PROXY_PATHS = frozenset({"avx2", "portable"})

_LINEARS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _kernel_takes(weight: torch.Tensor) -> bool:
    """Whether hierdraft's float32 kernel can multiply by this weight (float32, contiguous, on CPU)."""
    return (
        FAST_KERNEL
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.is_contiguous()
        and weight.dim() == 2
    )


def kernel_applies(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether `kernel_linear` computes `x @ weight.T` with hierdraft's float32 kernel."""
    return _kernel_takes(weight) and x.device.type == "cpu" and x.dtype == torch.float32


def kernel_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` computed by hierdraft's float32 kernel (PyTorch's `linear` when it cannot)."""
    weight = layer.weight
    flat = x.reshape(-1, x.shape[-1])
    if not kernel_applies(weight, flat):
        return torch.nn.functional.linear(x, weight, layer.bias)
    flat = flat.detach().contiguous()
    y = torch.empty(flat.shape[0], weight.shape[0], dtype=torch.float32)
    if flat.shape[0]:
        linear_rows(flat.numpy(), weight.detach().numpy(), y.numpy())
    if layer.bias is not None:
        y += layer.bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


def _plain_linears(model: Any) -> list[torch.nn.Linear]:
    """The model's plain float32 CPU linear layers the kernel can take (cached per model)."""
    try:
        found = _LINEARS.get(model)
    except TypeError:
        found = None
    if found is None:
        found = [
            m
            for m in model.modules()
            if type(m) is torch.nn.Linear and "forward" not in vars(m) and _kernel_takes(m.weight)
        ]
        try:
            _LINEARS[model] = found
        except TypeError:
            pass
    return found


def uses_kernels(model: Any) -> bool:
    """Whether hierdraft's forwards of `model` run its CPU kernels (asked at every forward: the
    cached list of plain linears first, the walk over the modules only when it is empty)."""
    return bool(_plain_linears(model)) or is_quantized(model)


@contextlib.contextmanager
def kernel_linears(model: Any) -> Iterator[None]:
    """Within the block, the model's plain float32 CPU linear layers compute with the kernel."""
    layers = _plain_linears(model)
    for layer in layers:
        layer.forward = types.MethodType(kernel_linear, layer)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)


@contextlib.contextmanager
def kernel_threads(model: Any) -> Iterator[None]:
    """Within the block, PyTorch runs on one thread if the model computes with hierdraft's kernels."""
    if not uses_kernels(model):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def apply_linear(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`, through the float32 kernel for a plain float32 CPU `nn.Linear`."""
    if type(layer) is torch.nn.Linear and "forward" not in vars(layer):
        return kernel_linear(layer, x)
    return layer(x)


def head_rows_at_once(head: Any, hidden: torch.Tensor) -> int:
    """How many rows one LM head call may cover for about the price of one: a tree with at most
    that many rows is computed at once; a larger one gets its likely rows together."""
    if hidden.device.type != "cpu":
        return 0
    if isinstance(head, QuantLinear):
        return QUANT_HEAD_ROWS_AT_ONCE
    if type(head) is torch.nn.Linear and kernel_applies(head.weight, hidden):
        return FLOAT_HEAD_ROWS_AT_ONCE
    return 0
