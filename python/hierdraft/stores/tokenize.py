"""Batched, parallel tokenization of documents with a fast (Rust) tokenizer.

Accepts a transformers tokenizer (its ``backend_tokenizer`` is used directly, which is several
times faster than the Python wrapper) or a ``tokenizers.Tokenizer``. Batches are encoded by the
tokenizers library's own thread pool (``TOKENIZERS_PARALLELISM`` / ``RAYON_NUM_THREADS``).
No special tokens are added: corpus documents are plain continuations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["batch_encoder", "tokenize_batches", "vocab_size_of"]


def batch_encoder(tokenizer: Any) -> Callable[[list[str]], list[list[int]]]:
    """A function ``texts -> token id lists`` (no special tokens) for ``tokenizer``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "encode_batch"):
        backend = tokenizer  # a tokenizers.Tokenizer
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch

        def encode_backend(texts: list[str]) -> list[list[int]]:
            return [enc.ids for enc in encode(texts, add_special_tokens=False)]

        return encode_backend
    if callable(tokenizer):

        def encode_slow(texts: list[str]) -> list[list[int]]:
            return list(tokenizer(texts, add_special_tokens=False)["input_ids"])

        return encode_slow
    raise TypeError(f"cannot tokenize with {type(tokenizer).__name__}: need a fast tokenizer")


def vocab_size_of(tokenizer: Any) -> int:
    """Number of token ids the tokenizer can produce (added tokens included)."""
    if hasattr(tokenizer, "get_vocab_size"):
        return int(tokenizer.get_vocab_size(with_added_tokens=True))
    return int(len(tokenizer))


def tokenize_batches(
    tokenizer: Any, texts: Iterable[str], batch_size: int = 512
) -> Iterator[tuple[list[np.ndarray], int]]:
    """Yield ``(token arrays, number of texts)`` per batch; empty encodings are dropped."""
    encode = batch_encoder(tokenizer)
    batch: list[str] = []

    def flush() -> tuple[list[np.ndarray], int]:
        ids = encode(batch)
        arrays = [np.asarray(x, dtype=np.uint32) for x in ids if len(x)]
        return arrays, len(batch)

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            yield flush()
            batch = []
    if batch:
        yield flush()
