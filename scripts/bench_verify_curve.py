#!/usr/bin/env python3
"""The cost curve of one verification forward: 1 + n rows (the last accepted token and n draft
nodes) at a given context length, on the model hierdraft decodes with.

For each context (tokens already in the KV cache) and row count it times, as hierdraft's decoding
loop runs them (PyTorch on one thread, hierdraft's kernels on their own pool):
- `body`: the transformer layers over the rows (the tree is one chain of n nodes), through the
  direct layers (`hierdraft.direct_layers`) where the model has them;
- `modules`: the same through transformers' modules (the direct layers' reference, same bits), in
  the same run;
- `head 1`: the LM head over one row (what the greedy walk asks per accepted level);
- `head all`: the LM head over every row at once;
- `step`: body + one head row per accepted level for `--accepted` levels (the walk's cost).
Medians in ms over `--repeats` runs; compare ratios within one run (the machine may be shared).
`--float` measures the float32 model transformers dequantizes from the GGUF instead; `--numerics
int8` the quantized model in the int8 numeric mode.

Run: .venv/bin/python scripts/bench_verify_curve.py [--contexts 200 1000] [--rows 1 2 4 8 16 32]
     [--numerics fp32|int8]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hierdraft.cpu_attention import kernel_attention
from hierdraft.cpu_matmul import kernel_linears, kernel_threads
from hierdraft.direct_layers import direct_layers
from hierdraft.kv_cache import TreeKVCache
from hierdraft.models import load_model
from hierdraft.numerics import NUMERICS
from hierdraft.tree_forward import apply_head
from hierdraft.tree_mask import build_tree_inputs
from hierdraft.tree_probe import check_tree_attention
from timing import median_ms  # scripts/timing.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model path or name (default: the embedded Gemma 3 270M)")
    parser.add_argument("--float", action="store_true", help="the dequantized float32 model")
    parser.add_argument("--numerics", choices=NUMERICS, default=None,
                        help="numeric mode of the quantized model (default: fp32)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--accepted", type=float, default=3.0, help="accepted levels per step for `step`")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model, quantized=False if args.float else None, numerics=args.numerics)
    layout = check_tree_attention(model)
    vocab = layout.vocab_size or 1000
    rng = np.random.default_rng(0)
    kind = "float32" if args.float else f"quantized, {args.numerics or 'fp32'} numerics"
    print(f"model {type(model).__name__}, {kind}, threads {args.threads}")
    print(f"{'context':>7} {'rows':>4} | {'body':>7} {'modules':>7} {'head 1':>7} {'head all':>8} | {'step':>7}  (ms)")
    with torch.inference_mode(), kernel_threads(model), kernel_linears(model), kernel_attention(model):
        for context in args.contexts:
            cache = TreeKVCache(layout)
            prompt = rng.integers(100, vocab - 1, size=context).tolist()
            inputs = build_tree_inputs(layout, prompt, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                       np.zeros(0, np.int64), 0, cache.cached_lengths())
            kwargs = {layout.cache_kwarg: cache.cache, "use_cache": True}
            model.base_model(input_ids=inputs.input_ids, position_ids=inputs.position_ids, **kwargs)
            cache.commit(context, np.arange(context))
            for rows in args.rows:
                n = rows - 1
                tokens = rng.integers(100, vocab - 1, size=n)
                parents = np.arange(n, dtype=np.int64) - 1
                depths = np.arange(1, n + 1, dtype=np.int64)
                chain = [int(rng.integers(100, vocab - 1))]
                tree = build_tree_inputs(layout, chain, tokens, parents, depths, cache.length, cache.cached_lengths())
                hidden: list[torch.Tensor] = []

                def body() -> None:
                    out = model.base_model(input_ids=tree.input_ids, position_ids=tree.position_ids,
                                           attention_mask=tree.attention_mask, **kwargs)
                    hidden[:] = [out.last_hidden_state[0]]
                    cache.commit(rows, np.zeros(0, np.int64))  # keep nothing: the cache stays at `context`

                def direct_body() -> None:
                    with direct_layers(model):
                        body()

                body_ms = median_ms(direct_body, args.repeats)
                modules_ms = median_ms(body, args.repeats)
                h = hidden[0]
                head1 = median_ms(lambda: apply_head(model, h[:1]), args.repeats)
                head_all = median_ms(lambda: apply_head(model, h), args.repeats)
                step = body_ms + head1 * min(rows, 1 + args.accepted)
                print(f"{context:>7} {rows:>4} | {body_ms:>7.1f} {modules_ms:>7.1f} {head1:>7.1f} {head_all:>8.1f} | {step:>7.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
