"""The metadata string stored inside every store file, and loading stores with checks.

Stores carry a free-form metadata string; hierdraft writes a small JSON object into it:
``{"kind": "corpus"|"model", "tokenizer": <fingerprint>, ...build facts}``. Loading a store
for a tokenizer checks the fingerprint's vocabulary hash and raises
:class:`~hierdraft.models.TokenizerMismatchError` when the store was built for another one.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..models import check_tokenizer_fingerprint, tokenizer_fingerprint
from .tokenize import vocab_size_of

__all__ = ["encode_metadata", "decode_metadata", "load_corpus_index", "load_model_store", "store_fingerprint"]


def encode_metadata(kind: str, tokenizer: Any, **facts: Any) -> str:
    info = {"kind": kind, "tokenizer": tokenizer_fingerprint(tokenizer)}
    info.update({k: v for k, v in facts.items() if v is not None})
    return json.dumps(info, sort_keys=True, separators=(",", ":"))


def decode_metadata(metadata: str) -> dict[str, Any]:
    """The metadata as a dict (a plain non-JSON string is taken as a bare fingerprint)."""
    if not metadata:
        return {}
    try:
        value = json.loads(metadata)
    except json.JSONDecodeError:
        return {"tokenizer": metadata}
    return value if isinstance(value, dict) else {"tokenizer": str(value)}


def store_fingerprint(store: Any) -> str:
    return str(decode_metadata(getattr(store, "metadata", "") or "").get("tokenizer", ""))


def _check(store: Any, tokenizer: Any, what: str, path: str | os.PathLike[str]) -> None:
    if tokenizer is not None:
        check_tokenizer_fingerprint(store_fingerprint(store), tokenizer, what=f"{what} {os.fspath(path)}")


def load_corpus_index(path: str | os.PathLike[str], tokenizer: Any = None):
    """Load (memory-map) a corpus index, checking it was built with ``tokenizer``."""
    from .. import _core

    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus index not found: {path}")
    vocab = vocab_size_of(tokenizer) if tokenizer is not None else None
    index = _core.CorpusIndex.load(os.fspath(path))
    _check(index, tokenizer, "corpus index", path)
    if vocab is not None and index.vocab_size is not None and index.vocab_size > vocab:
        raise ValueError(f"corpus index {path} has vocab size {index.vocab_size} > tokenizer's {vocab}")
    return index


def load_model_store(path: str | os.PathLike[str], tokenizer: Any = None):
    """Load a model store, checking it was built with ``tokenizer``."""
    from .. import _core

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model store not found: {path}")
    store = _core.ModelStore.load(os.fspath(path))
    _check(store, tokenizer, "model store", path)
    vocab = vocab_size_of(tokenizer) if tokenizer is not None else None
    if vocab is not None and store.vocab_size is not None and store.vocab_size > vocab:
        raise ValueError(f"model store {path} has vocab size {store.vocab_size} > tokenizer's {vocab}")
    return store
