#!/usr/bin/env python3
"""Latency of ``DraftSession.propose()`` called from Python (call overhead included).

Builds a synthetic text-like corpus index (20M tokens by default) and model store — Zipfian
vocabulary, a Zipf-ranked phrase book that documents mostly consist of — then times individual
``propose()`` calls on many sessions and prints p50 / p90 / p99 in microseconds, for the full
hierarchy and for each level alone, plus ``propose_batch`` per session.

    .venv/bin/python scripts/bench_propose.py [--corpus-tokens 20000000] [--calls 20000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import hierdraft

VOCAB = 32_000


class TextGen:
    """Documents made of phrases (2-12 tokens) and single tokens, both Zipf-ranked."""

    def __init__(self, seed: int, phrases: int = 20_000) -> None:
        rng = np.random.default_rng(seed)
        ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
        p = ranks**-1.07
        self.token_p = p / p.sum()
        lengths = rng.integers(2, 13, size=phrases)
        words = self.tokens(rng, int(lengths.sum()))
        # The book: every phrase, then every single token; entries are (offset, length).
        self.book = np.concatenate([words, np.arange(VOCAB, dtype=np.uint32)])
        self.offsets = np.concatenate([np.cumsum(lengths) - lengths, len(words) + np.arange(VOCAB)])
        self.lengths = np.concatenate([lengths, np.ones(VOCAB, dtype=np.int64)])
        pr = np.arange(1, phrases + 1, dtype=np.float64) ** -1.0
        entry_p = np.concatenate([0.7 * pr / pr.sum(), 0.3 * self.token_p])
        self.entry_p = entry_p / entry_p.sum()

    def tokens(self, rng: np.random.Generator, n: int) -> np.ndarray:
        ranks = rng.choice(VOCAB, size=n, p=self.token_p)
        return ((ranks.astype(np.uint64) * 2_654_435_761) % VOCAB).astype(np.uint32)

    def stream(self, rng: np.random.Generator, n: int) -> np.ndarray:
        entries = rng.choice(len(self.lengths), size=n // 3 + 16, p=self.entry_p)
        lens = self.lengths[entries]
        starts = np.repeat(self.offsets[entries] - (np.cumsum(lens) - lens), lens)
        idx = starts + np.arange(int(lens.sum()))
        out = self.book[idx]
        while len(out) < n:
            out = np.concatenate([out, self.stream(rng, n - len(out))])
        return np.ascontiguousarray(out[:n])

    def documents(self, rng: np.random.Generator, total: int) -> list[np.ndarray]:
        flat = self.stream(rng, total)
        cuts = np.cumsum(rng.integers(200, 2000, size=total // 200 + 1))
        cuts = cuts[cuts < total]
        return np.split(flat, cuts)


def percentiles(times_s: list[float]) -> str:
    us = np.array(times_s) * 1e6
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return f"p50 {p50:8.2f}  p90 {p90:8.2f}  p99 {p99:8.2f}  mean {us.mean():8.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus-tokens", type=int, default=20_000_000)
    ap.add_argument("--model-tokens", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    gen = TextGen(1)
    t = time.perf_counter()
    docs = gen.documents(np.random.default_rng(2), args.corpus_tokens)
    corpus = hierdraft.CorpusIndex.build(docs, vocab_size=VOCAB)
    built = time.perf_counter() - t
    del docs
    print(
        f"corpus index: {corpus.num_tokens} tokens, {corpus.num_documents} documents, "
        f"generated + built in {built:.1f} s, {corpus.bytes_per_token:.2f} bytes/token"
    )
    model = hierdraft.ModelStore.build(
        gen.documents(np.random.default_rng(3), args.model_tokens), vocab_size=VOCAB
    )
    print(f"model store: {model.num_keys} keys")
    rng = np.random.default_rng(4)
    prompts = [gen.stream(rng, int(rng.integers(256, 1024))) for _ in range(512)]

    print(f"propose() from Python, budget {args.budget}, {args.calls} calls (us):")
    for name, order in [
        ("hierarchical", ("context", "model", "corpus")),
        ("context", ("context",)),
        ("model", ("model",)),
        ("corpus", ("corpus",)),
    ]:
        drafter = hierdraft.HierarchicalDrafter(model, corpus, order=order, budget=args.budget)
        sessions = [drafter.start(p) for p in prompts]
        for s in sessions[:200]:
            s.propose()
        times = []
        clock = time.perf_counter
        for i in range(args.calls):
            s = sessions[i % len(sessions)]
            t0 = clock()
            s.propose()
            times.append(clock() - t0)
        print(f"  {name:<13} {percentiles(times)}")
        if name == "hierarchical":
            batch_times = []
            for i in range(0, max(args.calls // args.batch, 1)):
                group = [sessions[(i * args.batch + j) % len(sessions)] for j in range(args.batch)]
                t0 = clock()
                drafter.propose_batch(group)
                batch_times.append((clock() - t0) / args.batch)
            print(f"  {'batch/session':<13} {percentiles(batch_times)}  (batches of {args.batch})")


if __name__ == "__main__":
    main()
