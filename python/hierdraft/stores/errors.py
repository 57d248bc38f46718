"""Exceptions raised while reading data and building stores.

All are ``ValueError`` subclasses (the CLI prints them as one-line errors); a missing input
file raises the built-in ``FileNotFoundError`` instead.
"""

from __future__ import annotations

from ..models import TokenizerMismatchError

__all__ = ["SourceError", "InvalidRecordError", "EmptyCorpusError", "CheckpointError", "TokenizerMismatchError"]


class SourceError(ValueError):
    """A data source cannot be used (unknown name, unsupported file type, unreadable layout)."""


class InvalidRecordError(SourceError):
    """One record of a file is malformed; the message names the file and the line."""

    def __init__(self, path: str, line: int, reason: str):
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")


class EmptyCorpusError(SourceError):
    """A source yielded no (non-empty) documents or prompts."""


class CheckpointError(ValueError):
    """A generation checkpoint does not belong to the build that tries to resume from it."""
