"""Hypothesis strategies for the core property tests: random and repetitive token sequences.

Random sequences over a small vocabulary hit short matches; repetitive ones (phrases from a small
phrase book, repeated with noise in between) look like text and exercise long matches and
frequency ranking.
"""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def repetitive(draw: st.DrawFn, max_size: int = 200, vocab: int = 30) -> list[int]:
    phrases = draw(
        st.lists(
            st.lists(st.integers(0, vocab - 1), min_size=1, max_size=8), min_size=1, max_size=5
        )
    )
    out: list[int] = []
    while len(out) < max_size:
        step = draw(st.integers(0, len(phrases)))
        if step == len(phrases):
            out.extend(draw(st.lists(st.integers(0, vocab - 1), max_size=3)))
            if draw(st.booleans()):
                break
        else:
            out.extend(phrases[step])
    return out[:max_size]


def tokens(max_size: int = 200) -> st.SearchStrategy[list[int]]:
    """A token sequence: uniform over a tiny or a small vocabulary, or repetitive."""
    return st.one_of(
        st.lists(st.integers(0, 3), max_size=max_size),
        st.lists(st.integers(0, 40), max_size=max_size),
        repetitive(max_size=max_size),
    )


def token_lists(max_docs: int = 6, max_size: int = 80) -> st.SearchStrategy[list[list[int]]]:
    return st.lists(tokens(max_size), min_size=1, max_size=max_docs)
