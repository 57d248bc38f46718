#!/usr/bin/env python3
"""vLLM on a GPU with hierdraft, vLLM's ngram, vLLM's suffix and no speculation, on Spec-Bench.

Run with the Python of vLLM's own environment (hierdraft installed there with ``--no-deps``),
on a machine with a CUDA GPU:

    $VLLM_PY scripts/gpu_vllm_bench.py --model CHECKPOINT --out gpu-out/vllm

For each method a child process (``one``) loads ``vllm.LLM`` on the checkpoint with that
method's ``speculative_config``, warms up, then decodes every selected prompt greedily, first
one request at a time (concurrency 1), then all at once with ``max_num_seqs`` = 32 (concurrency
32). It records every output's token ids, the wall time and vLLM's speculative-decoding counters.
The parent then checks that each method's greedy outputs equal those of no speculation at the
same concurrency (and reports how vLLM's own outputs without speculation differ between the two
concurrencies, the noise floor of batch-dependent numerics), and writes ``results.json`` and
``report.md``: output tokens/s per method and concurrency, speedup over no speculation, and
mismatches. Exit status 0 when every output matches, 3 when some differ, 1 on a failed run.

Prompts are the first turns in hierdraft's bench template (``hierdraft.prompts``), tokenized with
the checkpoint's tokenizer, the same token ids for every method.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("none", "hierdraft", "ngram", "suffix")
REFERENCE = "none"
EXIT_MISMATCH = 3


def speculative_config(method: str, k: int, suffix_k: int | None = None) -> dict[str, Any] | None:
    """vLLM 0.33's ``speculative_config`` for one method (None: no speculation)."""
    if method == "none":
        return None
    if method == "hierdraft":
        return {"method": "custom_class", "model": "hierdraft.vllm.HierdraftProposer", "num_speculative_tokens": k}
    if method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    if method == "suffix":
        # suffix decoding treats num_speculative_tokens as an upper bound on its tree depth
        return {"method": "suffix", "num_speculative_tokens": suffix_k or k}
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="HF checkpoint folder (scripts/gpu_write_checkpoint.py)")
        p.add_argument("--questions", type=Path, default=None, help="Spec-Bench question.jsonl")
        p.add_argument("--limit-per-category", type=int, default=5, help="prompts per category (0: all)")
        p.add_argument("--max-new-tokens", type=int, default=128)
        p.add_argument("--k", type=int, default=5, help="num_speculative_tokens (default 5)")
        p.add_argument("--suffix-k", type=int, default=None, help="suffix decoding's depth cap (default: --k)")
        p.add_argument("--concurrency", default="1,32", help="comma-separated (default 1,32)")
        p.add_argument("--max-model-len", type=int, default=4096)
        p.add_argument("--dtype", default="bfloat16")
        p.add_argument("--gpu-memory-utilization", type=float, default=0.5)

    run = sub.add_parser("run", help="every method, each in its own process, then the report")
    common(run)
    run.add_argument("--methods", default=",".join(METHODS))
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--timeout", type=int, default=1800, help="seconds per method")
    one = sub.add_parser("one", help="one method (what `run` starts per method)")
    common(one)
    one.add_argument("--method", required=True, choices=METHODS)
    one.add_argument("--result", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command is None:
        ap.error("choose a command: run or one")
    args.concurrency_list = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if not args.concurrency_list or min(args.concurrency_list) < 1:
        ap.error("--concurrency needs positive integers")
    if args.command == "run":
        args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in args.method_list if m not in METHODS]
        if unknown or REFERENCE not in args.method_list:
            ap.error(f"--methods must include {REFERENCE!r} and name only {', '.join(METHODS)}")
    return args


def select_prompts(questions: Path | None, limit: int) -> list[tuple[str, str, str]]:
    """(question id, category, prompt text) of the selected questions, categories interleaved."""
    from hierdraft.prompts import format_prompt
    from hierdraft.questions import default_questions_path, interleave_categories, load_questions, select_per_category

    path = questions or default_questions_path()
    if path is None:
        raise FileNotFoundError("no question file: pass --questions PATH")
    chosen = interleave_categories(select_per_category(load_questions(path), limit or None))
    return [(str(q.question_id), q.category, format_prompt(q)) for q in chosen]


def _spec_counters(llm: Any) -> dict[str, float]:
    """vLLM's speculative-decoding counters (drafts, draft tokens, accepted tokens), if exported."""
    out: dict[str, float] = {}
    try:
        metrics = llm.get_metrics()
    except Exception:  # noqa: BLE001 - the counters are informational
        return out
    for m in metrics:
        name = getattr(m, "name", "").removesuffix("_total")
        if name in ("vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens",
                    "vllm:spec_decode_num_accepted_tokens") and hasattr(m, "value"):
            key = name.split(":", 1)[1]
            out[key] = out.get(key, 0.0) + float(m.value)
    return out


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Child process: one method, every concurrency. Returns what the result file holds."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from hierdraft.prompts import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = select_prompts(args.questions, args.limit_per_category)
    ids = [encode_prompt(tokenizer, text) for _, _, text in prompts]
    llm = LLM(
        model=args.model, dtype=args.dtype, max_model_len=args.max_model_len, seed=0,
        max_num_seqs=max(args.concurrency_list), gpu_memory_utilization=args.gpu_memory_utilization,
        speculative_config=speculative_config(args.method, args.k, args.suffix_k), disable_log_stats=False,
    )
    params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens)
    llm.generate([{"prompt_token_ids": ids[0]}], params, use_tqdm=False)  # warm-up (graphs, caches)
    result: dict[str, Any] = {"method": args.method, "prompts": [p[0] for p in prompts],
                              "categories": [p[1] for p in prompts], "runs": {}}
    for c in args.concurrency_list:
        before = _spec_counters(llm)
        outputs: list[list[int]] = []
        # Concurrency 1: one request at a time. The largest concurrency: every request at once, the
        # engine keeping max_num_seqs of them in flight. Others: groups of c, one after another.
        group = len(ids) if c == max(args.concurrency_list) else c
        t0 = time.perf_counter()
        for start in range(0, len(ids), group):
            chunk = [{"prompt_token_ids": x} for x in ids[start : start + group]]
            outputs.extend(list(o.outputs[0].token_ids) for o in llm.generate(chunk, params, use_tqdm=False))
        seconds = time.perf_counter() - t0
        after = _spec_counters(llm)
        result["runs"][str(c)] = {
            "seconds": seconds, "outputs": outputs, "output_tokens": sum(len(o) for o in outputs),
            "spec": {k: after[k] - before.get(k, 0.0) for k in after},
        }
    return result


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (or the shorter length), None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def build_report(results: dict[str, dict[str, Any]], settings: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The summary (JSON-able) and the markdown report of the per-method results."""
    ref = results[REFERENCE]
    concurrencies = list(ref["runs"])
    rows, mismatches = [], []
    for method, res in results.items():
        for c in concurrencies:
            run = res["runs"].get(c)
            if run is None:
                continue
            tps = run["output_tokens"] / run["seconds"] if run["seconds"] > 0 else 0.0
            ref_run = ref["runs"][c]
            ref_tps = ref_run["output_tokens"] / ref_run["seconds"] if ref_run["seconds"] > 0 else 0.0
            diffs = []
            for i, (a, b) in enumerate(zip(run["outputs"], ref_run["outputs"])):
                pos = first_difference(a, b)
                if pos is not None:
                    diffs.append({"prompt": res["prompts"][i], "category": res["categories"][i], "position": pos})
            spec = run.get("spec") or {}
            drafts, accepted = spec.get("spec_decode_num_drafts"), spec.get("spec_decode_num_accepted_tokens")
            rows.append({
                "method": method, "concurrency": int(c), "output_tokens_per_s": tps,
                "speedup": tps / ref_tps if ref_tps else None, "output_tokens": run["output_tokens"],
                "seconds": run["seconds"], "mismatches": len(diffs), "prompts": len(run["outputs"]),
                "accepted_per_draft": (accepted / drafts) if drafts else None,
                "draft_acceptance": (accepted / spec["spec_decode_num_draft_tokens"])
                if spec.get("spec_decode_num_draft_tokens") else None,
            })
            if method != REFERENCE:
                mismatches.extend({"method": method, "concurrency": int(c), **d} for d in diffs)
    noise = None
    if len(concurrencies) >= 2:
        a, b = ref["runs"][concurrencies[0]]["outputs"], ref["runs"][concurrencies[-1]]["outputs"]
        noise = sum(first_difference(x, y) is not None for x, y in zip(a, b))
    summary = {"settings": settings, "rows": rows, "mismatches": mismatches,
               "reference_differs_across_concurrency": noise}
    lines = [
        "# vLLM with hierdraft vs ngram vs suffix vs no speculation (Spec-Bench, greedy)", "",
        f"model `{settings.get('model')}`, {len(ref['prompts'])} prompts, {settings.get('max_new_tokens')} new tokens, "
        f"K = {settings.get('k')}, dtype {settings.get('dtype')}", "",
        "| method | concurrency | output tokens/s | speedup vs none | accepted tokens / draft | outputs differing from none |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        acc = f"{r['accepted_per_draft']:.2f}" if r["accepted_per_draft"] is not None else "-"
        lines.append(f"| {r['method']} | {r['concurrency']} | {r['output_tokens_per_s']:.1f} | {sp} | {acc} | "
                     f"{r['mismatches']} / {r['prompts']} |")
    if noise is not None:
        lines += ["", f"No speculation itself: {noise} of {len(ref['prompts'])} outputs differ between concurrency "
                  f"{concurrencies[0]} and {concurrencies[-1]} (vLLM's batch-dependent numerics)."]
    for m in mismatches[:20]:
        lines.append(f"- {m['method']} at concurrency {m['concurrency']}: prompt {m['prompt']} ({m['category']}) "
                     f"differs from token {m['position']}")
    return summary, "\n".join(lines) + "\n"


def run_all(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    passthrough = ["--model", args.model, "--limit-per-category", str(args.limit_per_category),
                   "--max-new-tokens", str(args.max_new_tokens), "--k", str(args.k), "--concurrency", args.concurrency,
                   "--max-model-len", str(args.max_model_len), "--dtype", args.dtype,
                   "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    if args.questions:
        passthrough += ["--questions", str(args.questions)]
    if args.suffix_k:
        passthrough += ["--suffix-k", str(args.suffix_k)]
    for method in args.method_list:
        path = args.out / f"{method}.json"
        cmd = [sys.executable, os.path.abspath(__file__), "one", "--method", method, "--result", str(path), *passthrough]
        print(f"==> {method}: {' '.join(cmd)}", flush=True)
        try:
            proc = subprocess.run(cmd, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{method} ran past {args.timeout} s", file=sys.stderr)
            return 1
        if proc.returncode != 0 or not path.is_file():
            print(f"{method} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        results[method] = json.loads(path.read_text())
    settings = {"model": args.model, "max_new_tokens": args.max_new_tokens, "k": args.k, "dtype": args.dtype,
                "limit_per_category": args.limit_per_category, "methods": args.method_list,
                "speculative_configs": {m: speculative_config(m, args.k, args.suffix_k) for m in args.method_list}}
    summary, report = build_report(results, settings)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    (args.out / "report.md").write_text(report)
    print(report)
    return EXIT_MISMATCH if summary["mismatches"] else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "one":
        args.result.write_text(json.dumps(run_one(args)))
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
