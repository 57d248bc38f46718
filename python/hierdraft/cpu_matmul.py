"""A faster CPU path for the `nn.Linear` layers (and the LM head) of a verification forward over a
few rows.

On CPU, `linear(x, W)` computes `x @ W^T`; for 2 to a few dozen rows the BLAS behind PyTorch's
CPU build takes a path several times slower than for one row (Gemma 3 270M, 2 threads: the body
of a 16-token forward 128 ms against 55 ms for one token, the 262k-row LM head 204 ms for 3 rows
against 52 ms for one). Two replacements, the first available one is used:

- hierdraft's own kernel (`hierdraft._core.linear_rows`, Rust, AVX2/FMA): streams each weight
  row once, multiplies it with every input row while it is in L1 and prefetches ahead, so 17
  rows of the LM head cost little more than one; each row's result is independent of the
  others in the call;
- otherwise `(W @ x^T)^T` in PyTorch, which streams each weight matrix once per call.

Either way the products and sums are the same; only the accumulation order differs, exactly as
it already does between a one-token and a many-token forward.

`small_batch_linears(model, rows)` applies `few_rows_linear` to every plain `nn.Linear` of the
model for the duration of one forward with 2..`MAX_ROWS` rows; layers that already carry an
instance-level `forward` (e.g. accelerate hooks) are left alone.
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Iterator
from typing import Any

import torch

try:
    from ._core import kernels_use_simd, linear_rows
except ImportError:  # extension not built (pure-Python tests): PyTorch's weight-major form
    linear_rows = None
    FAST_KERNEL = False
else:
    FAST_KERNEL = bool(kernels_use_simd())

MAX_ROWS = 64

_LINEARS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _kernel_takes(weight: torch.Tensor) -> bool:
    """Whether hierdraft's kernel can multiply by this weight (float32, contiguous, on CPU)."""
    return (
        FAST_KERNEL
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.is_contiguous()
        and weight.dim() == 2
    )


def kernel_applies(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether `few_rows_linear` computes `x @ weight.T` with hierdraft's kernel."""
    return _kernel_takes(weight) and x.device.type == "cpu" and x.dtype == torch.float32


def few_rows_linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`, computed by hierdraft's kernel (float32 on CPU) or as `(W @ x^T)^T`."""
    weight = layer.weight
    flat = x.reshape(-1, x.shape[-1])
    if kernel_applies(weight, flat):
        flat = flat.contiguous()
        y = torch.empty(flat.shape[0], weight.shape[0], dtype=torch.float32)
        linear_rows(flat.detach().numpy(), weight.detach().numpy(), y.numpy())
    else:
        y = (weight @ flat.T).T
    if layer.bias is not None:
        y = y + layer.bias
    return y.reshape(*x.shape[:-1], weight.shape[0])


def _plain_linears(model: Any) -> list[torch.nn.Linear]:
    try:
        found = _LINEARS.get(model)
    except TypeError:
        found = None
    if found is None:
        found = [
            m for m in model.modules() if type(m) is torch.nn.Linear and "forward" not in vars(m)
        ]
        try:
            _LINEARS[model] = found
        except TypeError:
            pass
    return found


@contextlib.contextmanager
def small_batch_linears(model: Any, rows: int) -> Iterator[None]:
    """Within the block, the model's plain linear layers use `few_rows_linear` when the forward
    has 2..MAX_ROWS rows; otherwise nothing changes."""
    if not 2 <= rows <= MAX_ROWS:
        yield
        return
    layers = _plain_linears(model)
    for layer in layers:
        layer.forward = types.MethodType(few_rows_linear, layer)  # type: ignore[method-assign]
    # With the kernel running the linear layers on its own threads, PyTorch's remaining ops of
    # the forward (norms, attention, activations: small at this row count) run on one thread:
    # two thread pools spinning on the same cores slow each other down many times over.
    threads = torch.get_num_threads()
    if layers and _kernel_takes(layers[0].weight):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for layer in layers:
            vars(layer).pop("forward", None)
