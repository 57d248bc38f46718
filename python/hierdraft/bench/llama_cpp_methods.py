"""The bench's llama.cpp peers: the same GGUF file decoded by llama.cpp (llama-cpp-python).

=============  =================================================================================
name           what it runs
=============  =================================================================================
llama.cpp      plain decoding, one token per decode (greedy, or plain temperature sampling)
llama.cpp-pld  llama-cpp-python's own prompt lookup decoding (``LlamaPromptLookupDecoding``),
               drafting ``--pld-tokens`` tokens on an n-gram match of size 2, like ``hf-pld``
=============  =================================================================================

What makes them comparable with hierdraft's methods:

- the same prompt token ids: the bench's ids (Hugging Face tokenizer, ``<bos>`` included) are
  fed as they are and never re-tokenized by llama.cpp, so outputs compare token by token (the
  report also says whether llama.cpp's own tokenizer gives the same ids for the warm-up prompt);
- the same stop rule: the bench's EOS ids or ``max_new_tokens``, the EOS token kept;
- the same threads: ``n_threads = n_threads_batch = --threads``; the methods run one after
  another, so llama.cpp's threads and torch's never compute at the same time;
- the same timing: ``perf_counter`` around the whole call, prefill included; the model is
  loaded once per bench run, outside the timed region; the KV cache is cleared before every
  call (llama-cpp-python would otherwise reuse a prompt prefix left from the previous call).

llama.cpp has its own numerics (its own kernels, activations quantized to 8 bits in the
quantized products, and on CPU its result for a row depends on the batch it is decoded in), so
its greedy output may differ from hierdraft's. That is not a hierdraft mismatch: the runner
compares the peers with ``llama.cpp``'s plain output only.

With a draft model, llama-cpp-python computes and copies the logits of every row it decodes
(``logits_all``), the prompt's rows included: that cost is part of ``llama.cpp-pld``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .methods import DEFAULT_PLD_NGRAM, PEER_METHODS, PEER_REFERENCE, DecodeSettings, PromptRecord

PLD_METHOD = "llama.cpp-pld"
LLAMA_CPP_PACKAGE = "llama-cpp-python"
# llama.cpp rounds its context up to a multiple of 256, while llama-cpp-python sizes its token
# array by the context asked for and trims drafts by the rounded one: ask for a multiple of 256
# so that a draft near the end of the context never overflows that array.
CONTEXT_GRANULE = 256


def context_size(longest_prompt: int, max_new_tokens: int) -> int:
    """The llama.cpp context that holds every prompt plus its new tokens."""
    need = longest_prompt + max_new_tokens
    return -(-need // CONTEXT_GRANULE) * CONTEXT_GRANULE


class PeerUnavailable(Exception):
    """The llama.cpp peers cannot run in this configuration (the message says why)."""


@dataclass(frozen=True)
class PeerModel:
    """The GGUF file the llama.cpp peers decode, or the reason there is none."""

    path: Path | None
    skip_reason: str | None = None


def resolve_peer_model(model_arg: str | os.PathLike[str] | None) -> PeerModel:
    """The GGUF file of the bench's model, resolved like :func:`hierdraft.models.load_model`.

    ``None`` means ``HIERDRAFT_MODEL`` when set, else the default model; a default alias gives
    the packaged default GGUF; a ``.gguf`` path gives that file; anything else (a transformers
    checkpoint folder, a hub name) has no GGUF file, and the peers are skipped.
    """
    from ..models import default_gguf_path, is_default_model

    name = os.fspath(model_arg) if model_arg is not None else os.environ.get("HIERDRAFT_MODEL", "")
    if is_default_model(name):
        return PeerModel(default_gguf_path())
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            return PeerModel(None, f"GGUF file not found: {path}")
        return PeerModel(path)
    return PeerModel(None, f"the bench model {name!r} is not a GGUF file, which llama.cpp needs")


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise PeerUnavailable(
            f"{LLAMA_CPP_PACKAGE} is not installed (it is in requirements.txt: "
            "bash scripts/setup-env.sh installs it)"
        ) from exc
    return llama_cpp


def _eos_set(eos: int | list[int] | None) -> frozenset[int]:
    if eos is None:
        return frozenset()
    return frozenset([eos]) if isinstance(eos, int) else frozenset(int(e) for e in eos)


class _StepClock:
    """Wraps a callable to time and count its calls (llama.cpp's decodes or the drafter)."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.times: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.times.append(time.perf_counter() - t0)


class LlamaCppMethod:
    """One llama.cpp peer: a ``llama_cpp.Llama`` loaded once, run on the bench's token ids."""

    peer = True

    def __init__(
        self,
        name: str,
        llm: Any,
        settings: DecodeSettings,
        n_ctx: int,
        drafter: _StepClock | None = None,
    ):
        self.name = name
        self.llm = llm
        self.settings = settings
        self.n_ctx = n_ctx
        self.drafter = drafter
        self.eos = _eos_set(settings.eos_token_id)
        self.calls = 0
        # every decode goes through Llama.eval: time and count them (a step = one eval)
        self._evals = _StepClock(llm.eval)
        llm.eval = self._evals

    def _sampling(self) -> dict[str, Any]:
        if self.settings.temperature > 0:
            # plain temperature sampling, like hierdraft's loop: no top-k / top-p / min-p
            return dict(temp=self.settings.temperature, top_k=0, top_p=1.0, min_p=0.0,
                        typical_p=1.0, repeat_penalty=1.0)
        return dict(temp=0.0, repeat_penalty=1.0)

    def run(self, prompt_ids: Sequence[int]) -> PromptRecord:
        ids = [int(t) for t in prompt_ids]
        max_new = self.settings.max_new_tokens
        if not ids:
            raise ValueError("llama.cpp peer: empty prompt")
        if len(ids) + max_new > self.n_ctx:
            raise ValueError(
                f"llama.cpp peer: prompt of {len(ids)} tokens + {max_new} new tokens exceeds its "
                f"context of {self.n_ctx}"
            )
        self.calls += 1
        self.llm.set_seed(self.settings.seed + self.calls)
        self.llm.reset()  # no prompt-prefix reuse from the previous call
        self._evals.times.clear()
        if self.drafter is not None:
            self.drafter.times.clear()
        tokens: list[int] = []
        emitted: list[int] = []
        first_token_time: float | None = None
        t0 = time.perf_counter()
        stream = self.llm.generate(ids, reset=True, **self._sampling())
        try:
            for tok in stream:
                if first_token_time is None:
                    first_token_time = time.perf_counter() - t0
                step = len(self._evals.times) - 1
                emitted.extend([0] * (step + 1 - len(emitted)))
                emitted[step] += 1
                tokens.append(int(tok))
                if len(tokens) >= max_new or tokens[-1] in self.eos:
                    break
        finally:
            stream.close()
        elapsed = time.perf_counter() - t0
        steps = len(self._evals.times)
        draft_times: list[float] = []
        if self.drafter is not None:
            # no draft before the prefill: step 0 gets 0 s, like hierdraft's first propose()
            draft_times = [0.0, *self.drafter.times[: max(steps - 1, 0)]]
        return PromptRecord(
            tokens=tokens,
            elapsed=elapsed,
            forwards=steps,
            draft_times=draft_times,
            verify_times=list(self._evals.times),
            prefill_time=first_token_time,
            accepted_per_step=[max(e - 1, 0) for e in emitted] if self.drafter is not None else [],
            prefill_tokens=emitted[0] if emitted else None,
        )


@dataclass
class PeerBuild:
    """The peers that could be built, and what the report says about them."""

    methods: dict[str, LlamaCppMethod]
    info: dict[str, Any]
    skip_reason: str | None = None


def build_peer_methods(
    names: Iterable[str],
    peer_model: PeerModel,
    settings: DecodeSettings,
    *,
    threads: int,
    n_ctx: int,
    pld_tokens: int,
    check_prompt: tuple[str, Sequence[int]] | None = None,
) -> PeerBuild:
    """Load the GGUF once per requested peer and wrap each in a :class:`LlamaCppMethod`.

    ``n_ctx`` (from :func:`context_size`) holds the longest prompt plus ``max_new_tokens``.
    ``check_prompt`` is a
    ``(text, ids)`` pair: the report says whether llama.cpp's tokenizer gives the same ids.
    When the peers cannot run (no GGUF model, llama-cpp-python missing) no method is built and
    ``skip_reason`` says why.
    """
    wanted = [n for n in names if n in PEER_METHODS]
    unknown = [n for n in names if n not in PEER_METHODS]
    if unknown:
        raise ValueError(f"not a llama.cpp peer: {', '.join(unknown)}")
    if not wanted:
        return PeerBuild({}, {})
    try:
        if peer_model.path is None:
            raise PeerUnavailable(peer_model.skip_reason or "no GGUF file for the llama.cpp peers")
        llama_cpp = _import_llama_cpp()
    except PeerUnavailable as exc:
        return PeerBuild({}, {}, skip_reason=str(exc))

    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    common = dict(model_path=str(peer_model.path), n_ctx=n_ctx, n_threads=threads,
                  n_threads_batch=threads, n_gpu_layers=0, verbose=False)
    methods: dict[str, LlamaCppMethod] = {}
    load_s: dict[str, float] = {}
    tokenizer_agrees: bool | None = None
    for name in wanted:
        t0 = time.perf_counter()
        drafter = None
        extra: dict[str, Any] = {}
        if name == PLD_METHOD:
            drafter = _StepClock(LlamaPromptLookupDecoding(
                max_ngram_size=DEFAULT_PLD_NGRAM, num_pred_tokens=pld_tokens))
            # A draft model makes llama-cpp-python keep every row's logits, but it sizes that
            # array by the logits_all argument: without logits_all=True it has n_batch rows and a
            # prompt longer than n_batch fails.
            extra["logits_all"] = True
        llm = llama_cpp.Llama(**common, **extra, draft_model=drafter)
        load_s[name] = time.perf_counter() - t0
        if llm.n_ctx() != n_ctx:
            raise ValueError(f"llama.cpp made a context of {llm.n_ctx()} tokens instead of {n_ctx}; "
                             f"use context_size() for n_ctx")
        if tokenizer_agrees is None and check_prompt is not None:
            text, ids = check_prompt
            own = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            tokenizer_agrees = [int(t) for t in own] == [int(t) for t in ids]
        methods[name] = LlamaCppMethod(name, llm, settings, n_ctx, drafter)
    info = {
        "package": f"{LLAMA_CPP_PACKAGE} {llama_cpp.__version__}",
        "model": str(peer_model.path),
        "n_ctx": n_ctx,
        "n_threads": threads,
        "n_threads_batch": threads,
        "pld": {"num_pred_tokens": pld_tokens, "max_ngram_size": DEFAULT_PLD_NGRAM}
        if PLD_METHOD in methods else None,
        "load_s": load_s,
        "tokenizer_agrees_on_warmup_prompt": tokenizer_agrees,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "reference": PEER_REFERENCE,
    }
    return PeerBuild(methods, info)
