#!/usr/bin/env python3
"""Paired A/B of two `AdaptiveDrafter` exploration settings on the default model and Spec-Bench
prompts, end to end (`hierdraft.generate` with the default drafter, 64 new tokens).

Each arm has its own drafter (its own online model store and acceptance statistics): sharing one
would let the second run of a prompt draft from what the first just generated. The arms
alternate which one runs first, prompt by prompt, so both see the same machine state; the
outputs of the two arms must be identical (the script stops if they are not). Prints each
prompt's times and tokens per step, then the median paired time ratio B / A (whole call and
decoding only) and the mean tokens per step. Run it alone on the machine:

  flock /tmp/hierdraft-timing.lock .venv/bin/python scripts/bench_adaptive_ab.py \\
      --a-explore-every 16 --b-explore-every 8 [--per-category 6] [--temperature 1]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import hierdraft
from hierdraft.adaptive import DEFAULT_EXPLORE_EVERY, DEFAULT_EXPLORE_NODES
from hierdraft.prompts import encode_prompt, format_prompt
from hierdraft.questions import default_questions_path, load_questions, select_per_category


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a-explore-every", type=int, default=DEFAULT_EXPLORE_EVERY)
    parser.add_argument("--a-explore-nodes", type=int, default=DEFAULT_EXPLORE_NODES)
    parser.add_argument("--b-explore-every", type=int, default=DEFAULT_EXPLORE_EVERY)
    parser.add_argument("--b-explore-nodes", type=int, default=DEFAULT_EXPLORE_NODES)
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer = hierdraft.load_default()
    settings = {
        "A": (args.a_explore_every, args.a_explore_nodes),
        "B": (args.b_explore_every, args.b_explore_nodes),
    }
    drafters = {
        arm: hierdraft.AdaptiveDrafter(
            hierdraft.default_drafter(tokenizer, model=model), explore_every=every, explore_nodes=nodes
        )
        for arm, (every, nodes) in settings.items()
    }

    def run(ids: torch.Tensor, arm: str, seed: int) -> hierdraft.GenerationResult:
        with torch.inference_mode():
            return hierdraft.generate(
                model, ids, drafter=drafters[arm], max_new_tokens=args.max_new_tokens,
                temperature=args.temperature, seed=seed,
            )

    warm = torch.tensor([encode_prompt(tokenizer, format_prompt("Warm up the kernels, please."))])
    for arm in settings:
        run(warm, arm, 0)
    questions = select_per_category(load_questions(default_questions_path()), args.per_category)
    ratios, decode_ratios = [], []
    per_step: dict[str, list[float]] = {"A": [], "B": []}
    print(f"A: explore every {settings['A'][0]} steps, {settings['A'][1]} nodes; "
          f"B: every {settings['B'][0]}, {settings['B'][1]} nodes; temperature {args.temperature}")
    for i, question in enumerate(questions):
        ids = torch.tensor([encode_prompt(tokenizer, format_prompt(question))])
        order = ("A", "B") if i % 2 == 0 else ("B", "A")
        res = {arm: run(ids, arm, 100 + i) for arm in order}
        a, b = res["A"], res["B"]
        if a.tokens != b.tokens:
            raise SystemExit(f"outputs differ between the arms on {question.question_id}")
        ratios.append(b.elapsed / a.elapsed)
        if a.decode_tokens_per_second > 0 and b.decode_tokens_per_second > 0:
            # same tokens in both arms: the ratio of decoding times is the inverse of the rates'
            decode_ratios.append(a.decode_tokens_per_second / b.decode_tokens_per_second)
        for arm in settings:
            per_step[arm].append(res[arm].mean_accepted_tokens)
        print(f"{question.category:15s} A {a.elapsed:6.2f} s {a.mean_accepted_tokens:4.2f} tokens/step   "
              f"B {b.elapsed:6.2f} s {b.mean_accepted_tokens:4.2f}   B/A {ratios[-1]:.3f}", flush=True)
    print(f"median paired time ratio B/A: {statistics.median(ratios):.3f} "
          f"(decoding only {statistics.median(decode_ratios) if decode_ratios else float('nan'):.3f}); tokens per step "
          f"B {statistics.mean(per_step['B']):.2f} against A {statistics.mean(per_step['A']):.2f}")


if __name__ == "__main__":
    main()
