"""Building the corpus index (hierarchy level 3) from a text source.

Documents are read from the source (see :mod:`hierdraft.stores.sources`), tokenized in
parallel batches with the target model's fast tokenizer, and indexed by the Rust
``CorpusIndex`` (a suffix array; no match crosses a document boundary). The index is saved
atomically by the core, with the tokenizer fingerprint in its metadata, so an existing index
at ``out`` survives any failure of the new build.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .errors import EmptyCorpusError
from .metadata import encode_metadata
from .progress import BuildSummary, bar, run_with_ticker, say
from .sources import iter_documents
from .tokenize import tokenize_batches, vocab_size_of

__all__ = ["build_corpus_index"]


def _check_writable(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir():
        raise IsADirectoryError(f"output path is a folder: {out}")
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"cannot write to {out.parent}")


def build_corpus_index(
    tokenizer: Any,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    max_documents: int | None = None,
    *,
    text_field: str = "text",
    txt_split: str = "paragraph",
    batch_size: int = 1024,
    progress: bool = True,
) -> BuildSummary:
    """Tokenize ``source`` with ``tokenizer`` and write a CorpusIndex to ``out``.

    ``max_documents`` caps the number of documents read (ShareGPT: conversation turns).
    Returns a :class:`BuildSummary` (its ``store`` is the built index). Raises
    :class:`EmptyCorpusError` when the source has no non-empty document,
    :class:`InvalidRecordError` (file:line) on malformed records.
    """
    from .. import _core

    if max_documents is not None and max_documents <= 0:
        raise ValueError(f"max_documents must be positive, got {max_documents}")
    out_path = Path(os.fspath(out)).expanduser()
    _check_writable(out_path)
    started = time.perf_counter()
    cpu_started = time.process_time()
    stream = iter_documents(source, text_field=text_field, txt_split=txt_split)
    summary = BuildSummary(kind="corpus index", path=str(out_path))

    def limited():
        for i, text in enumerate(stream):
            if max_documents is not None and i >= max_documents:
                return
            yield text

    documents = []
    n_tokens = 0
    n_read = 0
    by_docs = max_documents is not None
    with bar(
        progress,
        desc="tokenizing",
        total=max_documents if by_docs else stream.total_bytes,
        unit="doc" if by_docs else "B",
        unit_scale=not by_docs,
        unit_divisor=1024,
    ) as pbar:
        for arrays, count in tokenize_batches(tokenizer, limited(), batch_size=batch_size):
            documents.extend(arrays)
            n_read += count
            n_tokens += sum(len(a) for a in arrays)
            pbar.set_postfix_str(f"{n_read:,} docs, {n_tokens:,} tokens", refresh=False)
            pbar.update(count if by_docs else stream.bytes_done - pbar.n)
    t_tokenize = time.perf_counter() - started
    if not documents:
        raise EmptyCorpusError(f"source {os.fspath(source)!r} contains no non-empty documents")
    for path in stream.truncated_files:
        summary.notes.append(f"{path} ends inside a record (truncated file): used every complete record")
    metadata = encode_metadata(
        "corpus",
        tokenizer,
        source=str(source),
        documents=len(documents),
        tokens=n_tokens,
        max_documents=max_documents,
    )
    vocab = vocab_size_of(tokenizer)
    t0 = time.perf_counter()
    index = run_with_ticker(
        lambda: _core.CorpusIndex.build(documents, vocab_size=vocab, metadata=metadata),
        f"indexing {n_tokens:,} tokens",
        progress,
    )
    del documents
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.save(os.fspath(out_path))
    t_save = time.perf_counter() - t0
    summary.documents = int(index.num_documents)
    summary.tokens = int(index.num_tokens)
    summary.bytes_per_token = float(index.bytes_per_token)
    summary.stage_seconds = {"tokenize": t_tokenize, "index": t_index, "save": t_save}
    summary.finish(index, started, cpu_started)
    say(str(summary), progress)
    return summary
