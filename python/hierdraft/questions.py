"""Spec-Bench-style question files: loading, validation and per-category selection.

Used by the bench (the prompts it times) and by the model-store builder (which skips the
benchmark's own prompts).

A question file is JSON Lines, one object a line, with at least

- ``question_id``: an int or a string, unique in the file;
- ``category``: a non-empty string;
- ``turns``: a non-empty list of strings (the user turns; the bench uses the first).

Other keys (``reference``, ...) are ignored. Blank lines are skipped. Every problem is
reported as :class:`QuestionFileError` naming the file and the 1-based line.

The prompts themselves are never copied into this repository: the default file is looked up
at ``../shared/specbench/question.jsonl`` relative to the current directory or to the
repository root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

DEFAULT_RELATIVE_PATH = Path("..") / "shared" / "specbench" / "question.jsonl"


class QuestionFileError(ValueError):
    """A question file is missing, unreadable or malformed (message names file and line)."""


@dataclass(frozen=True)
class Question:
    """One benchmark question; ``line`` is its 1-based line in the file it came from."""

    question_id: int | str
    category: str
    turns: tuple[str, ...]
    line: int = 0

    @property
    def first_turn(self) -> str:
        return self.turns[0]


def _repo_root() -> Path:
    # python/hierdraft/questions.py -> the repository root is two levels above.
    return Path(__file__).resolve().parents[2]


def default_questions_path(cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The default question file, if one exists: ``../shared/specbench/question.jsonl``
    relative to ``cwd`` (default: the current directory), then to the repository root."""
    bases = [Path(cwd) if cwd is not None else Path.cwd(), _repo_root()]
    for base in bases:
        candidate = (base / DEFAULT_RELATIVE_PATH).resolve()
        if candidate.is_file():
            return candidate
    return None


def _parse_line(path: Path, lineno: int, text: str) -> Question:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QuestionFileError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise QuestionFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("question_id", "category", "turns") if k not in obj]
    if missing:
        raise QuestionFileError(f"{where}: missing key(s) {', '.join(missing)}")
    qid = obj["question_id"]
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise QuestionFileError(f"{where}: question_id must be an int or a string")
    category = obj["category"]
    if not isinstance(category, str) or not category.strip():
        raise QuestionFileError(f"{where}: category must be a non-empty string")
    turns = obj["turns"]
    if (
        not isinstance(turns, list)
        or not turns
        or not all(isinstance(t, str) for t in turns)
        or not turns[0].strip()
    ):
        raise QuestionFileError(f"{where}: turns must be a non-empty list of strings")
    return Question(question_id=qid, category=category, turns=tuple(turns), line=lineno)


def load_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Read and validate every question of a JSONL file, in file order."""
    path = Path(path)
    try:
        handle = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        raise QuestionFileError(f"{path}: question file not found") from None
    except OSError as exc:
        raise QuestionFileError(f"{path}: cannot read question file ({exc.strerror})") from None
    questions: list[Question] = []
    seen: dict[int | str, int] = {}
    with handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                q = _parse_line(path, lineno, raw)
                if q.question_id in seen:
                    raise QuestionFileError(
                        f"{path}:{lineno}: duplicate question_id {q.question_id!r} "
                        f"(first on line {seen[q.question_id]})"
                    )
                seen[q.question_id] = lineno
                questions.append(q)
        except UnicodeDecodeError as exc:
            raise QuestionFileError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not questions:
        raise QuestionFileError(f"{path}: no questions in file")
    return questions


def categories(questions: Iterable[Question]) -> list[str]:
    """Categories in order of first appearance."""
    return list(dict.fromkeys(q.category for q in questions))


def select_per_category(questions: Sequence[Question], limit: int | None) -> list[Question]:
    """The first ``limit`` questions of each category (file order kept); all if ``limit`` is
    None. Deterministic, so every run of the quick bench sees the same prompts."""
    if limit is None:
        return list(questions)
    if limit < 1:
        raise ValueError(f"limit per category must be >= 1, got {limit}")
    taken: dict[str, int] = {}
    selected = []
    for q in questions:
        if taken.get(q.category, 0) < limit:
            taken[q.category] = taken.get(q.category, 0) + 1
            selected.append(q)
    return selected


def interleave_categories(questions: Sequence[Question]) -> list[Question]:
    """Round-robin over categories (first of each, then second of each, ...), so that slow
    drift of the machine during a run is spread over the categories and the running
    speedup shown while the bench runs is representative early on."""
    by_cat: dict[str, list[Question]] = {}
    for q in questions:
        by_cat.setdefault(q.category, []).append(q)
    out: list[Question] = []
    rank = 0
    while len(out) < len(questions):
        for qs in by_cat.values():
            if rank < len(qs):
                out.append(qs[rank])
        rank += 1
    return out
