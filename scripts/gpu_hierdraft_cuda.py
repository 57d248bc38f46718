#!/usr/bin/env python3
"""hierdraft's own transformers path on a CUDA GPU: the exactness tests and ``hierdraft bench``.

    .venv/bin/python scripts/gpu_hierdraft_cuda.py --out gpu-out/hierdraft [--budgets 32,64]

1. The generate tests that check losslessness (greedy output identical to plain decoding, the
   sampling distribution test, the hierarchy end to end), run by pytest with every tensor and
   tiny model they create on the GPU (the ``cuda_default_device`` plugin beside this script).
2. ``hierdraft bench`` on the default model moved to the GPU, once per tree budget. The bench
   command has no device option, so this script wraps ``hierdraft.models.load_model`` to move
   the loaded model onto the device and then runs the bench's own entry point; the bench checks
   every greedy output against plain decoding itself (exit status 3 on a mismatch).

Writes ``summary.json`` (each step's command and exit status) and each bench run's results into
``--out``. Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXACTNESS_TESTS = (
    "tests/test_generate_greedy.py",
    "tests/test_generate_sampling.py",
    "tests/test_generate_hierarchical.py",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budgets", default="32,64", help="draft tree budgets of the bench runs (default 32,64)")
    ap.add_argument("--dtype", default="float32", help="the bench model's dtype (default float32)")
    ap.add_argument("--limit-per-category", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--methods", default="ar,hf-ar,hf-pld,context,model,corpus,hd")
    ap.add_argument("--questions", type=Path, default=None, help="Spec-Bench question.jsonl (default: the bench's)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args(argv)
    args.budget_list = [int(b) for b in args.budgets.split(",") if b.strip()]
    if not args.budget_list or min(args.budget_list) < 1:
        ap.error("--budgets needs positive integers")
    return args


def test_command(device: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, HIERDRAFT_TEST_DEVICE=device,
               PYTHONPATH=os.pathsep.join([str(ROOT / "scripts"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return [sys.executable, "-m", "pytest", "-q", "-p", "cuda_default_device", *EXACTNESS_TESTS], env


def bench_argv(args: argparse.Namespace, budget: int) -> list[str]:
    argv = ["bench", "--budget", str(budget), "--out", str(args.out / f"bench-budget{budget}"),
            "--limit-per-category", str(args.limit_per_category), "--max-new-tokens", str(args.max_new_tokens),
            "--methods", args.methods, "--no-progress"]
    return argv + (["--questions", str(args.questions)] if args.questions else [])


def run_bench_on_device(argv: list[str], target_device: str, target_dtype: str) -> int:
    """``hierdraft bench`` with the loaded model in ``target_dtype`` moved to ``target_device``."""
    import hierdraft.models as models
    from hierdraft.cli import main as cli_main

    load = models.load_model

    def load_on_device(name_or_path=None, dtype=None, device=None):  # the signature of load_model
        model, tokenizer = load(name_or_path, dtype=dtype or target_dtype)
        return model.to(target_device), tokenizer

    models.load_model = load_on_device
    try:
        return int(cli_main(argv) or 0)
    finally:
        models.load_model = load


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps = []
    if not args.skip_tests:
        cmd, env = test_command(args.device)
        print("==>", " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        steps.append({"step": "exactness tests", "command": cmd, "exit": rc})
    if not args.skip_bench:
        for budget in args.budget_list:
            argv_b = bench_argv(args, budget)
            cmd = [sys.executable, os.path.abspath(__file__), "--bench-child", args.device, args.dtype, *argv_b]
            print("==>", " ".join(cmd), flush=True)
            rc = subprocess.run(cmd, cwd=ROOT).returncode
            steps.append({"step": f"bench budget {budget}", "command": cmd, "exit": rc,
                          "results": str(args.out / f"bench-budget{budget}" / "results.json")})
    (args.out / "summary.json").write_text(json.dumps(steps, indent=2))
    for s in steps:
        print(f"{s['step']}: exit {s['exit']}")
    return 0 if all(s["exit"] == 0 for s in steps) else 1


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--bench-child":
        sys.exit(run_bench_on_device(sys.argv[4:], target_device=sys.argv[2], target_dtype=sys.argv[3]))
    sys.exit(main())
