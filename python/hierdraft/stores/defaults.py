"""The default stores of a tokenizer, kept in the cache directory and built on first use.

``default_drafter(tokenizer, model)`` is the one call most users need: it loads the default
model store and corpus index for this tokenizer from ``paths.stores_dir()`` (building the
missing ones first, with a message and progress bars) and returns a ``HierarchicalDrafter``.

Sizes: the corpus index is the whole ShareGPT package (128,935 turns, 26.8M Gemma tokens,
205 MiB), tokenized and indexed once. The model store is ``SMALL_MODEL_PROMPTS`` x
``SMALL_MODEL_TOKENS`` greedy generations by default, kept small because it is decoded by the
target model itself on first use; ``full=True`` (CLI: ``hierdraft build defaults --full``) uses
``FULL_MODEL_PROMPTS`` x ``FULL_MODEL_TOKENS``. The README gives how long each build takes.
Files are named by their size; the largest one present is used.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import paths
from ..models import tokenizer_fingerprint
from .progress import say

__all__ = [
    "SMALL_CORPUS_DOCUMENTS",
    "SMALL_MODEL_PROMPTS",
    "SMALL_MODEL_TOKENS",
    "FULL_MODEL_PROMPTS",
    "FULL_MODEL_TOKENS",
    "default_store_dir",
    "default_store_paths",
    "existing_default_stores",
    "default_stores",
    "default_drafter",
    "build_default_stores",
]

SMALL_CORPUS_DOCUMENTS: int | None = None  # None: the whole ShareGPT package
FULL_CORPUS_DOCUMENTS: int | None = None
SMALL_MODEL_PROMPTS = 20
SMALL_MODEL_TOKENS = 128
FULL_MODEL_PROMPTS = 400
FULL_MODEL_TOKENS = 256


def default_store_dir(tokenizer: Any) -> Path:
    """``<cache>/stores/<tokenizer name>-<vocab hash>``: one folder per tokenizer."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    name, *_rest = fingerprint.split("|")
    digest = fingerprint.rsplit("sha256=", 1)[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "tokenizer"
    return paths.stores_dir() / f"{safe[:48]}-{digest}"


def _sizes(full: bool) -> tuple[int | None, int, int]:
    if full:
        return FULL_CORPUS_DOCUMENTS, FULL_MODEL_PROMPTS, FULL_MODEL_TOKENS
    return SMALL_CORPUS_DOCUMENTS, SMALL_MODEL_PROMPTS, SMALL_MODEL_TOKENS


def default_store_paths(tokenizer: Any, full: bool = False) -> tuple[Path, Path]:
    """``(model_store_path, corpus_index_path)`` that a small or full default build writes."""
    folder = default_store_dir(tokenizer)
    docs, prompts, tokens = _sizes(full)
    corpus_tag = "all" if docs is None else str(docs)
    return folder / f"model-sharegpt-{prompts}x{tokens}.hdms", folder / f"corpus-sharegpt-{corpus_tag}.hdci"


def _size_of(path: Path) -> float:
    match = re.search(r"-(\d+)x(\d+)\.hdms$", path.name)
    if match:
        return int(match.group(1)) * int(match.group(2))
    match = re.search(r"-(all|\d+)\.hdci$", path.name)
    if match:
        return float("inf") if match.group(1) == "all" else int(match.group(1))
    return -1


def existing_default_stores(tokenizer: Any) -> tuple[Path | None, Path | None]:
    """The largest model store and corpus index already in the tokenizer's default folder."""
    folder = default_store_dir(tokenizer)
    if not folder.is_dir():
        return None, None
    model_stores = sorted(folder.glob("model-sharegpt-*.hdms"), key=_size_of)
    corpora = sorted(folder.glob("corpus-sharegpt-*.hdci"), key=_size_of)
    return (model_stores[-1] if model_stores else None, corpora[-1] if corpora else None)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """One builder per store folder at a time (other processes wait, then reuse its result)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_default_stores(
    tokenizer: Any,
    model: Any = None,
    *,
    full: bool = False,
    corpus: bool = True,
    model_store: bool = True,
    progress: bool = True,
) -> tuple[Path | None, Path | None]:
    """Build the (missing) default stores; returns their paths (None where not built)."""
    from .corpus import build_corpus_index
    from .model_store import build_model_store

    model_path, corpus_path = default_store_paths(tokenizer, full=full)
    with _build_lock(model_path.parent):
        docs, n, m = _sizes(full)
        if corpus and not corpus_path.is_file():
            say(
                f"building the default corpus index ({'all' if docs is None else f'{docs:,}'} ShareGPT turns) "
                f"in {corpus_path}; this happens once",
                progress,
            )
            build_corpus_index(tokenizer, "sharegpt", corpus_path, max_documents=docs, progress=progress)
        if model_store and not model_path.is_file():
            if model is None:
                say("no model given: the default model store cannot be built now (pass model=...)", progress)
            else:
                say(
                    f"building the default model store ({n} ShareGPT prompts x {m} tokens, greedy) "
                    f"in {model_path}; this happens once",
                    progress,
                )
                build_model_store(
                    model, tokenizer, "sharegpt", num_prompts=n, max_new_tokens=m, out=model_path,
                    overwrite=True, progress=progress,
                )
    return (model_path if model_path.is_file() else None, corpus_path if corpus_path.is_file() else None)


def default_stores(
    tokenizer: Any,
    model: Any = None,
    *,
    build_if_missing: bool = True,
    full: bool = False,
    progress: bool = True,
) -> tuple[Any, Any]:
    """``(ModelStore | None, CorpusIndex | None)`` of the default stores for ``tokenizer``.

    Missing stores are built first when ``build_if_missing`` (the model store needs ``model``).
    The largest stores present are used; ``full`` builds the full-size ones when only smaller
    ones (or none) exist.
    """
    from .metadata import load_corpus_index, load_model_store

    model_path, corpus_path = existing_default_stores(tokenizer)
    if full:
        # a full build was asked for: only stores at least that large count as present
        want_model, want_corpus = default_store_paths(tokenizer, full=True)
        if model_path is not None and _size_of(model_path) < _size_of(want_model):
            model_path = None
        if corpus_path is not None and _size_of(corpus_path) < _size_of(want_corpus):
            corpus_path = None
    need_model = model_path is None and model is not None
    if build_if_missing and (corpus_path is None or need_model):
        built_model, built_corpus = build_default_stores(
            tokenizer, model, full=full, corpus=corpus_path is None, model_store=need_model, progress=progress
        )
        model_path = model_path or built_model
        corpus_path = corpus_path or built_corpus
    model_store = load_model_store(model_path, tokenizer) if model_path is not None else None
    corpus_index = load_corpus_index(corpus_path, tokenizer) if corpus_path is not None else None
    if model_store is None and progress:
        print(
            "[hierdraft] no default model store for this tokenizer: drafting without the model level "
            "(build one with `hierdraft build model` or default_drafter(tokenizer, model=...))",
            file=sys.stderr,
        )
    return model_store, corpus_index


def default_drafter(
    tokenizer: Any,
    model: Any = None,
    build_if_missing: bool = True,
    *,
    full: bool = False,
    progress: bool = True,
    **drafter_kwargs: Any,
):
    """A ``HierarchicalDrafter`` over the default stores of ``tokenizer`` (built on first use).

    ``drafter_kwargs`` go to ``HierarchicalDrafter`` (``budget``, ``order``, ``max_depth``, ...).
    Set ``HIERDRAFT_NO_BUILD=1`` to never build (use only what is already cached).
    """
    from .. import _core

    if os.environ.get("HIERDRAFT_NO_BUILD", "").strip() not in ("", "0"):
        build_if_missing = False
    model_store, corpus_index = default_stores(
        tokenizer, model, build_if_missing=build_if_missing, full=full, progress=progress
    )
    return _core.HierarchicalDrafter(model_store=model_store, corpus_index=corpus_index, **drafter_kwargs)
