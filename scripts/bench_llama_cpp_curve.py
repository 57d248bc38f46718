#!/usr/bin/env python3
"""llama.cpp's decode cost curve on a GGUF file, and whether its results depend on the batch.

Cost curve: the time of one llama.cpp decode of n = 1, 2, 4, 8, 16, 32 tokens appended to a
context of about 200 and about 1000 tokens (median over --repeats after one warm-up), once with
the logits of every row (what verifying a draft needs) and once with the last row's only (what
plain decoding needs). The KV cache is cut back to the context after every decode.

--invariance: batch invariance. The same tokens are scored in one decode of n rows and one row
at a time (n decodes of one token); the script counts the rows whose argmax differs and the
largest logit difference. A verifier whose row results depend on the batch cannot promise the
greedy output of plain decoding.

--idle-check: the CPU time the process burns in the half second after a decode (llama.cpp's
worker threads spinning while waiting for more work, which would compete with torch's).

The text is the bench's questions (hierdraft.questions.default_questions_path(), else --text)
tokenized by llama.cpp. Run it alone on the machine (the bench's timing rule):

  flock /tmp/hierdraft-timing.lock .venv/bin/python scripts/bench_llama_cpp_curve.py --invariance --idle-check
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROWS = (1, 2, 4, 8, 16, 32)
CONTEXTS = (200, 1000)
INVARIANCE_ROWS = (2, 4, 8, 16)


def _text(path: Path | None) -> str:
    if path is not None:
        return path.read_text(encoding="utf-8")
    from hierdraft.questions import default_questions_path, load_questions

    found = default_questions_path()
    if found is None:
        raise SystemExit("no question file found: pass --text FILE")
    return "\n\n".join(q.first_turn for q in load_questions(found))


class Decoder:
    """One llama.cpp context and a batch, driven through llama-cpp-python's low-level API."""

    def __init__(self, model: Path, threads: int, n_ctx: int):
        import llama_cpp

        self.lib = llama_cpp
        # swa_full: keep every cell of the sliding-window layers too, so that cutting the cache
        # back to an earlier position leaves a complete cache
        self.llm = llama_cpp.Llama(model_path=str(model), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, n_gpu_layers=0, swa_full=True,
                                   verbose=False)
        self.ctx = self.llm.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = self.llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(max(n_ctx, 512), 0, 1)

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def cut(self, length: int) -> None:
        """Forget every KV cell at position >= length."""
        self.lib.llama_memory_seq_rm(self.memory, -1, length, -1)

    def decode(self, tokens: Sequence[int], start: int, all_logits: bool) -> None:
        b = self.batch
        b.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = int(tok)
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = all_logits or i == len(tokens) - 1
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError(f"llama_decode failed for {len(tokens)} tokens at position {start}")
        self.lib.llama_synchronize(self.ctx)

    def logits(self, i: int) -> np.ndarray:
        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.vocab,)).copy()

    def prefill(self, tokens: Sequence[int], n_batch: int = 512) -> None:
        self.cut(0)
        for s in range(0, len(tokens), n_batch):
            self.decode(tokens[s : s + n_batch], s, all_logits=False)


def cost_curve(dec: Decoder, tokens: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for ctx_len in CONTEXTS:
        dec.prefill(tokens[:ctx_len])
        for n in ROWS:
            new = tokens[ctx_len : ctx_len + n]
            cell: dict[str, Any] = {"context": ctx_len, "rows": n}
            for label, all_logits in (("all_logits_ms", True), ("last_logits_ms", False)):
                times = []
                for r in range(repeats + 1):
                    t0 = time.perf_counter()
                    dec.decode(new, ctx_len, all_logits)
                    dt = time.perf_counter() - t0
                    dec.cut(ctx_len)
                    if r:  # the first run warms up
                        times.append(dt)
                cell[label] = statistics.median(times) * 1e3
            rows.append(cell)
    return rows


def invariance(dec: Decoder, tokens: list[int], offsets: int) -> list[dict[str, Any]]:
    """Per n: rows compared, argmax flips, largest |logit difference|, one decode vs n decodes."""
    out = []
    for n in INVARIANCE_ROWS:
        flips = compared = 0
        worst = 0.0
        for ctx_len in CONTEXTS:
            # one prefill serves every starting point: cutting the cache back keeps the cells
            # before the cut as they were (latest start first)
            dec.prefill(tokens[: ctx_len + offsets * n])
            for k in reversed(range(offsets)):
                start = ctx_len + k * n
                new = tokens[start : start + n]
                dec.cut(start)
                dec.decode(new, start, all_logits=True)
                together = [dec.logits(i) for i in range(n)]
                dec.cut(start)
                alone = []
                for i, tok in enumerate(new):
                    dec.decode([tok], start + i, all_logits=True)
                    alone.append(dec.logits(0))
                for a, b in zip(together, alone):
                    compared += 1
                    flips += int(np.argmax(a) != np.argmax(b))
                    worst = max(worst, float(np.max(np.abs(a - b))))
        out.append({"rows": n, "compared": compared, "argmax_flips": flips, "max_abs_logit_diff": worst})
    return out


def idle_cpu_ms(dec: Decoder, tokens: list[int], wait_s: float = 0.5) -> float:
    dec.prefill(tokens[:200])
    dec.decode(tokens[200:201], 200, all_logits=False)
    c0 = time.process_time()
    time.sleep(wait_s)
    return (time.process_time() - c0) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the packaged default model)")
    parser.add_argument("--threads", type=int, default=2, help="n_threads = n_threads_batch (default 2)")
    parser.add_argument("--repeats", type=int, default=9, help="timed decodes per cell (default 9)")
    parser.add_argument("--text", type=Path, default=None, help="text file to take tokens from")
    parser.add_argument("--invariance", action="store_true", help="also check batch invariance")
    parser.add_argument("--offsets", type=int, default=8,
                        help="starting points per context and n for --invariance (default 8)")
    parser.add_argument("--idle-check", action="store_true", help="CPU burned after a decode")
    args = parser.parse_args()

    if args.model is None:
        from hierdraft.models import default_gguf_path

        args.model = default_gguf_path()
    need = max(CONTEXTS) + max(max(ROWS), max(INVARIANCE_ROWS) * args.offsets) + 1
    dec = Decoder(args.model, args.threads, n_ctx=need + 64)
    tokens = dec.tokenize(_text(args.text))
    if len(tokens) < need:
        raise SystemExit(f"the text has {len(tokens)} tokens; {need} are needed")

    import llama_cpp

    print(f"llama-cpp-python {llama_cpp.__version__}, {args.model.name}, {args.threads} threads")
    print(llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip())
    print()
    curve = cost_curve(dec, tokens, args.repeats)
    print(f"one decode of n tokens, median of {args.repeats} (ms)")
    print()
    print("| context | n | all rows' logits | last row's logits |")
    print("|---:|---:|---:|---:|")
    for c in curve:
        print(f"| {c['context']} | {c['rows']} | {c['all_logits_ms']:.1f} | {c['last_logits_ms']:.1f} |")
    if args.invariance:
        print()
        print(f"batch invariance: n rows in one decode vs one at a time, contexts {CONTEXTS}, "
              f"{args.offsets} starting points each")
        print()
        print("| n | rows | argmax flips | max abs logit diff |")
        print("|---:|---:|---:|---:|")
        total = flips = 0
        for r in invariance(dec, tokens, args.offsets):
            total += r["compared"]
            flips += r["argmax_flips"]
            print(f"| {r['rows']} | {r['compared']} | {r['argmax_flips']} | {r['max_abs_logit_diff']:.3f} |")
        print(f"| all | {total} | {flips} | |")
    if args.idle_check:
        print()
        print(f"CPU time in the 0.5 s after a decode: {idle_cpu_ms(dec, tokens):.1f} ms")


if __name__ == "__main__":
    main()
