"""`generate()` / `iter_generate()`: lossless speculative decoding of a transformers causal LM.

Each step asks the drafter for a draft tree, runs the target model once over [the committed tokens
not yet in the KV cache + every tree node] with a tree attention mask, accepts the longest path the
target agrees with plus one token of the target's own (greedy: its argmax; sampling: its draw at
the position's uniform number, which the walk follows down the tree), prunes the KV cache to that
path and tells the drafter what was accepted. The first step's forward is the prefill (the whole
prompt, plus a first draft tree built from the prompt).

`drafter=None` runs the same loop with empty trees: plain autoregressive decoding, one token per
forward, the honest baseline. Output is token-identical to `model.generate(do_sample=False)` for
greedy decoding and identically distributed to `model.generate(do_sample=True, ...)` for sampling
(with a seed, the sampled tokens equal plain decoding's with that seed, whatever the drafter); it
stops exactly like `model.generate`: after the first EOS token (included) or at
`max_new_tokens`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .cpu_matmul import kernel_threads
from .draws import PositionDraws
from .drafting import DrafterLike, ancestor_matrix, keep_nodes, validate_tree
from .kv_cache import TreeKVCache
from .sampling import SamplingParams, verify_greedy, verify_sampling
from .tree_forward import forward_tree
from .tree_mask import build_tree_inputs
from .tree_probe import check_tree_attention

__all__ = ["GenerationResult", "SpeculativeDecoder", "generate", "iter_generate"]

StreamCallback = Callable[[list[int]], Any]

@dataclass
class GenerationResult:
    """New tokens plus per-step statistics. A step is one target forward (the first one is the prefill)."""

    tokens: list[int]
    steps: int
    accepted_per_step: list[int]  # draft tokens accepted each step (bonus token excluded)
    draft_times: list[float]  # seconds spent in the drafter's propose(), per step
    verify_times: list[float]  # seconds of forward + verification + cache pruning, per step
    prefill_time: float  # seconds of the first forward (the prompt)
    elapsed: float  # wall-clock seconds of the whole call
    prompt_length: int = 0
    stop_reason: str = "length"  # "eos" or "length"
    tree_sizes: list[int] = field(default_factory=list)  # draft nodes verified per step
    emitted_per_step: list[int] = field(default_factory=list)  # tokens emitted per step, bonus included

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def mean_accepted_tokens(self) -> float:
        """Tokens produced per target forward, bonus token included (1.0 for plain decoding)."""
        return len(self.tokens) / self.steps if self.steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        """Throughput after the prefill step (excludes the prompt's forward)."""
        produced = len(self.tokens) - (self.emitted_per_step[0] if self.emitted_per_step else 0)
        t = self.elapsed - self.prefill_time - (self.draft_times[0] if self.draft_times else 0.0)
        return produced / t if t > 0 and produced > 0 else 0.0

    @property
    def total_draft_time(self) -> float:
        return float(sum(self.draft_times))

    @property
    def total_verify_time(self) -> float:
        return float(sum(self.verify_times))

    @property
    def mean_draft_time(self) -> float:
        return self.total_draft_time / self.steps if self.steps else 0.0

    @property
    def mean_verify_time(self) -> float:
        return self.total_verify_time / self.steps if self.steps else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.tokens)} tokens in {self.elapsed:.3f}s ({self.tokens_per_second:.1f} tok/s), "
            f"{self.steps} steps, {self.mean_accepted_tokens:.2f} tokens/step, "
            f"draft {self.mean_draft_time * 1e6:.0f} us/step, verify {self.mean_verify_time * 1e3:.2f} ms/step"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_tokens": len(self.tokens),
            "steps": self.steps,
            "mean_accepted_tokens": self.mean_accepted_tokens,
            "tokens_per_second": self.tokens_per_second,
            "prefill_time": self.prefill_time,
            "elapsed": self.elapsed,
            "total_draft_time": self.total_draft_time,
            "total_verify_time": self.total_verify_time,
            "stop_reason": self.stop_reason,
        }


def _as_prompt(input_ids: Any) -> list[int]:
    if isinstance(input_ids, torch.Tensor):
        arr = input_ids.detach().cpu().numpy()
    else:
        arr = np.asarray(input_ids)
    if arr.ndim == 2:
        if arr.shape[0] != 1:
            raise ValueError(f"hierdraft generates one sequence at a time; got a batch of {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim != 1:
        raise ValueError(f"input_ids must be 1-D or (1, length), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("input_ids is empty: the prompt needs at least one token")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"input_ids must hold integer token ids, got {arr.dtype}")
    return [int(t) for t in arr.tolist()]


def _eos_set(model: Any, eos_token_id: int | Sequence[int] | None) -> frozenset[int]:
    if eos_token_id is None:
        config = getattr(model, "generation_config", None)
        eos_token_id = getattr(config, "eos_token_id", None)
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, torch.Tensor):
        eos_token_id = eos_token_id.reshape(-1).tolist()
    if isinstance(eos_token_id, (int, np.integer)):
        return frozenset([int(eos_token_id)])
    return frozenset(int(t) for t in eos_token_id)


def _tree_arrays(tree: Any, vocab_size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if tree is None or len(tree) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    tokens = np.asarray(tree.tokens).astype(np.int64, copy=False).reshape(-1)
    parents = np.asarray(tree.parents).astype(np.int64, copy=False).reshape(-1)
    depths = np.asarray(tree.depths).astype(np.int64, copy=False).reshape(-1)
    validate_tree(tokens, parents, depths, vocab_size)
    return tokens, parents, depths


def _cut_depth(
    tokens: np.ndarray, parents: np.ndarray, depths: np.ndarray, max_depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop nodes deeper than `max_depth` (they could never be emitted); keeps ancestors closed."""
    return keep_nodes(tokens, parents, depths, depths <= max_depth)


class SpeculativeDecoder:
    """The decoding loop of one request; iterate `steps()` to run it (used by generate/iter_generate)."""

    def __init__(
        self,
        model: Any,
        input_ids: Any,
        drafter: DrafterLike | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        seed: int | None = None,
    ) -> None:
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        self.model = model
        self.prompt = _as_prompt(input_ids)
        self.drafter = drafter
        self.max_new_tokens = int(max_new_tokens)
        self.params = SamplingParams(float(temperature), top_k, top_p)
        self.eos = _eos_set(model, eos_token_id)
        self.layout = check_tree_attention(model)
        vocab = self.layout.vocab_size
        if vocab is not None and max(self.prompt) >= vocab:
            raise ValueError(f"prompt token {max(self.prompt)} is outside the vocabulary (size {vocab})")
        self.cache = TreeKVCache(self.layout)
        # sampling's uniform number per output position (greedy decoding draws none)
        self.draws = None if self.params.greedy else PositionDraws.from_seed(seed)
        self.tokens: list[int] = []
        self.accepted_per_step: list[int] = []
        self.draft_times: list[float] = []
        self.verify_times: list[float] = []
        self.tree_sizes: list[int] = []
        self.emitted_per_step: list[int] = []
        self.stop_reason = "length"
        self.elapsed = 0.0

    def steps(self) -> Iterator[list[int]]:
        """Run the loop; yields the tokens emitted by each step (never empty)."""
        start = time.perf_counter()
        session = None
        try:
            if self.max_new_tokens == 0:
                return
            if self.drafter is not None:
                session = self.drafter.start(list(self.prompt))
            chain = self.prompt
            while True:
                remaining = self.max_new_tokens - len(self.tokens)
                t0 = time.perf_counter()
                tree = session.propose() if session is not None else None
                t1 = time.perf_counter()
                tokens, parents, depths = _tree_arrays(tree, self.layout.vocab_size)
                if len(tokens) and depths.max() > remaining - 1:
                    tokens, parents, depths = _cut_depth(tokens, parents, depths, remaining - 1)
                with torch.inference_mode(), kernel_threads(self.model):
                    new, path = self._verify(chain, tokens, parents, depths)
                    new = new[:remaining]
                    finished = len(new) == remaining
                    for i, tok in enumerate(new):
                        if tok in self.eos:
                            new = new[: i + 1]
                            finished = True
                            self.stop_reason = "eos"
                            break
                    if not finished:
                        c = len(chain)
                        keep = np.concatenate([np.arange(c, dtype=np.int64), c + np.asarray(path, dtype=np.int64)])
                        self.cache.commit(c + len(tokens), keep)
                t2 = time.perf_counter()
                self.draft_times.append(t1 - t0)
                self.verify_times.append(t2 - t1)
                self.accepted_per_step.append(min(len(path), len(new)))  # a cut keeps a prefix of path + bonus
                self.tree_sizes.append(len(tokens))
                self.emitted_per_step.append(len(new))
                self.tokens.extend(new)
                if session is not None:
                    session.accept(list(new))
                yield list(new)
                if finished:
                    return
                chain = [new[-1]]
        finally:
            if session is not None:
                session.finish()
            self.elapsed = time.perf_counter() - start

    def _verify(
        self, chain: list[int], tokens: np.ndarray, parents: np.ndarray, depths: np.ndarray
    ) -> tuple[list[int], list[int]]:
        """One forward over chain + tree; returns the emitted tokens and the accepted node indices."""
        anc = ancestor_matrix(parents, depths)
        inputs = build_tree_inputs(
            self.layout, chain, tokens, parents, depths, self.cache.length, self.cache.cached_lengths(), anc
        )
        logits = forward_tree(self.model, self.layout, self.cache.cache, inputs, parents, greedy=self.params.greedy)
        if self.params.greedy:
            verdict = verify_greedy(logits, tokens, parents, depths, anc)
        else:
            verdict = verify_sampling(logits, tokens, parents, self.params, self.draws, len(self.tokens))
        return verdict.tokens, verdict.path

    def result(self) -> GenerationResult:
        return GenerationResult(
            tokens=list(self.tokens),
            steps=len(self.verify_times),
            accepted_per_step=list(self.accepted_per_step),
            draft_times=list(self.draft_times),
            verify_times=list(self.verify_times),
            prefill_time=self.verify_times[0] if self.verify_times else 0.0,
            elapsed=self.elapsed,
            prompt_length=len(self.prompt),
            stop_reason=self.stop_reason,
            tree_sizes=list(self.tree_sizes),
            emitted_per_step=list(self.emitted_per_step),
        )


def _streamed_steps(decoder: SpeculativeDecoder, stream: StreamCallback | None) -> Iterator[list[int]]:
    """The decoder's steps, each also passed to `stream` (as a fresh list) when one is given."""
    for new in decoder.steps():
        if stream is not None:
            stream(list(new))
        yield new


def iter_generate(
    model: Any,
    input_ids: Any,
    drafter: DrafterLike | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    seed: int | None = None,
    stream: StreamCallback | None = None,
) -> Iterator[list[int]]:
    """Like `generate`, but yields the list of tokens accepted at each step as soon as it is known."""
    decoder = SpeculativeDecoder(
        model, input_ids, drafter, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed
    )
    yield from _streamed_steps(decoder, stream)


def generate(
    model: Any,
    input_ids: Any,
    drafter: DrafterLike | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    seed: int | None = None,
    stream: StreamCallback | None = None,
) -> GenerationResult:
    """Generate up to `max_new_tokens` tokens after `input_ids` with speculative decoding.

    model: a transformers causal LM loaded with attn_implementation "sdpa" or "eager".
    input_ids: the prompt, a 1-D or (1, length) tensor, list or numpy array.
    drafter: any object with `start(prompt_ids) -> session` (see `hierdraft.drafting`); None for
        plain autoregressive decoding through the same loop.
    temperature: 0 for greedy decoding; otherwise sampling with `top_k` / `top_p` applied like
        `model.generate(do_sample=True, temperature=..., top_k=..., top_p=...)` (None = off; note
        that model.generate defaults to top_k=50 when it is not given).
    eos_token_id: int or list of ints; defaults to `model.generation_config.eos_token_id`.
    seed: keys the sampling draws: with the same seed, every drafter (None included) samples the
        same tokens (None: a key drawn from torch's global RNG).
    stream: called with the list of tokens accepted at each step.
    """
    decoder = SpeculativeDecoder(
        model, input_ids, drafter, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed
    )
    for _ in _streamed_steps(decoder, stream):
        pass
    return decoder.result()
