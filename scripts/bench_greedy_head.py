#!/usr/bin/env python3
"""The greedy proxy head against the full LM head product, on the default model's own head and
the hidden states of real prompts.

For each hidden row (the last --rows-per-prompt positions of each of --prompts Spec-Bench
prompts, run through the model's body), one row at a time: the full product
(`QuantTensor.linear` over all 262144 rows, then numpy's argmax) and `QuantLinear.greedy_argmax`
(the 5-bit proxy pass, then the exact products of the candidate rows), alternating, so that both
see the same machine state. Checks that both give the same index, and prints the median times,
their paired ratio, the proxy's size and how many rows were computed exactly (median, p90, max).
Run it alone on the machine:

  flock /tmp/hierdraft-timing.lock .venv/bin/python scripts/bench_greedy_head.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--rows-per-prompt", type=int, default=16)
    parser.add_argument("--questions", default=None, help="Spec-Bench question.jsonl (default: the bench's)")
    args = parser.parse_args()

    import hierdraft
    from hierdraft import _core
    from hierdraft.questions import default_questions_path

    model, tokenizer = hierdraft.load_default()
    head = model.get_output_embeddings()
    from pathlib import Path

    questions = Path(args.questions) if args.questions else default_questions_path()
    if questions is None:
        raise SystemExit("no question file found: pass --questions PATH (Spec-Bench question.jsonl)")
    lines = questions.read_text().splitlines()
    step = max(1, len(lines) // args.prompts)
    rows = []
    for line in lines[::step][: args.prompts]:
        ids = tokenizer("Question: " + json.loads(line)["turns"][0] + "\n\nAnswer:", return_tensors="pt").input_ids
        with torch.inference_mode():
            rows.append(model.base_model(input_ids=ids).last_hidden_state[0, -args.rows_per_prompt :])
    hidden = torch.cat(rows).contiguous().numpy()

    start = time.perf_counter()
    proxy = _core.GreedyHead(head.qweight)
    built = time.perf_counter() - start
    head.greedy_argmax(hidden[:1])  # builds the layer's own proxy
    _, exact_rows = proxy.argmax(hidden, report=True)

    out = np.empty((1, head.out_features), dtype=np.float32)
    full_t, greedy_t, mismatches = [], [], 0
    for i in range(len(hidden)):
        x = np.ascontiguousarray(hidden[i : i + 1])
        t0 = time.perf_counter()
        head.qweight.linear(x, out)
        want = int(out[0].argmax())
        t1 = time.perf_counter()
        got = int(head.greedy_argmax(x)[0])
        t2 = time.perf_counter()
        full_t.append(t1 - t0)
        greedy_t.append(t2 - t1)
        mismatches += got != want
    ratio = statistics.median(g / f for g, f in zip(greedy_t, full_t))
    print(f"{len(hidden)} hidden rows; head {head.qweight.qtype} {head.qweight.shape}, {head.qweight.nbytes / 2**20:.0f} MiB; "
          f"proxy {proxy.proxy_bytes / 2**20:.0f} MiB, built in {built:.2f} s")
    print(f"full product + argmax: median {statistics.median(full_t) * 1e3:.2f} ms")
    print(f"greedy_argmax:         median {statistics.median(greedy_t) * 1e3:.2f} ms (paired ratio {ratio:.3f})")
    print(f"rows computed exactly: median {np.median(exact_rows):.0f}, p90 {np.percentile(exact_rows, 90):.0f}, "
          f"max {max(exact_rows)}; mismatches: {mismatches}")


if __name__ == "__main__":
    main()
