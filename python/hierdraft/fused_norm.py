"""RMS norms computed by one kernel call (`hierdraft._core.rms_norm`) instead of PyTorch's eight ops.

A small model's decoding step is dominated by per-op overhead: Gemma 3 270M runs 109 RMS norms a
step, each about eight tensor operations in transformers' module. `fuse_norms` swaps the norms of a
model, for the norm classes whose arithmetic it knows, for `FusedRMSNorm`: `(x * r) * scale` with
`r = 1 / sqrt(mean(x**2) + eps)` per row, where `scale` is the norm's weight, plus one for the
Gemma family (which stores `w` and multiplies by `1 + w`). The kernel sums each row in one fixed
order, so a row's result does not depend on its batch; it can differ from PyTorch's reduction in
the last bit. Inputs that are not float32 on CPU go to the original module. `unfuse_norms` puts
the original modules back (the float reference model of the exactness tests).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

try:
    from ._core import rms_norm as _rms_norm
except ImportError:  # extension not built: no GGUF models, the only ones whose norms are fused
    _rms_norm = None

__all__ = ["FusedRMSNorm", "fuse_norms", "unfuse_norms", "NORM_SHIFT"]

# The norm classes `fuse_norms` replaces: the constant added to the weight to get the scale.
NORM_SHIFT = {
    "Gemma3RMSNorm": 1.0,
    "Gemma2RMSNorm": 1.0,
    "GemmaRMSNorm": 1.0,
    "LlamaRMSNorm": 0.0,
    "MistralRMSNorm": 0.0,
    "Qwen2RMSNorm": 0.0,
    "Qwen3RMSNorm": 0.0,
}


def _eps(module: nn.Module) -> float:
    for name in ("eps", "variance_epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, float):
            return value
    raise AttributeError(f"{type(module).__name__} has no eps")


class FusedRMSNorm(nn.Module):
    """`original` (an RMS norm of a class in `NORM_SHIFT`) computed by hierdraft's kernel."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: no second weight
        self.weight = original.weight
        self.eps = _eps(original)
        shift = NORM_SHIFT[type(original).__name__]
        self.register_buffer("scale", (original.weight.detach().float() + shift).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
            return self.original(x)
        return self.normalize(x.detach().contiguous())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The norm of every row of `x`, a contiguous float32 CPU tensor whose last dimension is
        the norm's (checked by `forward`, or by a caller that made `x` itself)."""
        out = torch.empty_like(x)
        self.normalize_array(x.numpy(), out.numpy())
        return out

    def normalize_array(self, x: np.ndarray, out: np.ndarray) -> None:
        """`normalize` on C-ordered float32 arrays: the norm of every row of `x` into `out` (same
        shape, last dimension the norm's). `hierdraft.direct_layers` calls it with its own arrays."""
        if x.size:
            scale = self._buffers["scale"].numpy()
            width = scale.shape[0]
            _rms_norm(x.reshape(-1, width), scale, self.eps, out.reshape(-1, width))

    def extra_repr(self) -> str:
        return f"{type(self.original).__name__}{tuple(self.scale.shape)}, eps={self.eps}"


def fuse_norms(model: nn.Module) -> int:
    """Replace, in place, every known RMS norm of `model` by a `FusedRMSNorm`; returns how many."""
    found = [(name, m) for name, m in model.named_modules() if type(m).__name__ in NORM_SHIFT]
    for name, module in found:
        model.set_submodule(name, FusedRMSNorm(module))
    return len(found)


def unfuse_norms(model: nn.Module) -> int:
    """Put back the original module of every `FusedRMSNorm` of `model`; returns how many."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, FusedRMSNorm)]
    for name, module in found:
        model.set_submodule(name, module.original)
    return len(found)
