"""The decoding methods the bench compares, each a small object with ``run(prompt_ids)``.

=========  ==============================================================================
name       what it runs
=========  ==============================================================================
ar         hierdraft's own loop without a drafter: plain autoregressive decoding, the
           baseline every speedup is measured against
hf-ar      transformers' ``model.generate`` (greedy or plain temperature sampling): shows
           that hierdraft's loop adds no overhead of its own
hf-pld     transformers' prompt lookup decoding, ``prompt_lookup_num_tokens=N``
           (``DEFAULT_PLD_TOKENS`` unless told otherwise; the value is in the report)
context    hierdraft with only the context level (this request's n-grams)
model      hierdraft with only the model level (the model's own n-grams)
corpus     hierdraft with only the corpus level (suffix array over a corpus)
hd         hierdraft with the full hierarchy, context -> model -> corpus (the product)
ar-fp32    with ``--numerics int8``: plain decoding in the fp32 numeric mode, the reference the
           int8 mode's outputs are compared with (reported like a peer)
llama.cpp  peer: plain greedy decoding of the same GGUF file by llama.cpp
           (llama-cpp-python), the absolute yardstick; see :mod:`.llama_cpp_methods`
llama.cpp- peer: llama-cpp-python's own prompt lookup decoding
pld
=========  ==============================================================================

The two llama.cpp methods are *peers*: another engine with its own numerics. Their outputs are
compared with ``llama.cpp``'s plain output, never counted as mismatches against ``ar``. So is
``ar-fp32``: the same engine in the other numeric mode.

Each drafting method gets its own drafter with its own instances of the stores (the factory
loads them afresh), so a method's model store learns online from that method's own finished
requests only (the cross-request history of the design) and never from another method's
output on the same prompt.

Every ``run`` is timed with ``time.perf_counter`` around the whole call (prefill included)
under ``torch.inference_mode``, and the target model's forward passes are counted with a
forward hook, so that "tokens per step" means the same thing for every method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:  # torch is imported where it is used, so `hierdraft --help` stays fast
    import torch

# Methods that run the transformers model (hierdraft's loop or model.generate).
TORCH_METHODS: tuple[str, ...] = ("ar", "hf-ar", "hf-pld", "context", "model", "corpus", "hd")
# Peers: llama.cpp on the same GGUF file (bench.llama_cpp_methods).
PEER_REFERENCE = "llama.cpp"
PEER_METHODS: tuple[str, ...] = (PEER_REFERENCE, "llama.cpp-pld")
# hierdraft's plain decoding in the fp32 numeric mode, beside a run in the int8 mode.
FP32_METHOD = "ar-fp32"
NUMERICS_METHODS: tuple[str, ...] = (FP32_METHOD,)
ALL_METHODS: tuple[str, ...] = TORCH_METHODS + NUMERICS_METHODS + PEER_METHODS
LEVEL_METHODS: dict[str, tuple[str, ...]] = {
    "context": ("context",),
    "model": ("model",),
    "corpus": ("corpus",),
    "hd": ("context", "model", "corpus"),
}
# Draft length of prompt lookup, for hf-pld and llama.cpp-pld alike (one rule for both).
# transformers' and llama-cpp-python's default is 10, tuned for GPUs where verifying 11 tokens
# costs about as much as one. On a CPU every extra verified row costs a sizeable share of a
# one-token step (mostly the 262k-row LM head), and prompt lookup drafts whenever the last 1-2
# tokens occurred before -- nearly every step, mostly wrongly outside summarization/RAG. So a
# short chain is the better setting; 4 keeps long copies (summarization, RAG) worth drafting.
# The measurement behind it is in the README's benchmark section; --pld-tokens tries others
# and the value used is stated in every report.
DEFAULT_PLD_TOKENS = 4
# transformers' default n-gram size for prompt lookup matching.
DEFAULT_PLD_NGRAM = 2


@dataclass
class PromptRecord:
    """What one method did on one prompt."""

    tokens: list[int]
    elapsed: float
    forwards: int
    draft_times: list[float] = field(default_factory=list)
    verify_times: list[float] = field(default_factory=list)
    prefill_time: float | None = None
    accepted_per_step: list[int] = field(default_factory=list)
    # tokens the prefill step produced (with drafting it can verify a first draft); with
    # prefill_time it gives the decode-only throughput
    prefill_tokens: int | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class DecodeSettings:
    """Settings every method shares."""

    max_new_tokens: int = 96
    temperature: float = 0.0
    eos_token_id: int | list[int] | None = None
    seed: int = 0


class Method(Protocol):
    """A bench method. ``peer`` is True for another engine (llama.cpp), whose outputs are
    compared with the peer reference's rather than with ``ar``'s."""

    name: str
    peer: bool

    def run(self, prompt_ids: Sequence[int]) -> PromptRecord: ...


class ForwardCounter:
    """Counts forward passes of the model (one per verification step, the prefill included).

    The hook sits on the decoder stack (``model.base_model``), not on the causal-LM wrapper:
    every forward goes through the stack once, also when hierdraft's loop calls the stack
    directly and applies the LM head only to the rows it needs.
    """

    def __init__(self, model: torch.nn.Module):
        import torch

        self.count = 0
        target = getattr(model, "base_model", None)
        if not isinstance(target, torch.nn.Module):
            target = model
        self._handle = target.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, args: Any) -> None:
        self.count += 1

    def close(self) -> None:
        self._handle.remove()


def _input_tensor(prompt_ids: Sequence[int], model: torch.nn.Module) -> torch.Tensor:
    import torch

    device = next(model.parameters()).device
    return torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)


class _Base:
    name = "?"
    peer = False
    # whether a sampled output is a pure function of the seed and the logits, as in hierdraft's
    # loop (`hierdraft.draws`): such methods are held to ar's samples as well as its greedy output
    keyed_draws = False

    def __init__(self, model: Any, settings: DecodeSettings, counter: ForwardCounter):
        self.model = model
        self.settings = settings
        self.counter = counter
        self.calls = 0

    def _seed(self) -> int:
        self.calls += 1
        return self.settings.seed + self.calls


class HierdraftMethod(_Base):
    """hierdraft's loop, with a drafter (a level, the hierarchy) or none (``ar``)."""

    keyed_draws = True

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        settings: DecodeSettings,
        counter: ForwardCounter,
        drafter: Any | None,
        generate_fn: Callable[..., Any] | None = None,
    ):
        super().__init__(model, settings, counter)
        self.name = name
        self.drafter = drafter
        if generate_fn is None:
            from hierdraft.decoding import generate

            generate_fn = generate
        self._generate: Callable[..., Any] = generate_fn

    def run(self, prompt_ids: Sequence[int]) -> PromptRecord:
        import torch

        s = self.settings
        input_ids = _input_tensor(prompt_ids, self.model)
        seed = self._seed()
        before = self.counter.count
        with torch.inference_mode():
            t0 = time.perf_counter()
            res = self._generate(
                self.model,
                input_ids,
                drafter=self.drafter,
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                eos_token_id=s.eos_token_id,
                seed=seed,
            )
            elapsed = time.perf_counter() - t0
        return PromptRecord(
            tokens=[int(t) for t in res.tokens],
            elapsed=elapsed,
            forwards=self.counter.count - before,
            # without a drafter there is nothing to time (the loop still records ~0 s a step)
            draft_times=[float(t) for t in res.draft_times] if self.drafter is not None else [],
            verify_times=[float(t) for t in res.verify_times],
            prefill_time=float(res.prefill_time) if res.prefill_time is not None else None,
            accepted_per_step=[int(a) for a in res.accepted_per_step],
            prefill_tokens=_first_step_tokens(res),
        )


class Fp32ReferenceMethod(HierdraftMethod):
    """``ar-fp32``: plain decoding with the quantized model switched to the fp32 numeric mode for
    the call (the run's own mode is restored afterwards). A peer: compared, never a mismatch."""

    peer = True

    def run(self, prompt_ids: Sequence[int]) -> PromptRecord:
        from hierdraft.quant_modules import model_numerics, set_numerics

        mode = model_numerics(self.model)
        if mode is None:
            raise ValueError(f"{FP32_METHOD} needs a quantized model (it switches its numeric mode)")
        set_numerics(self.model, "fp32")
        try:
            return super().run(prompt_ids)
        finally:
            set_numerics(self.model, mode)


def _first_step_tokens(res: Any) -> int | None:
    """Tokens emitted by the prefill step of a generation result (None when it does not say)."""
    emitted = getattr(res, "emitted_per_step", None)
    if emitted:
        return int(emitted[0])
    return None


class HfMethod(_Base):
    """transformers' ``model.generate``: plain (``hf-ar``) or prompt lookup (``hf-pld``)."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        settings: DecodeSettings,
        counter: ForwardCounter,
        prompt_lookup_num_tokens: int | None = None,
        max_matching_ngram_size: int = DEFAULT_PLD_NGRAM,
    ):
        super().__init__(model, settings, counter)
        self.name = name
        self.kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "min_new_tokens": 0,
        }
        eos = settings.eos_token_id
        if eos is not None:
            self.kwargs["eos_token_id"] = eos
            self.kwargs["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
        if settings.temperature > 0:
            # plain temperature sampling, like hierdraft's loop: no top-k / top-p from the
            # model's generation config
            self.kwargs.update(do_sample=True, temperature=settings.temperature, top_k=0, top_p=1.0)
        else:
            self.kwargs.update(do_sample=False)
        if prompt_lookup_num_tokens is not None:
            self.kwargs["prompt_lookup_num_tokens"] = prompt_lookup_num_tokens
            self.kwargs["max_matching_ngram_size"] = max_matching_ngram_size

    def run(self, prompt_ids: Sequence[int]) -> PromptRecord:
        import torch

        input_ids = _input_tensor(prompt_ids, self.model)
        attention_mask = torch.ones_like(input_ids)
        seed = self._seed()
        before = self.counter.count
        with torch.inference_mode():
            if self.settings.temperature > 0:
                torch.manual_seed(seed)
            t0 = time.perf_counter()
            out = self.model.generate(input_ids, attention_mask=attention_mask, **self.kwargs)
            elapsed = time.perf_counter() - t0
        sequence = out.sequences if hasattr(out, "sequences") else out
        tokens = [int(t) for t in sequence[0, input_ids.shape[1] :].tolist()]
        return PromptRecord(tokens=tokens, elapsed=elapsed, forwards=self.counter.count - before)


def build_methods(
    names: Sequence[str],
    model: torch.nn.Module,
    settings: DecodeSettings,
    *,
    drafter_factory: Callable[[tuple[str, ...]], Any] | None = None,
    pld_tokens: int = DEFAULT_PLD_TOKENS,
    generate_fn: Callable[..., Any] | None = None,
) -> tuple[dict[str, Method], ForwardCounter]:
    """Method objects for ``names`` (of ``TORCH_METHODS`` and ``NUMERICS_METHODS``) sharing one model (and one
    forward counter). The llama.cpp peers are built by :mod:`.llama_cpp_methods`.

    ``drafter_factory(order)`` returns a fresh drafter for a level order such as
    ``("context",)``; it is called once per drafting method, so that no two methods share
    the online part of a store (a method must never learn from another's outputs on the
    same prompt).
    """
    known = TORCH_METHODS + NUMERICS_METHODS
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}")
    counter = ForwardCounter(model)
    methods: dict[str, Method] = {}
    for name in names:
        if name == "ar":
            methods[name] = HierdraftMethod(name, model, settings, counter, None, generate_fn)
        elif name == "hf-ar":
            methods[name] = HfMethod(name, model, settings, counter)
        elif name == "hf-pld":
            methods[name] = HfMethod(name, model, settings, counter, prompt_lookup_num_tokens=pld_tokens)
        elif name == FP32_METHOD:
            methods[name] = Fp32ReferenceMethod(name, model, settings, counter, None, generate_fn)
        else:
            if drafter_factory is None:
                raise ValueError(f"method {name!r} needs a drafter factory")
            drafter = drafter_factory(LEVEL_METHODS[name])
            methods[name] = HierdraftMethod(name, model, settings, counter, drafter, generate_fn)
    return methods, counter
