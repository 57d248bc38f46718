"""`hierdraft generate PROMPT`: stream a completion with hierarchical drafting and report the speedup.

The text is printed as it is accepted. Afterwards the same prompt is decoded once more without
drafts (plain autoregressive decoding through the same loop, with the same --seed when sampling),
the two outputs are checked to be identical (exit status 2 if not), and tokens/s, mean accepted
tokens per step and the speedup are printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .numerics import NUMERICS


def add_generate_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate text with hierarchical drafting and show the speedup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompt", help="the prompt text (the default model is a base model: plain text)")
    p.add_argument("--model", default=None, help="local model path or name (default: $HIERDRAFT_MODEL or the embedded Gemma 3 270M)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--budget", type=int, default=16, help="draft tree nodes per step (default 16)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--numerics", choices=NUMERICS, default=None,
                   help="numeric mode of a quantized model: fp32 (default) or int8 (as llama.cpp)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain-decoding comparison run")
    p.set_defaults(func=run_generate)


class _TextStreamer:
    """Prints newly accepted tokens as text, decoding the whole output so far (byte-safe)."""

    def __init__(self, tokenizer: Any, out: Any) -> None:
        self.tokenizer = tokenizer
        self.out = out
        self.tokens: list[int] = []
        self.printed = ""

    def __call__(self, new_tokens: Any) -> None:
        self.tokens.extend(int(t) for t in new_tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
            return
        self.out.write(text[len(self.printed):])
        self.out.flush()
        self.printed = text


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from hierdraft.adaptive import AdaptiveDrafter
    from hierdraft.decoding import generate
    from hierdraft.models import load_model
    from hierdraft.stores import default_drafter

    if args.max_new_tokens <= 0:
        raise ValueError("--max-new-tokens must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, numerics=args.numerics)
    # the trees depend on timings, the output does not: sampled tokens depend only on --seed
    drafter = AdaptiveDrafter(default_drafter(tokenizer, model=model, budget=args.budget))
    input_ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    sampling = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )

    print(args.prompt, end="", flush=True)
    streamer = _TextStreamer(tokenizer, sys.stdout)
    result = generate(model, input_ids, drafter=drafter, stream=streamer, **sampling)
    print("\n")
    print(
        f"hierdraft: {len(result.tokens)} tokens in {result.elapsed:.2f} s = "
        f"{result.tokens_per_second:.1f} tokens/s, {result.steps} steps, "
        f"{result.mean_accepted_tokens:.2f} tokens per step"
    )
    if args.no_baseline:
        return 0
    baseline = generate(model, input_ids, drafter=None, **sampling)
    print(f"plain decoding: {baseline.tokens_per_second:.1f} tokens/s")
    print(f"speedup: {result.tokens_per_second / baseline.tokens_per_second:.2f}x")
    # sampled outputs are compared too: both runs draw each position at the same keyed uniform
    if baseline.tokens != result.tokens:
        kind = "greedy" if args.temperature == 0.0 else f"sampled (seed {args.seed})"
        print(f"error: {kind} output differs from plain decoding", file=sys.stderr)
        return 2
    print("outputs identical: yes")
    return 0
