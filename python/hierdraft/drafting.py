"""The drafter protocol that `hierdraft.generate` speaks, and a pure-Python draft tree.

`generate()` accepts any drafter with this shape (the Rust `HierarchicalDrafter` is one):

    session = drafter.start(prompt_ids)   # once per request
    tree = session.propose()              # before every verification forward
    session.accept(tokens)                # the tokens accepted by that forward, bonus token included
    session.finish()                      # once, when generation stops

A tree is a flattened prefix tree below the root (the last accepted token, which is not part of
the tree): `tokens[i]` is node i's token, `parents[i]` its parent's index (-1 for children of the
root, and always `< i`), `depths[i]` its depth (children of the root have depth 1).

`PyDraftTree` implements that tree in numpy, for tests and for users who write their own drafters;
`PyDraftTree.from_chains` merges candidate chains into one prefix tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["DraftTreeLike", "DraftSessionLike", "DrafterLike", "PyDraftTree", "keep_nodes", "validate_tree"]


@runtime_checkable
class DraftTreeLike(Protocol):
    """A draft tree: parallel 1-D numpy arrays `tokens`, `parents`, `depths` and `len(tree)`."""

    tokens: np.ndarray
    parents: np.ndarray
    depths: np.ndarray

    def __len__(self) -> int: ...


@runtime_checkable
class DraftSessionLike(Protocol):
    """One request's drafting state."""

    def propose(self) -> DraftTreeLike: ...

    def accept(self, tokens: Sequence[int]) -> None: ...

    def finish(self) -> None: ...


@runtime_checkable
class DrafterLike(Protocol):
    """Anything that starts a drafting session from the prompt's token ids."""

    def start(self, prompt_ids: Sequence[int]) -> DraftSessionLike: ...


def validate_tree(
    tokens: np.ndarray, parents: np.ndarray, depths: np.ndarray, vocab_size: int | None = None
) -> None:
    """Raise ValueError unless the arrays form a well-formed flattened tree (see module docstring)."""
    n = len(tokens)
    if tokens.ndim != 1 or parents.shape != (n,) or depths.shape != (n,):
        raise ValueError(
            f"draft tree arrays must be 1-D and of equal length, got tokens {tokens.shape}, "
            f"parents {parents.shape}, depths {depths.shape}"
        )
    if n == 0:
        return
    idx = np.arange(n)
    if (parents < -1).any() or (parents >= idx).any():
        raise ValueError("draft tree parents must satisfy -1 <= parents[i] < i")
    expected = np.where(parents < 0, 1, depths[np.maximum(parents, 0)].astype(np.int64) + 1)
    if not np.array_equal(expected, depths.astype(np.int64)):
        raise ValueError("draft tree depths must be 1 for children of the root and 1 + the parent's depth otherwise")
    if (tokens < 0).any():
        raise ValueError("draft tree tokens must be non-negative")
    if vocab_size is not None and (tokens >= vocab_size).any():
        raise ValueError(f"draft tree token {int(tokens.max())} is outside the vocabulary (size {vocab_size})")


class PyDraftTree:
    """A draft tree held in numpy arrays: uint32 tokens, int32 parents and depths, uint8 sources."""

    __slots__ = ("tokens", "parents", "depths", "sources")

    def __init__(
        self,
        tokens: Iterable[int] | np.ndarray,
        parents: Iterable[int] | np.ndarray,
        depths: Iterable[int] | np.ndarray | None = None,
        sources: Iterable[int] | np.ndarray | None = None,
    ) -> None:
        tok = np.asarray(tokens, dtype=np.int64).reshape(-1)
        par = np.asarray(parents, dtype=np.int64).reshape(-1)
        if par.shape != tok.shape:
            raise ValueError("tokens and parents must have the same length")
        if depths is None:
            if (par >= np.arange(len(par))).any() or (par < -1).any():
                raise ValueError("draft tree parents must satisfy -1 <= parents[i] < i")
            dep = np.empty(len(par), dtype=np.int64)
            for i, p in enumerate(par.tolist()):
                dep[i] = 1 if p < 0 else dep[p] + 1
        else:
            dep = np.asarray(depths, dtype=np.int64).reshape(-1)
        validate_tree(tok, par, dep)
        if (tok > np.iinfo(np.uint32).max).any():
            raise ValueError("draft tree tokens must fit in uint32")
        self.tokens = tok.astype(np.uint32)
        self.parents = par.astype(np.int32)
        self.depths = dep.astype(np.int32)
        src = np.zeros(len(tok), dtype=np.uint8) if sources is None else np.asarray(sources, dtype=np.uint8)
        if src.shape != self.tokens.shape:
            raise ValueError("sources must have one entry per node")
        self.sources = src

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return f"PyDraftTree(n={len(self)}, max_depth={self.max_depth})"

    @property
    def max_depth(self) -> int:
        return int(self.depths.max()) if len(self) else 0

    @classmethod
    def empty(cls) -> PyDraftTree:
        return cls([], [], [])

    @classmethod
    def from_chains(
        cls,
        chains: Iterable[Sequence[int] | np.ndarray],
        sources: Iterable[int] | None = None,
        budget: int | None = None,
    ) -> PyDraftTree:
        """Merge candidate chains (each a continuation of the root) into one prefix tree.

        Shared prefixes are stored once; nodes appear in first-seen order, so parents precede
        children. `sources` gives one source tag per chain (the first chain to create a node
        tags it). `budget` caps the number of nodes: chains are added in order and a chain
        that no longer fits is cut where the budget runs out.
        """
        children: dict[tuple[int, int], int] = {}
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        srcs: list[int] = []
        source_iter = iter(sources) if sources is not None else None
        for chain in chains:
            src = next(source_iter) if source_iter is not None else 0
            parent = -1
            for tok in np.asarray(chain, dtype=np.int64).reshape(-1).tolist():
                key = (parent, tok)
                node = children.get(key)
                if node is None:
                    if budget is not None and len(tokens) >= budget:
                        break
                    node = len(tokens)
                    children[key] = node
                    tokens.append(tok)
                    parents.append(parent)
                    depths.append(1 if parent < 0 else depths[parent] + 1)
                    srcs.append(src)
                parent = node
        return cls(tokens, parents, depths, srcs)

    def ancestor_mask(self) -> np.ndarray:
        """(n, n) bool matrix: row i is True at j iff j is i or an ancestor of i."""
        return ancestor_matrix(self.parents, self.depths)

    def paths(self) -> list[list[int]]:
        """Token chains from the root to every leaf, in node order."""
        n = len(self)
        has_child = np.zeros(n, dtype=bool)
        has_child[self.parents[self.parents >= 0]] = True
        out = []
        for leaf in np.nonzero(~has_child)[0].tolist():
            chain = []
            node = leaf
            while node >= 0:
                chain.append(int(self.tokens[node]))
                node = int(self.parents[node])
            out.append(chain[::-1])
        return out


def keep_nodes(
    tokens: np.ndarray, parents: np.ndarray, depths: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sub-tree of the nodes where `keep` is True (it must hold every kept node's parent),
    in the same order, with parent indices renumbered."""
    if keep.all():
        return tokens, parents, depths
    kept_parents = parents[keep]
    if (kept_parents >= 0).any() and not keep[kept_parents[kept_parents >= 0]].all():
        raise ValueError("keep_nodes: a kept node's parent is not kept")
    new_index = np.cumsum(keep) - 1
    kept_parents = np.where(kept_parents >= 0, new_index[np.maximum(kept_parents, 0)], -1)
    return tokens[keep], kept_parents.astype(parents.dtype, copy=False), depths[keep]


def ancestor_matrix(parents: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """(n, n) bool matrix of a flattened tree: row i is True at j iff j is i or an ancestor of i.

    Follows all parent pointers at once, one level per iteration (max depth iterations).
    """
    n = len(parents)
    mask = np.zeros((n, n), dtype=bool)
    if n == 0:
        return mask
    rows = np.arange(n)
    cur = rows.copy()
    par = np.asarray(parents, dtype=np.int64)
    for _ in range(int(np.max(depths))):
        live = cur >= 0
        mask[rows[live], cur[live]] = True
        cur = np.where(live, par[np.maximum(cur, 0)], -1)
    return mask
