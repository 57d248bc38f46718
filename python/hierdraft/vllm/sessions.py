"""Draft sessions for the rows of a vLLM batch, found by content, not by request id.

vLLM's proposer interface passes token arrays only: row ``i`` holds some request's tokens, and
rows are reused and reordered as requests come and go. Every sequence is therefore named by a
*signature* of its content: its length, its first ``HEAD`` tokens and its last ``TAIL`` tokens.

Each step, a row with ``c`` new tokens and length ``n`` looks up the session whose signature is
that of its first ``n - c`` tokens: that is the session of the same request one step earlier,
wherever its row was. Found, the session is extended by the ``c`` new tokens; not found, the row
may still hold the session it held last step with a few more tokens (vLLM skips the proposer on
steps where a request is too close to ``max_model_len``), else a new session indexes the row's
tokens (a new request, or one whose session was dropped). Afterwards the session is filed under
the signature of all ``n`` tokens, for the next step. A row without new tokens (a prefill chunk)
keeps its session alive unchanged.

Sessions no row claimed this step move to an idle pool (least recently used first out): a
preempted request that comes back finds its session there. When the pool is full, the oldest
sessions are finished, with ``learn`` feeding their output to the model store's online part
(cross-request history, as ``DraftSession.finish(learn=True)`` does).

Two different live sequences that share length, head and tail would share a signature and could
swap sessions. That costs draft quality only, never correctness: vLLM verifies every draft.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

__all__ = ["HEAD", "TAIL", "SessionTable", "signatures"]

HEAD = 8
TAIL = 8
_HEAD_COLS = np.arange(HEAD)
_TAIL_COLS = np.arange(TAIL)


def signatures(tokens: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """The signature (bytes) of the first ``lengths[j]`` tokens of ``tokens[rows[j]]``, for every j.

    Positions outside ``[0, length)`` are clamped into it, so only the sequence's own tokens are
    read (a length of 0 reads position 0, and its signature holds the length 0).
    """
    if len(rows) == 0:
        return []
    last = np.maximum(lengths - 1, 0)[:, None]
    cols = np.concatenate([np.minimum(_HEAD_COLS[None, :], last), np.maximum(last - _TAIL_COLS[None, :], 0)], axis=1)
    values = tokens[rows[:, None], cols].astype(np.int64, copy=False)
    sig = np.ascontiguousarray(np.concatenate([lengths[:, None].astype(np.int64), values], axis=1))
    buf = sig.tobytes()
    width = sig.shape[1] * 8
    return [buf[j * width : (j + 1) * width] for j in range(len(rows))]


def _length_of(key: bytes) -> int:
    return int.from_bytes(key[:8], "little", signed=True)


class SessionTable:
    """The sessions of one proposer (see the module docstring). Not thread-safe: vLLM calls the
    proposer from its model runner's thread only."""

    def __init__(self, drafter: Any, max_idle: int, learn: bool = True) -> None:
        if max_idle < 0:
            raise ValueError(f"max_idle must be >= 0, got {max_idle}")
        self._drafter = drafter
        self._max_idle = max_idle
        self._learn = learn
        self._live: dict[bytes, list[Any]] = {}
        self._idle: OrderedDict[bytes, list[Any]] = OrderedDict()
        self._idle_count = 0
        self._rows: list[tuple[bytes, Any] | None] = []

    @property
    def live(self) -> int:
        """Sessions claimed by a row at the last step."""
        return sum(len(v) for v in self._live.values())

    @property
    def idle(self) -> int:
        """Sessions waiting in the idle pool."""
        return self._idle_count

    def row_session(self, row: int) -> Any | None:
        """The session row ``row`` held after the last step (None: none)."""
        held = self._rows[row] if 0 <= row < len(self._rows) else None
        return None if held is None else held[1]

    def _take(self, key: bytes) -> Any | None:
        found = self._live.get(key)
        if found:
            return found.pop()
        found = self._idle.get(key)
        if found:
            self._idle_count -= 1
            session = found.pop()
            if not found:
                del self._idle[key]
            return session
        return None

    def _take_row_session(self, tokens: np.ndarray, row: int, prev: int) -> tuple[Any, int] | None:
        """The session this row held last step, if the row still starts with its content and is
        longer now: ``(session, its length)``."""
        held = self._rows[row] if row < len(self._rows) else None
        if held is None:
            return None
        key, _session = held
        length = _length_of(key)
        if length >= prev or signatures(tokens, np.array([row]), np.array([length]))[0] != key:
            return None
        session = self._take(key)
        return None if session is None else (session, length)

    def step(self, counts: Sequence[int], lengths: np.ndarray, tokens: np.ndarray) -> list[Any | None]:
        """Bring every row's session up to date; ``result[i]`` is row i's session, or None for rows
        without new tokens (``counts[i] == 0``).

        ``lengths[i]`` is row i's token count (new tokens included), ``tokens[i, :lengths[i]]``
        its tokens and ``counts[i]`` how many of them are new this step. The caller has checked
        ``0 <= counts[i] <= lengths[i] <= tokens.shape[1]``. On an error (a token a store does not
        know), every session touched this step is dropped, and the error is raised.
        """
        rows = len(counts)
        index = np.arange(rows)
        lengths = np.asarray(lengths, dtype=np.int64)
        prev = lengths - np.asarray(counts, dtype=np.int64)
        keys = signatures(tokens, np.concatenate([index, index]), np.concatenate([prev, lengths]))
        keys_prev, keys_now = keys[:rows], keys[rows:]
        prev_list, length_list = prev.tolist(), lengths.tolist()
        live: dict[bytes, list[Any]] = {}
        held: list[tuple[bytes, Any] | None] = [None] * rows
        out: list[Any | None] = [None] * rows
        touched: list[Any] = []
        try:
            for i in range(rows):
                key_now = keys_now[i]
                if counts[i] == 0:
                    session = self._take(key_now)
                    if session is not None:
                        touched.append(session)
                        live.setdefault(key_now, []).append(session)
                        held[i] = (key_now, session)
                    continue
                start = prev_list[i]
                session = self._take(keys_prev[i])
                if session is None:
                    found = self._take_row_session(tokens, i, start)
                    if found is not None:
                        session, start = found
                if session is None:
                    session = self._drafter.start(np.ascontiguousarray(tokens[i, :start]))
                touched.append(session)
                session.accept(np.ascontiguousarray(tokens[i, start : length_list[i]]))
                live.setdefault(key_now, []).append(session)
                held[i] = (key_now, session)
                out[i] = session
        except ValueError as exc:
            self._drop(touched)
            raise ValueError(f"token_ids_cpu row {i}: {exc}") from exc
        except BaseException:
            self._drop(touched)
            raise
        self._retire_unclaimed()
        self._live = live
        self._rows = held
        self._evict()
        return out

    def _drop(self, sessions: list[Any]) -> None:
        for session in sessions:
            session.finish(learn=False)
        self._rows = []

    def _retire_unclaimed(self) -> None:
        for key, sessions in self._live.items():
            if sessions:
                self._idle.setdefault(key, []).extend(sessions)
                self._idle.move_to_end(key)
                self._idle_count += len(sessions)

    def _evict(self) -> None:
        while self._idle_count > self._max_idle:
            _key, sessions = self._idle.popitem(last=False)
            self._idle_count -= len(sessions)
            for session in sessions:
                session.finish(learn=self._learn)

    def close(self) -> None:
        """Finish every session (live ones too), feeding the model store when learning."""
        self._retire_unclaimed()
        self._live = {}
        self._rows = []
        self._max_idle, limit = 0, self._max_idle
        self._evict()
        self._max_idle = limit
