#!/usr/bin/env python3
"""Latency of one ``HierdraftProposer.propose`` call per engine step, for 1, 32 and 256 rows.

The batch is simulated the way vLLM's V1 model runner presents it (int32 ``token_ids_cpu`` of
shape (rows, max_model_len) with stale tokens past each row, int32 ``num_tokens_no_spec``,
``sampled_token_ids`` as lists), under continuous batching: each row decodes one request, a
finished request's row is taken by the next one. Requests are the Spec-Bench questions that have
a reference answer, in the bench's prompt template, tokenized with the default model's tokenizer;
the "model" emits the reference answer, so each step accepts the longest correct prefix of the
row's draft plus one token, as greedy verification would.

The stores are the default ones of the default tokenizer (built on first use; the default model
store only when ``hierdraft build defaults`` made one), or ``--model-store`` / ``--corpus-index``.
Timed steps start after ``--warmup`` steps; a step's time includes everything ``propose`` does
(argument checks, session lookup and extension, new sessions for new requests, drafting, best
chains). Prints p50 / p90 / p99 / mean microseconds per step and the draft statistics.
``--threads-ab`` instead measures what the helper threads bring: each step is proposed by a
default table and by one confined to the calling thread, alternately first, and the median
ratio of their times is printed.

    flock /tmp/hierdraft-timing.lock .venv/bin/python scripts/bench_vllm_proposer.py [--rows 1,32,256]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

GOALS_US = {32: 100.0, 256: 1000.0}  # p50 goals of issue 10, per step


def load_requests(tokenizer, questions_path: Path) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reference answer ids) of every question that has a reference."""
    from hierdraft.prompts import encode_prompt, format_prompt, token_ids

    out = []
    for line in questions_path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        refs = row.get("reference") or []
        if not refs or not isinstance(refs[0], str) or not refs[0].strip():
            continue
        prompt = encode_prompt(tokenizer, format_prompt(row["turns"][0]))
        answer = token_ids(tokenizer, " " + refs[0].strip())
        bos = getattr(tokenizer, "bos_token_id", None)
        if answer and bos is not None and answer[0] == bos:
            answer = answer[1:]
        if answer:
            out.append((prompt, answer))
    return out


def stand_in_config(k: int, max_model_len: int, rows: int, options: dict) -> types.SimpleNamespace:
    """The attributes of a VllmConfig that HierdraftProposer reads (no vLLM in this venv)."""
    return types.SimpleNamespace(
        speculative_config=types.SimpleNamespace(num_speculative_tokens=k),
        model_config=types.SimpleNamespace(max_model_len=max_model_len, tokenizer=None),
        scheduler_config=types.SimpleNamespace(max_num_seqs=rows),
        additional_config={"hierdraft": options},
    )


class Batch:
    """Continuous batching over ``rows`` rows; finished requests are replaced in place."""

    def __init__(self, rows: int, max_model_len: int, requests: list, seed: int):
        self.rng = np.random.default_rng(seed)
        self.max_model_len = max_model_len
        self.requests = requests
        self.next = int(self.rng.integers(len(requests)))
        self.token_ids_cpu = self.rng.integers(0, 1000, size=(rows, max_model_len)).astype(np.int32)
        self.num_tokens_no_spec = np.zeros(rows, dtype=np.int32)
        self.truth: list[np.ndarray] = [np.empty(0, dtype=np.int32)] * rows
        for i in range(rows):
            self._start(i)

    def _start(self, i: int) -> None:
        prompt, answer = self.requests[self.next % len(self.requests)]
        self.next += 1
        full = np.array((prompt + answer)[: self.max_model_len], dtype=np.int32)
        self.truth[i] = full
        self.token_ids_cpu[i, : len(prompt)] = full[: len(prompt)]
        self.num_tokens_no_spec[i] = min(len(prompt), self.max_model_len - 1)

    def step(self, drafts: list[list[int]] | None) -> tuple[list[list[int]], int, int, int]:
        """Verify the drafts; returns the sampled tokens per row, the drafted tokens accepted, the
        number of drafts verified and of those whose first token was right."""
        sampled, accepted, first_hits, verified = [], 0, 0, 0
        for i in range(len(self.truth)):
            n, truth = int(self.num_tokens_no_spec[i]), self.truth[i]
            if n >= len(truth):
                self._start(i)
                n, truth = int(self.num_tokens_no_spec[i]), self.truth[i]
                draft: list[int] = []
            else:
                draft = drafts[i] if drafts else []
            ok = 0
            while ok < len(draft) and n + ok < len(truth) and draft[ok] == truth[n + ok]:
                ok += 1
            take = min(ok + 1, len(truth) - n)
            self.token_ids_cpu[i, n : n + take] = truth[n : n + take]
            self.num_tokens_no_spec[i] = n + take
            sampled.append(truth[n : n + take].tolist())
            accepted += min(ok, take)
            first_hits += ok > 0
            verified += bool(draft)
        return sampled, accepted, first_hits, verified


def bench(proposer_factory, requests, rows: int, steps: int, warmup: int, max_model_len: int, seed: int) -> dict:
    proposer = proposer_factory(rows)
    batch = Batch(rows, max_model_len, requests, seed)
    times, drafted, accepted, drafting_rows, first_hits, verified = [], 0, 0, 0, 0, 0
    drafts = None
    for step in range(warmup + steps):
        sampled, ok, hits, checked = batch.step(drafts)
        t0 = time.perf_counter()
        drafts = proposer.propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
        dt = time.perf_counter() - t0
        if step >= warmup:
            times.append(dt)
            drafted += sum(len(d) for d in drafts)
            drafting_rows += sum(1 for d in drafts if d)
        if step > warmup:  # the drafts of timed steps, verified at the next one
            accepted += ok
            first_hits += hits
            verified += checked
    us = np.array(times) * 1e6
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return {
        "rows": rows, "steps": steps, "p50_us": p50, "p90_us": p90, "p99_us": p99, "mean_us": float(us.mean()),
        "draft_tokens_per_row": drafted / (steps * rows), "rows_with_draft": drafting_rows / (steps * rows),
        "accepted_per_row_step": accepted / ((steps - 1) * rows),
        "first_token_hits": first_hits / max(verified, 1), "requests_started": batch.next,
        "sessions_idle": proposer.sessions.idle,
    }


def bench_threads(proposer_factory, requests, rows: int, steps: int, warmup: int, max_model_len: int,
                  seed: int) -> dict:
    """The same batch proposed by two tables, one with its default thread use and one confined to
    the calling thread, alternating which goes first; the median of the per-step time ratios is
    robust to the machine's drifts, which separate runs are not."""
    from hierdraft import _core

    default, serial = proposer_factory(rows), proposer_factory(rows)
    serial.sessions = _core.SessionTable(
        serial.drafter, serial.num_speculative_tokens, serial.max_model_len, serial.options.max_idle_sessions,
        learn=serial.options.learn, parallel_min_rows=2**62)
    pair = (default, serial)
    batch = Batch(rows, max_model_len, requests, seed)
    times: list[list[float]] = [[], []]
    drafts = None
    for step in range(warmup + steps):
        sampled, *_ = batch.step(drafts)
        for i in ((0, 1) if step % 2 else (1, 0)):
            t0 = time.perf_counter()
            out = pair[i].propose(sampled, batch.num_tokens_no_spec, batch.token_ids_cpu)
            if step >= warmup:
                times[i].append(time.perf_counter() - t0)
            if i == 0:
                drafts = out
    default_us, serial_us = np.array(times[0]) * 1e6, np.array(times[1]) * 1e6
    return {"rows": rows, "parallel_min_rows": default.sessions.parallel_min_rows,
            "default_p50_us": float(np.median(default_us)), "serial_p50_us": float(np.median(serial_us)),
            "paired_ratio": float(np.median(default_us / serial_us))}


def format_threads(results: list[dict]) -> str:
    lines = ["| rows | default p50 us | one thread p50 us | paired ratio (default / one thread) |",
             "|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['rows']} | {r['default_p50_us']:.1f} | {r['serial_p50_us']:.1f} | {r['paired_ratio']:.3f} |")
    return "\n".join(lines)


def format_table(results: list[dict]) -> str:
    lines = [
        "| rows | p50 us | p90 us | p99 us | mean us | goal p50 | draft tokens/row | drafted rows | accepted/row-step "
        "| first token right |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        goal = GOALS_US.get(r["rows"])
        goal_s = "-" if goal is None else f"<= {goal:.0f} ({'met' if r['p50_us'] <= goal else 'missed'})"
        lines.append(
            f"| {r['rows']} | {r['p50_us']:.1f} | {r['p90_us']:.1f} | {r['p99_us']:.1f} | {r['mean_us']:.1f} | "
            f"{goal_s} | {r['draft_tokens_per_row']:.2f} | {r['rows_with_draft']:.0%} | {r['accepted_per_row_step']:.3f} | "
            f"{r['first_token_hits']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,32,256", help="comma-separated batch sizes (default 1,32,256)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    ap.add_argument("--k", type=int, default=5, help="num_speculative_tokens (default 5)")
    ap.add_argument("--budget", type=int, default=None, help="draft tree nodes (default: the proposer's, K)")
    ap.add_argument("--candidates", type=int, default=None, help="chains per level (default: the proposer's)")
    ap.add_argument("--corpus-max-occurrences", type=int, default=None,
                    help="occurrences a corpus lookup reads (default: the proposer's)")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--model-store", default=None, help="path, or 'none' (default: the default store)")
    ap.add_argument("--corpus-index", default=None, help="path, or 'none' (default: the default index)")
    ap.add_argument("--no-learn", action="store_true", help="do not feed finished requests to the model store")
    ap.add_argument("--questions", type=Path, default=None, help="Spec-Bench question.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--threads-ab", action="store_true",
                    help="instead: the default table against one confined to the calling thread, step by step")
    args = ap.parse_args(argv)

    from hierdraft.models import load_tokenizer
    from hierdraft.questions import default_questions_path
    from hierdraft.vllm import HierdraftProposer

    questions = args.questions or default_questions_path()
    if questions is None:
        print("no question file: pass --questions PATH", file=sys.stderr)
        return 1
    tokenizer = load_tokenizer()
    requests = load_requests(tokenizer, Path(questions))
    options = {k: v for k, v in (("model_store", args.model_store), ("corpus_index", args.corpus_index),
                                 ("budget", args.budget), ("candidates", args.candidates),
                                 ("corpus_max_occurrences", args.corpus_max_occurrences)) if v is not None}
    if args.no_learn:
        options["learn"] = False
    rows_list = [int(x) for x in args.rows.split(",") if x.strip()]

    def factory(rows: int) -> HierdraftProposer:
        return HierdraftProposer(stand_in_config(args.k, args.max_model_len, rows, options), tokenizer=tokenizer)

    probe = factory(1)
    print(f"{len(requests)} requests (Spec-Bench questions with a reference), K={args.k}, "
          f"max_model_len={args.max_model_len}; drafter: {probe.drafter!r}")
    if args.threads_ab:
        pairs = [bench_threads(factory, requests, r, args.steps, args.warmup, args.max_model_len, args.seed)
                 for r in rows_list]
        print(f"parallel from {pairs[0]['parallel_min_rows']} rows on (the default)")
        print(format_threads(pairs))
        if args.json:
            args.json.write_text(json.dumps({"k": args.k, "drafter": repr(probe.drafter), "threads_ab": pairs}, indent=2))
        return 0
    results = [bench(factory, requests, r, args.steps, args.warmup, args.max_model_len, args.seed) for r in rows_list]
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps({"k": args.k, "drafter": repr(probe.drafter), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
