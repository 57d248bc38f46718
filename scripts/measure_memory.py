#!/usr/bin/env python3
"""Resident memory of loading the default model and generating a first reply, stage by stage.

Prints the process's RSS (and its file-backed and anonymous parts, from /proc/self/status) after
`import hierdraft, transformers`, after loading the model, and after a first reply, plus the
difference to the first stage and the seconds each stage took (run it in a fresh process: the
load time is a first load's). `--float` loads the float32 model transformers dequantizes from the
GGUF (the path before quantized verification); `--drafter` also builds the default drafter and
drafts the reply with it.

Run: .venv/bin/python scripts/measure_memory.py [--float] [--drafter] [--tokens 64]
"""

from __future__ import annotations

import argparse
import gc
import time


def rss_mb() -> dict[str, float]:
    """RSS and its parts in MB (Linux /proc/self/status)."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--float", action="store_true", help="load the dequantized float32 model")
    parser.add_argument("--drafter", action="store_true", help="draft the reply with the default drafter")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    start = time.perf_counter()
    import transformers  # noqa: F401

    import hierdraft

    stages = [("import hierdraft, transformers", rss_mb(), time.perf_counter() - start)]

    def stage(name: str) -> None:
        gc.collect()
        stages.append((name, rss_mb(), time.perf_counter() - start - sum(s[2] for s in stages)))

    model, tokenizer = hierdraft.load_default(quantized=False if args.float else None)
    stage("load_default()")
    drafter = None
    if args.drafter:
        drafter = hierdraft.AdaptiveDrafter(hierdraft.default_drafter(tokenizer, model=model))
        stage("default_drafter()")
    ids = tokenizer("Question: What is a suffix array?\n\nAnswer:", return_tensors="pt").input_ids
    result = hierdraft.generate(model, ids, drafter=drafter, max_new_tokens=args.tokens)
    stage(f"first reply ({len(result.tokens)} tokens)")

    base = stages[0][1]["VmRSS"]
    print(f"{'stage':<36} {'RSS':>8} {'+RSS':>8} {'anon':>8} {'file':>8}  (MB) {'time (s)':>9}")
    for name, m, seconds in stages:
        print(
            f"{name:<36} {m['VmRSS']:>8.0f} {m['VmRSS'] - base:>+8.0f} "
            f"{m.get('RssAnon', 0):>8.0f} {m.get('RssFile', 0):>8.0f}       {seconds:>9.1f}"
        )
    params = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    print(f"parameters held as tensors: {params:.0f} MB")


if __name__ == "__main__":
    main()
