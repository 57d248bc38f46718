#!/usr/bin/env python3
"""Cost of a float32 model's linear layers over a few rows on CPU: PyTorch vs hierdraft's kernel.

For 1, 4, 9 and 17 rows (a verification forward over a draft tree of 0, 3, 8 and 16 nodes), times
- the model body (all transformer layers) with PyTorch's own `linear`, and with the layers
  switched to `cpu_matmul.kernel_linear` as hierdraft's forwards do;
- the LM head alone, with `torch.nn.functional.linear` and with `kernel_linear`.
The model is the float32 (dequantized) one; `scripts/bench_verify_curve.py` measures the
quantized path hierdraft uses for GGUF models.
Prints medians in ms; compare the ratios within one run (the machine may be shared).

Run: .venv/bin/python scripts/bench_linear_rows.py [--model PATH_OR_NAME] [--repeats 7]
"""

from __future__ import annotations

import argparse

import torch

from hierdraft.cpu_matmul import FAST_KERNEL, kernel_linear, kernel_linears, kernel_threads
from hierdraft.models import load_model
from timing import median_ms  # scripts/timing.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model path or name (default: the embedded Gemma 3 270M)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model, quantized=False)
    base, head = model.base_model, model.get_output_embeddings()
    hidden_size = head.weight.shape[1]
    print(f"kernel available: {FAST_KERNEL}; threads: {args.threads}; head {tuple(head.weight.shape)}")
    print(f"{'rows':>4} | {'body torch':>10} {'body kernel':>11} | {'head torch':>10} {'head kernel':>11}")
    with torch.inference_mode():
        for rows in (1, 4, 9, 17):
            ids = torch.randint(100, 5000, (1, rows))
            h = torch.randn(rows, hidden_size)

            def body_kernel() -> None:
                with kernel_linears(model), kernel_threads(model):
                    base(input_ids=ids, use_cache=False)

            body_torch = median_ms(lambda: base(input_ids=ids, use_cache=False), args.repeats)
            body_fast = median_ms(body_kernel, args.repeats)
            head_torch = median_ms(lambda: torch.nn.functional.linear(h, head.weight), args.repeats)
            head_fast = median_ms(lambda: kernel_linear(head, h), args.repeats)
            print(f"{rows:>4} | {body_torch:>10.1f} {body_fast:>11.1f} | {head_torch:>10.1f} {head_fast:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
