"""The drafter behind the vLLM proposer: the served tokenizer, the stores it drafts from.

Per level (model store, corpus index) the :class:`~hierdraft.vllm.options.StoreSource` says what to
load:

- a path: loaded memory-mapped (``CorpusIndex.load`` / ``ModelStore.load``), so every worker on a
  machine shares the same pages; with the served tokenizer known, a store that another tokenizer
  built is refused (:class:`~hierdraft.models.TokenizerMismatchError` names both);
- "off": the level is left out;
- "default": the default store of the served tokenizer in hierdraft's cache
  (``hierdraft build defaults`` writes them). A missing default corpus index is built on first
  use, like :func:`hierdraft.default_drafter` does (``HIERDRAFT_NO_BUILD=1`` forbids it); a missing
  default model store is not (building one runs the model through hierdraft's own loop).

With no tokenizer known (``model_config`` or its ``tokenizer`` is None, e.g. in unit tests) the
default levels are left out, and the proposer drafts from the context level alone; that is
logged once per process.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .options import ProposerOptions, StoreSource

__all__ = ["build_drafter", "served_tokenizer"]

# Under vLLM's logger namespace, so that messages go through vLLM's handlers and format.
log = logging.getLogger("vllm.hierdraft")
_logged_once: set[str] = set()


def _log_once(level: int, message: str) -> None:
    if message not in _logged_once:
        _logged_once.add(message)
        log.log(level, message)


def served_tokenizer(options: ProposerOptions) -> Any | None:
    """The served model's Hugging Face tokenizer, or None when the config names none.

    hierdraft's converted default model (a folder with hierdraft's marker file) gets the name
    hierdraft itself uses, so that its default stores are found under the same name.
    """
    if options.tokenizer is None:
        return None
    from transformers import AutoTokenizer

    from ..models import _COMPLETE_MARKER, DEFAULT_MODEL_ID

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            options.tokenizer, revision=options.tokenizer_revision, trust_remote_code=options.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"hierdraft could not load the served tokenizer {options.tokenizer!r}: {exc}") from exc
    marker = Path(options.tokenizer) / _COMPLETE_MARKER
    if marker.is_file():
        try:
            tokenizer.name_or_path = json.loads(marker.read_text()).get("model_id") or DEFAULT_MODEL_ID
        except (OSError, ValueError):
            tokenizer.name_or_path = DEFAULT_MODEL_ID
    return tokenizer


def _check_vocab(store: Any, what: str, path: str, options: ProposerOptions) -> None:
    vocab = getattr(store, "vocab_size", None)
    if vocab is not None and options.model_vocab_size is not None and vocab > options.model_vocab_size:
        raise ValueError(
            f"{what} {path} has vocab size {vocab}, larger than the served model's {options.model_vocab_size}: "
            f"it was built for another model"
        )


def _load(kind: str, path: str, tokenizer: Any | None, options: ProposerOptions, origin: str) -> Any:
    from ..stores import load_corpus_index, load_model_store

    what = "model store" if kind == "model" else "corpus index"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} (from {origin}) does not exist")
    if tokenizer is None:
        _log_once(
            logging.WARNING,
            f"hierdraft: no served tokenizer known, so the {what} {path} cannot be checked against it",
        )
    store = (load_model_store if kind == "model" else load_corpus_index)(path, tokenizer)
    _check_vocab(store, what, path, options)
    return store


def _no_build() -> bool:
    # The same switch hierdraft.default_drafter honours.
    return os.environ.get("HIERDRAFT_NO_BUILD", "").strip() not in ("", "0")


def _default_paths(tokenizer: Any, want_model: bool, want_corpus: bool) -> tuple[str | None, str | None]:
    from ..stores.defaults import build_default_stores, existing_default_stores

    model_path, corpus_path = existing_default_stores(tokenizer)
    if want_corpus and corpus_path is None and not _no_build():
        _model, corpus_path = build_default_stores(tokenizer, None, corpus=True, model_store=False)
    if want_model and model_path is None:
        _log_once(
            logging.WARNING,
            "hierdraft: no default model store for this tokenizer, drafting without the model level "
            "(`hierdraft build defaults --model MODEL` builds one; or set HIERDRAFT_MODEL_STORE)",
        )
    if want_corpus and corpus_path is None:
        _log_once(logging.WARNING, "hierdraft: no default corpus index (HIERDRAFT_NO_BUILD is set), drafting without it")
    return (
        os.fspath(model_path) if want_model and model_path else None,
        os.fspath(corpus_path) if want_corpus and corpus_path else None,
    )


def _resolve(
    sources: dict[str, StoreSource], tokenizer: Any | None, options: ProposerOptions
) -> dict[str, Any | None]:
    """The loaded store of each level ("model", "corpus"), None where it is off or unavailable."""
    paths: dict[str, tuple[str, str] | None] = {}
    for kind, source in sources.items():
        paths[kind] = (source.path, source.origin) if source.kind == "path" and source.path else None
    defaults = [kind for kind, source in sources.items() if source.kind == "default"]
    if defaults and tokenizer is not None:
        model_path, corpus_path = _default_paths(tokenizer, "model" in defaults, "corpus" in defaults)
        for kind, path in (("model", model_path), ("corpus", corpus_path)):
            if kind in defaults and path is not None:
                paths[kind] = (path, "the default stores")
    return {
        kind: (_load(kind, found[0], tokenizer, options, found[1]) if found is not None else None)
        for kind, found in paths.items()
    }


def build_drafter(options: ProposerOptions, tokenizer: Any | None = None) -> Any:
    """A ``HierarchicalDrafter`` over the configured stores, set up for chains (depth and default
    budget the number of speculative tokens; see :mod:`hierdraft.vllm.options`). ``tokenizer``
    overrides :func:`served_tokenizer` (tests pass one)."""
    from .. import _core

    if tokenizer is None:
        tokenizer = served_tokenizer(options)
    sources = {"model": options.model_store, "corpus": options.corpus_index}
    stores = _resolve(sources, tokenizer, options)
    if tokenizer is None and any(s.kind == "default" for s in sources.values()):
        alone = all(store is None for store in stores.values())
        _log_once(
            logging.WARNING,
            "hierdraft: no tokenizer known (model_config.tokenizer is None), so no default store is used"
            + ("; drafting from the context level alone" if alone else ""),
        )
    kwargs: dict[str, Any] = {
        "max_depth": options.num_speculative_tokens,
        "budget": options.budget,
        "context_candidates": options.candidates,
        "model_candidates": options.candidates,
        "corpus_candidates": options.candidates,
        "corpus_max_occurrences": options.corpus_max_occurrences,
    }
    if options.order is not None:
        kwargs["order"] = options.order
    drafter = _core.HierarchicalDrafter(model_store=stores["model"], corpus_index=stores["corpus"], **kwargs)
    levels = ["context"] + [name for name, store in stores.items() if store is not None]
    log.info("hierdraft proposer: levels %s, K=%d, %r", "+".join(levels), options.num_speculative_tokens, drafter)
    return drafter
