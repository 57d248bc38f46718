#!/usr/bin/env python3
"""Cost of `x @ W.T` with W kept in its GGUF blocks (`QuantTensor.linear`) against PyTorch's
float32 `torch.nn.functional.linear` on the dequantized W (and hierdraft's `linear_rows` on it),
for the default model's own tensors (Gemma 3 270M: the Q8_0 262144 x 640 LM head and one layer's
projections), from one row (a decoding step) through draft-tree sizes to prompt prefills.

Prints medians in ms; compare the ratios within one run (the machine may be shared). Run it alone
(`flock /tmp/hierdraft-timing.lock .venv/bin/python scripts/bench_qlinear.py`).

Run: .venv/bin/python scripts/bench_qlinear.py [--rows 1,4,16,64,128,512] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hierdraft import _core
from hierdraft.models import default_gguf_path
from timing import median_ms  # scripts/timing.py

TENSORS = [
    "token_embd.weight",  # the tied LM head
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.0.ffn_gate.weight",
    "blk.0.ffn_down.weight",
]
HEAD_MAX_ROWS = 128  # the LM head only ever sees a draft tree's rows, never a whole prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,4,16,64,128,512")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tensors", default=",".join(TENSORS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows_list = [int(r) for r in args.rows.split(",")]
    gguf = _core.GgufFile(default_gguf_path())
    print(f"threads {args.threads}; simd {_core.kernels_use_simd()}; median of {args.repeats} (ms)")
    print(f"{'tensor':<26} {'type':<5} {'shape':>12} {'rows':>5} | {'qlinear':>9} {'torch f32':>9} {'linear_rows':>11} | {'torch/q':>7}")
    rng = np.random.default_rng(0)
    for name in args.tensors.split(","):
        q = gguf.matrix(name)
        w = q.dequantize()
        wt = torch.from_numpy(w)
        n, k = q.shape
        for rows in rows_list:
            if name == "token_embd.weight" and rows > HEAD_MAX_ROWS:
                continue
            x = rng.standard_normal((rows, k), dtype=np.float32)
            xt = torch.from_numpy(x)
            out = np.empty((rows, n), np.float32)
            t_q = median_ms(lambda: q.linear(x, out), args.repeats)
            with torch.inference_mode():
                t_torch = median_ms(lambda: torch.nn.functional.linear(xt, wt), args.repeats)
            t_rows = median_ms(lambda: _core.linear_rows(x, w, out), args.repeats)
            print(
                f"{name:<26} {q.qtype:<5} {f'{n}x{k}':>12} {rows:>5} | {t_q:9.3f} {t_torch:9.3f} {t_rows:11.3f}"
                f" | {t_torch / t_q:7.2f}"
            )
        del w, wt


if __name__ == "__main__":
    main()
