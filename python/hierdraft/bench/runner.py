"""Runs every method on the same prompts in one process and checks exactness.

Fairness: the methods run interleaved, prompt by prompt, and the order in which they run is
rotated from one prompt to the next, so that slow drifts and bursts of load on the machine
hit every method alike. Every method first runs once on a warm-up prompt that is not part of
the benchmark (lazy initialisation, allocator and thread-pool warm-up), untimed.

Exactness: with greedy decoding every hierdraft and transformers method must produce exactly the
tokens of ``ar``, and with sampling every method of hierdraft's loop must too (each position's
draw depends only on the prompt's seed and the position, ``method.keyed_draws``; transformers'
samplers are then reported like peers); each difference is recorded as a :class:`Mismatch` (the command then exits
non-zero). The peers (``method.peer``: llama.cpp, another engine with its own numerics) are not
held to ``ar``: for each prompt the run records where each peer's output first differs from
``llama.cpp``'s plain output and from ``ar``'s (``peer_agreement``), for the report only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .methods import PEER_REFERENCE, Method, PromptRecord

REFERENCE = "ar"


@dataclass(frozen=True)
class BenchPrompt:
    """One encoded benchmark prompt."""

    question_id: int | str
    category: str
    ids: list[int]


@dataclass(frozen=True)
class Mismatch:
    """A method's greedy output that differs from the reference's on one prompt."""

    question_id: int | str
    category: str
    method: str
    first_difference: int
    reference_length: int
    method_length: int
    reference: str = REFERENCE

    def describe(self) -> str:
        return (
            f"question {self.question_id} ({self.category}): {self.method} differs from "
            f"{self.reference} at token {self.first_difference} "
            f"(lengths {self.method_length} vs {self.reference_length})"
        )


@dataclass
class BenchRun:
    """Every record of a run: ``records[method][i]`` belongs to ``prompts[i]``."""

    prompts: list[BenchPrompt]
    methods: list[str]
    records: dict[str, list[PromptRecord]] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    # peer -> reference -> per prompt: index of the first differing token, None if identical
    peer_agreement: dict[str, dict[str, list[int | None]]] = field(default_factory=dict)
    peers: list[str] = field(default_factory=list)
    compared: bool = False
    interrupted: bool = False


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where the two sequences differ, None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def rotation(names: Sequence[str], index: int) -> list[str]:
    """``names`` rotated left by ``index`` (the run order for prompt number ``index``)."""
    if not names:
        return []
    k = index % len(names)
    return list(names[k:]) + list(names[:k])


def peer_references(peer: str, names: Sequence[str]) -> list[str]:
    """What a peer's output is compared with: llama.cpp's plain output, then ``ar``'s."""
    return [ref for ref in (PEER_REFERENCE, REFERENCE) if ref in names and ref != peer]


def _compare_prompt(run: BenchRun, i: int) -> None:
    """Check prompt ``i``: hierdraft's methods against ``ar`` (mismatches), peers for the record."""
    prompt = run.prompts[i]
    ref = run.records[REFERENCE][i].tokens
    mismatches: list[Mismatch] = []
    agreement: list[tuple[str, str, int | None]] = []
    for name in run.methods:
        if name == REFERENCE:
            continue
        got = run.records[name][i].tokens
        if name in run.peers:
            for other in peer_references(name, run.methods):
                agreement.append((name, other, first_difference(run.records[other][i].tokens, got)))
            continue
        diff = first_difference(ref, got)
        if diff is not None:
            mismatches.append(Mismatch(prompt.question_id, prompt.category, name, diff, len(ref), len(got)))
    # recorded only once the whole prompt is checked (an interrupted run stays consistent)
    run.mismatches.extend(mismatches)
    for name, other, diff in agreement:
        run.peer_agreement.setdefault(name, {}).setdefault(other, []).append(diff)


def _running_speedup(run: BenchRun, method: str) -> float | None:
    ref = run.records.get(REFERENCE, [])
    got = run.records.get(method, [])
    n = min(len(ref), len(got))
    t_ref = sum(r.elapsed for r in ref[:n])
    t_got = sum(r.elapsed for r in got[:n])
    if n == 0 or t_got <= 0:
        return None
    # same prompts, same token counts when exact: the ratio of times is the ratio of tokens/s
    tok_ref = sum(r.new_tokens for r in ref[:n])
    tok_got = sum(r.new_tokens for r in got[:n])
    if tok_ref == 0:
        return None
    return (tok_got / t_got) / (tok_ref / t_ref)


def run_bench(
    methods: Mapping[str, Method],
    prompts: Sequence[BenchPrompt],
    *,
    warmup_ids: Sequence[int] | None = None,
    compare: bool = True,
    sampled: bool = False,
    progress: bool = True,
    progress_method: str = "hd",
    stop_after_s: float | None = None,
) -> BenchRun:
    """Run all ``methods`` on all ``prompts`` and (if ``compare``) check them against ``ar``.

    ``sampled`` (temperature > 0): only the methods with ``keyed_draws`` are held to ``ar``; the
    others are compared for the record, like peers. The progress bar shows prompts
    done and the running speedup of ``progress_method`` (``hd``) over ``ar``.

    Ctrl-C (or ``stop_after_s`` seconds, checked between prompts) ends the run early: the
    prompts that every method finished are kept and ``interrupted`` is set.
    """
    names = list(methods)
    if compare and REFERENCE not in methods:
        raise ValueError(f"comparing outputs needs the reference method {REFERENCE!r}")
    run = BenchRun(prompts=list(prompts), methods=names, records={n: [] for n in names},
                   peers=[n for n in names if getattr(methods[n], "peer", False)
                          or (sampled and not getattr(methods[n], "keyed_draws", False))])
    run.compared = compare

    start = time.perf_counter()
    if warmup_ids is not None:
        for name in names:
            methods[name].run(list(warmup_ids))

    shown = progress_method if progress_method in methods else next(
        (n for n in names if n != REFERENCE), None
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(run.prompts), unit="prompt", desc="bench", dynamic_ncols=True)
    checked = 0  # prompts whose outputs were compared
    try:
        for i, prompt in enumerate(run.prompts):
            if i and stop_after_s is not None and time.perf_counter() - start > stop_after_s:
                raise KeyboardInterrupt
            for name in rotation(names, i):
                run.records[name].append(methods[name].run(prompt.ids))
            if compare:
                _compare_prompt(run, i)
                checked = i + 1
            if bar is not None:
                postfix: dict[str, object] = {}
                if shown is not None and REFERENCE in methods:
                    sp = _running_speedup(run, shown)
                    if sp is not None:
                        postfix[shown] = f"x{sp:.2f}"
                if compare:
                    postfix["mismatches"] = len(run.mismatches)
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
    except KeyboardInterrupt:
        # keep the prompts every method finished, so that a report can still be written
        done = min(len(r) for r in run.records.values()) if run.records else 0
        if compare:
            done = min(done, checked)
        run.prompts = run.prompts[:done]
        run.records = {n: r[:done] for n, r in run.records.items()}
        run.peer_agreement = {
            peer: {ref: diffs[:done] for ref, diffs in refs.items()}
            for peer, refs in run.peer_agreement.items()
        }
        run.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    return run
