#!/usr/bin/env python3
"""Write the default model's Hugging Face checkpoint once from its GGUF, and print its folder.

vLLM serves a Hugging Face checkpoint folder. hierdraft's default model ships as a GGUF file;
``hierdraft.load_default(dtype)`` converts it once into a cached checkpoint folder (config,
safetensors weights, fast tokenizer, and hierdraft's marker file, which the vLLM proposer reads
to find the default stores of that tokenizer). This script makes sure that folder exists for the
dtype, checks that it holds what vLLM reads, and prints its path (the only line on stdout).

    .venv/bin/python scripts/gpu_write_checkpoint.py [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REQUIRED = ("config.json", "tokenizer.json", "tokenizer_config.json")


def checkpoint_problems(folder: Path) -> list[str]:
    """What a checkpoint folder lacks for vLLM (empty when it is complete)."""
    from hierdraft.models import _COMPLETE_MARKER

    problems = [f"missing {name}" for name in (*REQUIRED, _COMPLETE_MARKER) if not (folder / name).is_file()]
    if not list(folder.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    config = folder / "config.json"
    if config.is_file():
        arch = json.loads(config.read_text()).get("architectures") or []
        if not arch:
            problems.append("config.json names no architecture")
    return problems


def write_checkpoint(dtype: str) -> Path:
    """The converted default model's folder for ``dtype`` (converted now if it is missing)."""
    from hierdraft.models import _COMPLETE_MARKER, default_model_dir, load_default

    folder = default_model_dir(dtype)
    if not (folder / _COMPLETE_MARKER).is_file():
        # quantized=False: in float32 on CPU the default load computes on the GGUF's own blocks
        # and writes no checkpoint; the float path converts from the GGUF once and caches it
        load_default(dtype=dtype, quantized=False)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", help="float32 or bfloat16 (default bfloat16, vLLM's usual)")
    args = ap.parse_args(argv)
    folder = write_checkpoint(args.dtype)
    problems = checkpoint_problems(folder)
    if problems:
        print(f"checkpoint {folder} is incomplete: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
