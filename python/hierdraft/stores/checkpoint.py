"""The generation checkpoint of a model-store build: a JSONL file next to the store.

Line 1 is a header naming what the generations depend on (tokenizer fingerprint, model,
dtype, max_new_tokens, prompt template); every further line is one finished generation
``{"key": <prompt hash>, "prompt_tokens": n, "tokens": [...], ...}``. Each record is appended
and fsynced as soon as its generation ends, so an interrupted build resumes where it stopped;
a torn last line (a crash mid-write) is dropped on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import CheckpointError

__all__ = ["Checkpoint", "prompt_key", "checkpoint_path_for"]

FORMAT = "hierdraft-generations"
VERSION = 1
# Header fields that must match for records to be reused.
_IDENTITY = ("tokenizer", "model", "dtype", "max_new_tokens", "template")


def prompt_key(prompt_ids: list[int]) -> str:
    """A stable key of a prompt (its token ids after templating)."""
    digest = hashlib.sha256()
    for t in prompt_ids:
        digest.update(int(t).to_bytes(4, "little"))
    return digest.hexdigest()[:20]


def checkpoint_path_for(out: str | os.PathLike[str]) -> Path:
    out = Path(os.fspath(out))
    return out.with_name(out.name + ".generations.jsonl")


class Checkpoint:
    """Records of finished generations, keyed by prompt key, backed by an append-only file."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]):
        self.path = Path(os.fspath(path))
        self.header = {"format": FORMAT, "version": VERSION, **header}
        self.records: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    # -- reading ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0

    def read_header(self) -> dict[str, Any] | None:
        if not self.exists():
            return None
        with open(self.path, "rb") as fh:
            first = fh.readline()
        if not first.endswith(b"\n"):
            return None  # torn header: the file holds nothing usable; load() cuts it off
        try:
            header = json.loads(first)
        except json.JSONDecodeError:
            raise CheckpointError(f"{self.path}:1: not a hierdraft generation checkpoint (bad header)") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}:1: not a hierdraft generation checkpoint")
        return header

    def mismatch(self) -> list[str]:
        """Identity fields whose stored value differs from this build's (empty: compatible)."""
        stored = self.read_header()
        if stored is None:
            return []
        return [
            f"{k}: checkpoint has {stored.get(k)!r}, this build {self.header.get(k)!r}"
            for k in _IDENTITY
            if stored.get(k) != self.header.get(k)
        ]

    def load(self) -> int:
        """Read all complete records; drop (and cut off) a torn last line. Returns the count."""
        self.records.clear()
        self.order.clear()
        if not self.exists():
            return 0
        problems = self.mismatch()
        if problems:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to a different build ({'; '.join(problems)}); "
                f"delete it or pass overwrite to start over"
            )
        with open(self.path, "rb") as fh:
            data = fh.read()
        # Records are appended as whole lines; a piece after the last newline is a torn write.
        complete = data[: data.rfind(b"\n") + 1]
        for lineno, raw in enumerate(complete.split(b"\n")[1:-1], start=2):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                key = str(record["key"])
                record["tokens"] = [int(t) for t in record["tokens"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise CheckpointError(
                    f"{self.path}:{lineno}: corrupt generation record; delete the file to start over"
                ) from None
            if key not in self.records:
                self.order.append(key)
            self.records[key] = record
        if len(complete) < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(len(complete))
                fh.flush()
                os.fsync(fh.fileno())
        return len(self.records)

    # -- writing ---------------------------------------------------------------------------
    def start_fresh(self) -> None:
        """Begin a new checkpoint file (an existing incompatible one is moved aside, not lost)."""
        if self.exists():
            aside = self.path.with_name(self.path.name + ".old")
            os.replace(self.path, aside)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as fh:
            fh.write(json.dumps(self.header, sort_keys=True).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records.clear()
        self.order.clear()

    def append(self, record: dict[str, Any]) -> None:
        if not self.exists():
            self.start_fresh()
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        key = record["key"]
        if key not in self.records:
            self.order.append(key)
        self.records[key] = record
