"""GGUF block bytes for the kernel tests: the gguf package's quantizer and dequantizer over
(rows, row_bytes) arrays, `QuantTensor`s over such bytes, and float bit patterns to compare."""

from __future__ import annotations

import gguf
import numpy as np
from gguf import GGMLQuantizationType as GT

from hierdraft import _core

# Byte offsets of the f16 scales inside one K-quant super-block (d, and dmin where it has one).
K_SCALE_OFFSETS = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def bits(a: np.ndarray) -> np.ndarray:
    """The float32 bit patterns of `a` (so that comparisons are bit for bit, NaNs included)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def block(qtype: str) -> tuple[int, int]:
    """(values, bytes) of one block."""
    return gguf.GGML_QUANT_SIZES[GT[qtype]]


def quantize(data: np.ndarray, qtype: str) -> np.ndarray:
    """`data` (rows, cols) float32 as GGUF bytes (rows, row_bytes), by the gguf package."""
    q = gguf.quants.quantize(data, GT[qtype])
    return np.ascontiguousarray(q).view(np.uint8).reshape(data.shape[0], -1)


def gguf_dequantize(raw: np.ndarray, qtype: str) -> np.ndarray:
    """The gguf package's float32 values of GGUF bytes (rows, row_bytes)."""
    out = gguf.quants.dequantize(np.ascontiguousarray(raw), GT[qtype])
    return np.ascontiguousarray(out, dtype=np.float32).reshape(raw.shape[0], -1)


def quant_tensor(raw: np.ndarray, qtype: str) -> _core.QuantTensor:
    """A `QuantTensor` over GGUF bytes (rows, row_bytes)."""
    values, size = block(qtype)
    cols = raw.shape[1] // size * values
    return _core.QuantTensor.from_bytes(qtype, np.ascontiguousarray(raw).reshape(-1), raw.shape[0], cols)
