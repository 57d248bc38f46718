"""Bad input to the extension raises TypeError / ValueError naming the problem, never a crash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import hierdraft

VOCAB = 10


def entry_points() -> dict[str, Callable[[Any], object]]:
    """Every call that takes a token sequence, as a one-argument function."""
    model = hierdraft.ModelStore(vocab_size=VOCAB)
    corpus = hierdraft.CorpusIndex.build([[1, 2, 3]], vocab_size=VOCAB)
    drafter = hierdraft.HierarchicalDrafter(model, corpus)
    session = drafter.start([1, 2])
    return {
        "ContextStore.extend": hierdraft.ContextStore().extend,
        "ModelStore.add": model.add,
        "ModelStore.lookup": model.lookup,
        "ModelStore.build": lambda t: hierdraft.ModelStore.build([t], vocab_size=VOCAB),
        "CorpusIndex.lookup": corpus.lookup,
        "CorpusIndex.build": lambda t: hierdraft.CorpusIndex.build([t], vocab_size=VOCAB),
        "HierarchicalDrafter.start": drafter.start,
        "DraftSession.accept": session.accept,
    }


ENTRY_NAMES = list(entry_points())


@pytest.mark.parametrize("name", ENTRY_NAMES)
@pytest.mark.parametrize("dtype", [np.uint32, np.int32, np.int64])
def test_accepted_dtypes(name: str, dtype: type) -> None:
    entry_points()[name](np.array([1, 2, 3], dtype=dtype))
    entry_points()[name]([1, 2, 3])
    entry_points()[name]((1, 2, 3))


@pytest.mark.parametrize("name", ENTRY_NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint64, np.int16, np.uint8, np.bool_])
def test_wrong_dtype_is_type_error(name: str, dtype: type) -> None:
    with pytest.raises(TypeError, match="dtype"):
        entry_points()[name](np.array([1, 2, 3], dtype=dtype))


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_non_contiguous_is_value_error(name: str) -> None:
    arr = np.arange(8, dtype=np.uint32)[::2]
    assert not arr.flags.c_contiguous
    with pytest.raises(ValueError, match="contiguous"):
        entry_points()[name](arr)


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_not_one_dimensional(name: str) -> None:
    with pytest.raises(ValueError, match="1-D"):
        entry_points()[name](np.zeros((2, 2), dtype=np.uint32))
    with pytest.raises(ValueError, match="1-D"):
        entry_points()[name](np.array(3, dtype=np.int64))


@pytest.mark.parametrize("name", ENTRY_NAMES)
@pytest.mark.parametrize(
    "bad",
    [
        [1, -2],
        np.array([1, -2], dtype=np.int32),
        np.array([1, -2], dtype=np.int64),
        [-(2**70)],
    ],
    ids=["list", "int32", "int64", "huge-negative"],
)
def test_negative_ids(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        entry_points()[name](bad)


@pytest.mark.parametrize("name", ENTRY_NAMES)
@pytest.mark.parametrize(
    "bad", [[2**32], np.array([2**40], dtype=np.int64), [2**80]], ids=["list", "int64", "huge"]
)
def test_ids_beyond_u32(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match="32 bits"):
        entry_points()[name](bad)


@pytest.mark.parametrize("name", ENTRY_NAMES)
@pytest.mark.parametrize("bad", [[1, "a"], [1.5], [None], "123", 5, {1, 2}, b"ab"])
def test_non_token_inputs_are_type_errors(name: str, bad: Any) -> None:
    with pytest.raises(TypeError):
        entry_points()[name](bad)


@pytest.mark.parametrize("name", [n for n in ENTRY_NAMES if n != "ContextStore.extend"])
def test_ids_at_or_above_vocab(name: str) -> None:
    # (A context store has no vocabulary; its drafter checks the tokens it gets.)
    with pytest.raises(ValueError, match="vocab"):
        entry_points()[name]([1, VOCAB])
    with pytest.raises(ValueError, match="vocab"):
        entry_points()[name](np.array([VOCAB + 5], dtype=np.uint32))


def test_numpy_integer_scalars_in_lists() -> None:
    store = hierdraft.ContextStore()
    store.extend([np.int64(3), np.uint32(4), True])
    assert store.tokens.tolist() == [3, 4, 1]


def test_reserved_separator_token() -> None:
    with pytest.raises(ValueError, match="reserved"):
        hierdraft.CorpusIndex.build([[1, 2**32 - 1]])
    with pytest.raises(ValueError, match="reserved"):
        hierdraft.ModelStore().add([2**32 - 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": 0}, "budget"),
        ({"budget": -1}, "budget"),
        ({"max_depth": 0}, "max_depth"),
        ({"context_candidates": 0}, "context_candidates"),
        ({"model_candidates": 0}, "model_candidates"),
        ({"corpus_candidates": 0}, "corpus_candidates"),
        ({"context_min_ngram": 0}, "min_ngram"),
        ({"context_min_ngram": 3, "context_max_ngram": 2}, "ngram"),
        ({"context_max_ngram": 1000}, "ngram"),
        ({"order": ("context", "nope")}, "unknown level"),
        ({"order": ("model", "model")}, "twice"),
    ],
)
def test_bad_drafter_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hierdraft.HierarchicalDrafter(**kwargs)


def test_bad_drafter_argument_types() -> None:
    with pytest.raises(TypeError):
        hierdraft.HierarchicalDrafter(order="context")
    with pytest.raises(TypeError):
        hierdraft.HierarchicalDrafter(model_store=hierdraft.ContextStore())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hierdraft.HierarchicalDrafter().propose_batch([1])  # type: ignore[list-item]


@pytest.mark.parametrize("order", [(), []])
def test_empty_order_is_refused(order: Any) -> None:
    # A drafter that reads no level would never draft: refused instead of silently useless.
    with pytest.raises(ValueError, match="order names no level"):
        hierdraft.HierarchicalDrafter(order=order)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_ngram": 0},
        {"min_ngram": 3, "max_ngram": 2},
        {"max_ngram": 1000},
        {"min_ngram": -1},
    ],
)
def test_bad_context_store_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="ngram"):
        hierdraft.ContextStore(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_ngram": 0}, "min_ngram"),
        ({"max_ngram": 100}, "max_ngram"),
        ({"continuation_len": 0}, "continuation_len"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": -3}, "top_k"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 2**32}, "vocab_size"),
    ],
)
def test_bad_model_store_settings(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hierdraft.ModelStore(**kwargs)
    with pytest.raises(ValueError, match=match):
        hierdraft.ModelStore.build([[1, 2]], **kwargs)


def test_negative_lookup_sizes() -> None:
    with pytest.raises(ValueError, match="k must be"):
        hierdraft.ContextStore().lookup(k=-1)
    with pytest.raises(ValueError, match="max_len"):
        hierdraft.ModelStore().lookup([1], max_len=-1)


@pytest.mark.parametrize("docs", [[], [[]], [[], np.array([], dtype=np.uint32)]])
def test_empty_corpus(docs: list[Any]) -> None:
    with pytest.raises(ValueError, match="empty"):
        hierdraft.CorpusIndex.build(docs)


def test_documents_must_be_a_collection_of_sequences() -> None:
    with pytest.raises(TypeError, match="documents"):
        hierdraft.CorpusIndex.build(np.array([1, 2, 3], dtype=np.uint32))
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        hierdraft.CorpusIndex.build([1, 2, 3])
    with pytest.raises(TypeError, match="sequences"):
        hierdraft.ModelStore.build("abc")
    with pytest.raises(ValueError, match=r"sequences\[1\]\[0\]"):
        hierdraft.ModelStore.build([[1], [-1]])
