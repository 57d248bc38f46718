#!/usr/bin/env python3
"""The linear-layer calls of one decoding step of the default model (Gemma 3 270M), in the
order its forward makes them, with Python work between calls: how long a step's linears take
when the kernel threads must wake up, or are still spinning, after each gap.

Per step: 18 layers x (q, k, v, o, gate, up, down) = 126 calls of the layers' own GGUF tensors,
then (unless --no-head) the 262144 x 640 LM head for one row. Before every call the calling
thread busy-waits `--gap` microseconds in Python (holding the GIL, as the forward's torch ops
do).

Prints, per row count: the median and p90 of the body calls' total per step (time inside the
kernel calls only, gaps excluded), the median per call of each projection, and the head's
median. Indicative on a shared machine: run it alone,
`flock /tmp/hierdraft-timing.lock .venv/bin/python scripts/bench_forward_calls.py`.

Run: .venv/bin/python scripts/bench_forward_calls.py [--rows 1,4,16] [--gap 20] [--steps 40]
     [--no-head] [--numerics fp32|int8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np

from hierdraft import _core
from hierdraft.models import default_gguf_path

LAYERS = 18
PROJECTIONS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
HEAD = "token_embd.weight"


def busy_wait(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


class Step:
    """The calls of one step at a given row count: each a (label, callable) pair."""

    def __init__(self, gguf: object, rows: int, numerics: str, head: bool) -> None:
        rng = np.random.default_rng(0)
        self.calls: list[tuple[str, object]] = []
        for layer in range(LAYERS):
            for p in PROJECTIONS:
                t = gguf.matrix(f"blk.{layer}.{p}.weight")
                x = rng.standard_normal((rows, t.shape[1]), dtype=np.float32)
                self.calls.append((p, self._single_call(t, x, np.empty((rows, t.shape[0]), np.float32), numerics)))
        if head:
            t = gguf.matrix(HEAD)
            x = rng.standard_normal((1, t.shape[1]), dtype=np.float32)
            self.calls.append(("head", self._single_call(t, x, np.empty((1, t.shape[0]), np.float32), numerics)))

    @staticmethod
    def _single_call(t: object, x: np.ndarray, out: np.ndarray, numerics: str):  # noqa: ANN205
        fn = t.linear if numerics == "fp32" else t.linear_int8
        return lambda: fn(x, out)

    def run(self, gap_us: float, per_call: dict[str, list[float]]) -> float:
        """One step; returns the body calls' total (s) and appends each call's time to per_call."""
        total = 0.0
        for label, call in self.calls:
            busy_wait(gap_us)
            start = time.perf_counter()
            call()
            took = time.perf_counter() - start
            per_call[label].append(took)
            if label != "head":
                total += took
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,4,16")
    parser.add_argument("--gap", type=float, default=20.0, help="busy-wait before each call (us)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-head", action="store_true")
    parser.add_argument("--numerics", default="fp32", choices=["fp32", "int8"])
    args = parser.parse_args()
    gguf = _core.GgufFile(default_gguf_path())
    print(f"gap {args.gap:g} us; numerics {args.numerics}; {args.steps} steps (ms)")
    for rows in (int(r) for r in args.rows.split(",")):
        step = Step(gguf, rows, args.numerics, head=not args.no_head)
        per_call: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.warmup):
            step.run(args.gap, defaultdict(list))
        totals = [step.run(args.gap, per_call) for _ in range(args.steps)]
        body_calls = sum(1 for label, _ in step.calls if label != "head")
        print(
            f"rows {rows:>3}: body ({body_calls} calls) p50 {statistics.median(totals) * 1e3:7.3f}"
            f"  p90 {p90(totals) * 1e3:7.3f}"
        )
        for label, times in per_call.items():
            print(
                f"    {label:<26} p50 {statistics.median(times) * 1e6:8.1f} us"
                f"  p90 {p90(times) * 1e6:8.1f} us"
            )


if __name__ == "__main__":
    main()
