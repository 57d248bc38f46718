"""The numeric modes a quantized model's linear layers can compute in (names, default, selection).

- ``"fp32"`` (the default): weights dequantized in registers, products accumulated in float32;
  the numbers of the float model holding the dequantized weights.
- ``"int8"``: input rows quantized to int8 per block of 32 values, integer dot products with the
  blocks' integer values, as llama.cpp does; faster, further from the float model.
Both are batch-invariant, so drafting and plain decoding agree token for token within a mode.
This module imports nothing heavy: the CLI reads it before torch is loaded.
"""

from __future__ import annotations

import os

__all__ = ["NUMERICS", "DEFAULT_NUMERICS", "resolve_numerics"]

NUMERICS = ("fp32", "int8")
DEFAULT_NUMERICS = "fp32"


def resolve_numerics(name: str | None = None) -> str:
    """A numeric mode by name; None reads `HIERDRAFT_NUMERICS`, then the default ("fp32")."""
    if name is None:
        name = os.environ.get("HIERDRAFT_NUMERICS", "").strip() or DEFAULT_NUMERICS
    name = str(name).strip().lower()
    if name not in NUMERICS:
        raise ValueError(f"unknown numeric mode {name!r}; use one of {', '.join(NUMERICS)}")
    return name
