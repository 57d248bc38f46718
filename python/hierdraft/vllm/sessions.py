"""Draft sessions for the rows of a vLLM batch, found by content, not by request id.

vLLM's proposer interface passes token arrays only: row ``i`` holds some request's tokens, and
rows are reused and reordered as requests come and go. Every sequence is therefore named by a
*signature* of its content: a 64-bit hash of its length, its first ``HEAD`` tokens and its last
``TAIL`` tokens, computed for all rows at once.

Each step, a row with ``c`` new tokens and length ``n`` looks up the session whose signature is
that of its first ``n - c`` tokens: that is the session of the same request one step earlier,
wherever its row was. Found, the session is extended by the ``c`` new tokens (all rows in one
``accept_batch`` call); not found, the row may still hold the session it held last step with a
few more tokens (vLLM skips the proposer on steps where a request is too close to
``max_model_len``), else a new session indexes the row's tokens (a new request, or one whose
session was dropped). Afterwards the session is filed under the signature of all ``n`` tokens,
for the next step. A row without new tokens (a prefill chunk) keeps its session unchanged.

Sessions no row claimed this step move to an idle pool (least recently used first out): a
preempted request that comes back finds its session there. When the pool is full, the oldest
sessions are finished, with ``learn`` feeding their output to the model store's online part
(cross-request history, as ``DraftSession.finish(learn=True)`` does).

Two different live sequences with the same signature (same length, head and tail, or a hash
collision) could swap sessions. That costs draft quality only, never correctness: vLLM verifies
every draft.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

__all__ = ["HEAD", "TAIL", "SessionTable", "signatures"]

HEAD = 8
TAIL = 8
_HEAD_COLS = np.arange(HEAD)
_TAIL_COLS = np.arange(TAIL)
# Random 64-bit weights, one per signature column (length, head, tail): the signature is their
# dot product with the columns, wrapping modulo 2**64, so it depends on where each token is.
_WEIGHTS = np.random.default_rng(0x4D1D).integers(-(2**63), 2**63 - 1, size=1 + HEAD + TAIL, dtype=np.int64)
_BATCH_INDEX = re.compile(r"^tokens\[(\d+)\]")


def signatures(tokens: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> list[int]:
    """The signature of the first ``lengths[j]`` tokens of ``tokens[rows[j]]``, for every j.

    Positions outside ``[0, length)`` are clamped into it, so only the sequence's own tokens are
    read (a length of 0 reads position 0; the length is part of the signature).
    """
    if len(rows) == 0:
        return []
    last = np.maximum(lengths - 1, 0)[:, None]
    cols = np.empty((len(rows), HEAD + TAIL), dtype=np.int64)
    np.minimum(_HEAD_COLS, last, out=cols[:, :HEAD])
    np.maximum(last - _TAIL_COLS, 0, out=cols[:, HEAD:])
    values = tokens[rows[:, None], cols].astype(np.int64)
    # integer array arithmetic wraps silently, which is what a hash wants
    return (values @ _WEIGHTS[1:] + lengths * _WEIGHTS[0]).tolist()


class SessionTable:
    """The sessions of one proposer (see the module docstring). Not thread-safe: vLLM calls the
    proposer from its model runner's thread only."""

    def __init__(self, drafter: Any, max_idle: int, learn: bool = True) -> None:
        if max_idle < 0:
            raise ValueError(f"max_idle must be >= 0, got {max_idle}")
        self._drafter = drafter
        self._max_idle = max_idle
        self._learn = learn
        self._live: dict[int, list[Any]] = {}
        self._idle: OrderedDict[int, list[Any]] = OrderedDict()
        self._idle_count = 0
        # What each row held after the last step: its signature, length and session (None: none).
        self._row_keys: list[int] = []
        self._row_lengths: list[int] = []
        self._row_sessions: list[Any | None] = []

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
        return self._row_sessions[row] if 0 <= row < len(self._row_sessions) else None

    def _take(self, key: int) -> Any | None:
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

    def step(
        self,
        new_tokens: Sequence[Sequence[int]],
        lengths: np.ndarray,
        tokens: np.ndarray,
        counts: Sequence[int] | None = None,
    ) -> list[Any | None]:
        """Bring every row's session up to date; ``result[i]`` is row i's session, or None for rows
        without new tokens.

        ``new_tokens[i]`` are the tokens row i gained this step (vLLM's ``sampled_token_ids[i]``,
        which it also wrote into ``tokens``), ``lengths[i]`` its token count with them and
        ``tokens[i, :lengths[i]]`` its tokens (a C-contiguous integer array). The caller has
        checked that ``len(new_tokens[i]) <= lengths[i] <= tokens.shape[1]``; ``counts``, when
        given, is ``[len(t) for t in new_tokens]``. On an error (a token a store does not know),
        every session touched this step is dropped, and the error is raised.
        """
        rows = len(new_tokens)
        if counts is None:
            counts = [len(t) for t in new_tokens]
        lengths = np.asarray(lengths, dtype=np.int64)
        prev = lengths - np.asarray(counts, dtype=np.int64)
        keys = signatures(tokens, np.tile(np.arange(rows), 2), np.concatenate([prev, lengths]))
        keys_prev, keys_now = keys[:rows], keys[rows:]
        prev_list, length_list = prev.tolist(), lengths.tolist()
        live_prev: dict[int, list[Any]] = self._live
        live_now: dict[int, list[Any]] = {}
        sessions: list[Any | None] = [None] * rows
        touched: list[Any] = []
        extend_rows: list[int] = []
        i = 0
        try:
            for i in range(rows):
                if counts[i]:
                    found = live_prev.get(keys_prev[i])
                    session = found.pop() if found else self._take(keys_prev[i])
                    if session is not None:
                        extend_rows.append(i)
                    else:
                        session = self._catch_up(tokens, i, prev_list[i], length_list[i])
                else:
                    session = self._take(keys_now[i])  # the row's sequence did not change
                    if session is None:
                        continue
                touched.append(session)
                bucket = live_now.get(keys_now[i])
                if bucket is None:
                    live_now[keys_now[i]] = [session]
                else:
                    bucket.append(session)
                sessions[i] = session
            i = -1
            if extend_rows:
                self._accept([sessions[r] for r in extend_rows], [new_tokens[r] for r in extend_rows])
        except ValueError as exc:
            self._drop(touched)
            if i < 0:  # in the batched accept: name the row, not the batch index
                found_index = _BATCH_INDEX.match(str(exc))
                i = extend_rows[int(found_index.group(1))] if found_index else -1
            raise ValueError(f"row {i}: {exc}" if i >= 0 else str(exc)) from exc
        except BaseException:
            self._drop(touched)
            raise
        self._retire_unclaimed()
        self._live = live_now
        self._row_keys, self._row_lengths, self._row_sessions = keys_now, length_list, sessions
        self._evict()
        return [s if c else None for s, c in zip(sessions, counts)]

    def _accept(self, sessions: list[Any], tokens: list[Sequence[int]]) -> None:
        batch = getattr(self._drafter, "accept_batch", None)
        if batch is not None:
            batch(sessions, tokens)
        else:  # a drafter of another kind: one call per session
            for session, new in zip(sessions, tokens):
                session.accept(new)

    def _catch_up(self, tokens: np.ndarray, row: int, prev: int, length: int) -> Any:
        """A row whose sequence one step ago has no session: the session the row held last step
        if the row still starts with it (vLLM skipped the proposer for a few steps), extended by
        every token since; else a new session over the row's tokens."""
        start, session = prev, None
        if row < len(self._row_sessions) and self._row_sessions[row] is not None:
            key, old = self._row_keys[row], self._row_lengths[row]
            if old < prev and signatures(tokens, np.array([row]), np.array([old]))[0] == key:
                session = self._take(key)
                start = old if session is not None else prev
        if session is None:
            session = self._drafter.start(tokens[row, :start])
        try:
            session.accept(tokens[row, start:length])
        except BaseException:
            session.finish(learn=False)
            raise
        return session

    def _drop(self, sessions: list[Any]) -> None:
        for session in sessions:
            session.finish(learn=False)
        self._row_keys, self._row_lengths, self._row_sessions = [], [], []

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
        self._row_keys, self._row_lengths, self._row_sessions = [], [], []
        self._max_idle, limit = 0, self._max_idle
        self._evict()
        self._max_idle = limit
