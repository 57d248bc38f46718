"""The proposer's settings, read once from vLLM's config, the environment and built-in defaults.

Everything the proposer needs from a ``VllmConfig`` is read here and nowhere else, with plain
attribute access, so that tests can pass a small stand-in object with the same attributes:

- ``speculative_config.num_speculative_tokens``: K, the longest chain returned per row;
- ``model_config.max_model_len``: no chain runs past it;
- ``model_config.tokenizer`` / ``tokenizer_revision`` / ``trust_remote_code``: the served
  tokenizer, which picks the default stores and checks the configured ones;
- ``model_config.get_vocab_size()``: the model's vocabulary, a store may not exceed it;
- ``scheduler_config.max_num_seqs``: sizes the pool of idle sessions;
- ``additional_config["hierdraft"]``: hierdraft's own options (a dict; vLLM's
  ``SpeculativeConfig`` forbids unknown fields, ``additional_config`` is its free-form dict).

Drafting for chains: vLLM verifies one chain of at most K tokens per row, so the drafter's tree
budget defaults to K nodes (the hierarchy stops at the first level that brings the tree to K
nodes: a context chain of K tokens ends it, and the corpus is read only when the closer levels
found fewer), each level gives its best ``CHAIN_CANDIDATES`` chain(s), and a corpus lookup reads
at most ``CHAIN_CORPUS_OCCURRENCES`` occurrences. ``budget``, ``candidates`` and
``corpus_max_occurrences`` in ``additional_config["hierdraft"]`` override them.

Store choice per level, first match wins: ``additional_config["hierdraft"]["model_store"]`` /
``["corpus_index"]``, then ``$HIERDRAFT_MODEL_STORE`` / ``$HIERDRAFT_CORPUS_INDEX``, then the
default stores of the served tokenizer. A value of ``"none"`` (or ``"off"``) turns the level off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "CHAIN_CANDIDATES",
    "CHAIN_CORPUS_OCCURRENCES",
    "CONFIG_KEY",
    "ENV_CORPUS_INDEX",
    "ENV_MODEL_STORE",
    "ProposerOptions",
    "StoreSource",
    "options_from_vllm_config",
]

CONFIG_KEY = "hierdraft"
ENV_MODEL_STORE = "HIERDRAFT_MODEL_STORE"
ENV_CORPUS_INDEX = "HIERDRAFT_CORPUS_INDEX"
_OFF = frozenset({"none", "off"})
# Finished requests' sessions wait in an idle pool (a preempted request may come back to its
# session); the pool holds this many per scheduler slot, and at least the minimum.
IDLE_SESSIONS_PER_SEQ = 2
MIN_IDLE_SESSIONS = 64
# The chain drafter's settings (see the module docstring); the README reports what they cost
# and what they draft compared with the drafter's own defaults.
CHAIN_CANDIDATES = 1
CHAIN_CORPUS_OCCURRENCES = 32
_CONFIG_FIELDS = (
    "model_store", "corpus_index", "budget", "candidates", "corpus_max_occurrences", "order",
    "max_idle_sessions", "learn",
)


@dataclass(frozen=True)
class StoreSource:
    """Where one level's store comes from: ``kind`` is "default", "off" or "path"."""

    kind: str
    path: str | None = None
    origin: str = "default"  # what chose it: "additional_config", an env var name, or "default"

    @staticmethod
    def parse(value: Any, origin: str) -> StoreSource:
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{origin}: a store must be a path or 'none', got {type(value).__name__}")
        text = os.fspath(value).strip()
        if not text:
            raise ValueError(f"{origin}: empty store path (use 'none' to turn the level off)")
        if text.lower() in _OFF:
            return StoreSource("off", None, origin)
        return StoreSource("path", os.path.expanduser(text), origin)


@dataclass(frozen=True)
class ProposerOptions:
    """What the proposer was configured with (see the module docstring for the sources)."""

    num_speculative_tokens: int
    max_model_len: int
    max_num_seqs: int
    tokenizer: str | None
    tokenizer_revision: str | None
    trust_remote_code: bool
    model_vocab_size: int | None
    model_store: StoreSource
    corpus_index: StoreSource
    budget: int  # draft tree nodes (default: num_speculative_tokens)
    candidates: int  # chains each level gives (default: CHAIN_CANDIDATES)
    corpus_max_occurrences: int  # occurrences a corpus lookup reads (default: CHAIN_CORPUS_OCCURRENCES)
    order: tuple[str, ...] | None  # None: the drafter's default level order
    max_idle_sessions: int
    learn: bool


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _store_source(own: Mapping[str, Any], key: str, env: str, environ: Mapping[str, str]) -> StoreSource:
    if own.get(key) is not None:
        return StoreSource.parse(own[key], f"additional_config[{CONFIG_KEY!r}][{key!r}]")
    if environ.get(env, "").strip():
        return StoreSource.parse(environ[env], env)
    return StoreSource("default")


def _own_options(vllm_config: Any) -> Mapping[str, Any]:
    extra = getattr(vllm_config, "additional_config", None) or {}
    if not isinstance(extra, Mapping):
        return {}
    own = extra.get(CONFIG_KEY) or {}
    if not isinstance(own, Mapping):
        raise TypeError(f"additional_config[{CONFIG_KEY!r}] must be a dict, got {type(own).__name__}")
    unknown = sorted(set(own) - set(_CONFIG_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown hierdraft option(s) {', '.join(map(repr, unknown))} in additional_config[{CONFIG_KEY!r}]; "
            f"known: {', '.join(_CONFIG_FIELDS)}"
        )
    return own


def _vocab_size(model_config: Any) -> int | None:
    get = getattr(model_config, "get_vocab_size", None)
    if not callable(get):
        return None
    value = get()
    return int(value) if isinstance(value, int) and value > 0 else None


def options_from_vllm_config(vllm_config: Any, environ: Mapping[str, str] | None = None) -> ProposerOptions:
    """Read :class:`ProposerOptions` from a ``VllmConfig`` (or an object with its attributes)."""
    environ = os.environ if environ is None else environ
    spec = getattr(vllm_config, "speculative_config", None)
    if spec is None:
        raise ValueError("vllm_config.speculative_config is missing: HierdraftProposer is a speculative proposer")
    k = _positive_int(getattr(spec, "num_speculative_tokens", None), "speculative_config.num_speculative_tokens")
    model_config = getattr(vllm_config, "model_config", None)
    max_len = _positive_int(getattr(model_config, "max_model_len", None), "model_config.max_model_len")
    scheduler = getattr(vllm_config, "scheduler_config", None)
    max_seqs = getattr(scheduler, "max_num_seqs", None)
    max_seqs = _positive_int(max_seqs, "scheduler_config.max_num_seqs") if max_seqs is not None else 1
    own = _own_options(vllm_config)

    def own_int(key: str, default: int) -> int:
        value = own.get(key)
        return default if value is None else _positive_int(value, f"additional_config[{CONFIG_KEY!r}][{key!r}]")

    budget = own_int("budget", k)
    candidates = own_int("candidates", CHAIN_CANDIDATES)
    corpus_occurrences = own_int("corpus_max_occurrences", CHAIN_CORPUS_OCCURRENCES)
    order = own.get("order")
    if order is not None:
        if isinstance(order, str) or not all(isinstance(x, str) for x in order):
            raise TypeError(f"additional_config[{CONFIG_KEY!r}]['order'] must be a list of level names")
        order = tuple(order)
    idle = own.get("max_idle_sessions")
    if idle is None:
        idle = max(MIN_IDLE_SESSIONS, IDLE_SESSIONS_PER_SEQ * max_seqs)
    else:
        idle = _positive_int(idle, f"additional_config[{CONFIG_KEY!r}]['max_idle_sessions']")
    learn = own.get("learn", True)
    if not isinstance(learn, bool):
        raise TypeError(f"additional_config[{CONFIG_KEY!r}]['learn'] must be true or false")

    tokenizer = getattr(model_config, "tokenizer", None) if model_config is not None else None
    return ProposerOptions(
        num_speculative_tokens=k,
        max_model_len=max_len,
        max_num_seqs=max_seqs,
        tokenizer=str(tokenizer) if tokenizer else None,
        tokenizer_revision=getattr(model_config, "tokenizer_revision", None),
        trust_remote_code=bool(getattr(model_config, "trust_remote_code", False)),
        model_vocab_size=_vocab_size(model_config),
        model_store=_store_source(own, "model_store", ENV_MODEL_STORE, environ),
        corpus_index=_store_source(own, "corpus_index", ENV_CORPUS_INDEX, environ),
        budget=budget,
        candidates=candidates,
        corpus_max_occurrences=corpus_occurrences,
        order=order,
        max_idle_sessions=idle,
        learn=learn,
    )
