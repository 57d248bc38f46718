"""Saving and loading ModelStore / CorpusIndex: round trips, and clear exceptions for missing,
foreign, truncated, corrupted, wrong-version and wrong-vocabulary files."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hierdraft

SEQS = [[1, 2, 3, 4, 1, 2, 5], [2, 3, 4, 6, 7], [1, 2, 3, 4]]


def lookups(store: Any, contexts: list[list[int]]) -> list[list[tuple[list[int], float]]]:
    return [[(a.tolist(), s) for a, s in store.lookup(c, k=8, max_len=8)] for c in contexts]


CONTEXTS = [[1], [2], [1, 2], [9, 2, 3], [4], [7], []]


def make_model() -> hierdraft.ModelStore:
    return hierdraft.ModelStore.build(SEQS, vocab_size=20, metadata="tokenizer=t;hash=1")


def make_corpus() -> hierdraft.CorpusIndex:
    return hierdraft.CorpusIndex.build(SEQS, vocab_size=20, metadata="corpus=c")


KINDS = {
    "model": (make_model, hierdraft.ModelStore.load),
    "corpus": (make_corpus, hierdraft.CorpusIndex.load),
}


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind: str, tmp_path: Path) -> None:
    make, load = KINDS[kind]
    store = make()
    path = tmp_path / f"{kind}.bin"
    store.save(path)
    assert not [p for p in os.listdir(tmp_path) if p != path.name], "no temporary file left"
    for loaded in (load(path), load(str(path)), load(path, expected_vocab_size=20)):
        assert lookups(loaded, CONTEXTS) == lookups(store, CONTEXTS)
        assert loaded.vocab_size == 20 and loaded.metadata == store.metadata
    store.save(path)  # overwriting is fine


def test_model_round_trip_with_online_part(tmp_path: Path) -> None:
    store = make_model()
    store.add([4, 6, 9, 9])
    store.save(tmp_path / "m.bin")
    loaded = hierdraft.ModelStore.load(tmp_path / "m.bin")
    assert loaded.num_keys == store.num_keys
    # Online data wins count ties while it lives in its own segment; saving merges everything
    # into one segment, so only the order among equal counts may change.
    for ctx in CONTEXTS:
        before = {tuple(a.tolist()) for a, _ in store.lookup(ctx, k=100, max_len=8)}
        after = {tuple(a.tolist()) for a, _ in loaded.lookup(ctx, k=100, max_len=8)}
        assert before == after


def test_loaded_model_store_keeps_growing(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    make_model().save(path)
    loaded = hierdraft.ModelStore.load(path)
    loaded.add([15, 16, 17])
    assert [a.tolist() for a, _ in loaded.lookup([15])] == [[16, 17]]
    assert loaded.num_keys > make_model().num_keys


def test_corpus_properties_survive(tmp_path: Path) -> None:
    index = make_corpus()
    index.save(tmp_path / "c.bin")
    loaded = hierdraft.CorpusIndex.load(tmp_path / "c.bin")
    assert (loaded.num_tokens, loaded.num_documents) == (index.num_tokens, index.num_documents)
    assert loaded.bytes_per_token <= 8.0 + 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_missing_file(kind: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        KINDS[kind][1](tmp_path / "nope.bin")
    assert err.value.filename and "nope.bin" in err.value.filename


@pytest.mark.parametrize("kind", KINDS)
def test_save_into_missing_directory(kind: str, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        KINDS[kind][0]().save(tmp_path / "no" / "such" / "dir" / "x.bin")


@pytest.mark.parametrize("kind", KINDS)
def test_directory_is_os_error(kind: str, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        KINDS[kind][1](tmp_path)


def saved(kind: str, tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / f"{kind}.bin"
    KINDS[kind][0]().save(path)
    return path, path.read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_bad_magic(kind: str, tmp_path: Path) -> None:
    load = KINDS[kind][1]
    for content in (b"hello world, definitely not a store" * 4, b"", b"\x00" * 200):
        path = tmp_path / "junk.bin"
        path.write_bytes(content)
        with pytest.raises(hierdraft.StoreFormatError, match="magic"):
            load(path)
    other = "corpus" if kind == "model" else "model"
    path, _ = saved(other, tmp_path)
    with pytest.raises(hierdraft.StoreFormatError, match="magic"):
        load(path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("keep", [10, 63, 64, 100, -1])
def test_truncated(kind: str, keep: int, tmp_path: Path) -> None:
    path, data = saved(kind, tmp_path)
    path.write_bytes(data[:keep])
    with pytest.raises(hierdraft.StoreFormatError, match="truncated"):
        KINDS[kind][1](path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["payload-start", "payload-end", "header", "reserved"])
def test_corrupted(kind: str, where: str, tmp_path: Path) -> None:
    path, data = saved(kind, tmp_path)
    buf = bytearray(data)
    # "reserved": header bytes [48, 64), outside the header checksum, must be zero.
    offset = {"payload-start": 64, "payload-end": len(buf) - 5, "header": 20, "reserved": 50}[where]
    buf[offset] ^= 0x5A
    path.write_bytes(bytes(buf))
    with pytest.raises(hierdraft.StoreFormatError, match="checksum|corrupt"):
        KINDS[kind][1](path)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_version(kind: str, tmp_path: Path) -> None:
    path, data = saved(kind, tmp_path)
    buf = bytearray(data)
    buf[8:12] = struct.pack("<I", 99)
    buf[44:48] = struct.pack("<I", zlib.crc32(bytes(buf[:44])))
    path.write_bytes(bytes(buf))
    with pytest.raises(hierdraft.StoreFormatError, match="version 99"):
        KINDS[kind][1](path)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_vocab(kind: str, tmp_path: Path) -> None:
    path, _ = saved(kind, tmp_path)
    with pytest.raises(ValueError, match="vocab") as err:
        KINDS[kind][1](path, expected_vocab_size=262_144)
    assert not isinstance(err.value, hierdraft.StoreFormatError)


def test_store_without_vocab_vs_expected_vocab(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    hierdraft.ModelStore.build(SEQS).save(path)
    with pytest.raises(ValueError, match="none"):
        hierdraft.ModelStore.load(path, expected_vocab_size=20)
    assert hierdraft.ModelStore.load(path).vocab_size is None


def test_store_format_error_is_exported() -> None:
    assert issubclass(hierdraft.StoreFormatError, ValueError)
    assert hierdraft.StoreFormatError.__module__ == "hierdraft"


def test_large_vocab_tokens_round_trip(tmp_path: Path) -> None:
    big = np.array([262_000, 5, 262_143, 5, 262_000, 5], dtype=np.uint32)
    index = hierdraft.CorpusIndex.build([big], vocab_size=262_144)
    index.save(tmp_path / "c.bin")
    loaded = hierdraft.CorpusIndex.load(tmp_path / "c.bin", expected_vocab_size=262_144)
    assert [a.tolist() for a, _ in loaded.lookup([262_000])] == [[5, 262_143, 5, 262_000, 5]]
