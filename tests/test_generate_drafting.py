"""PyDraftTree and the drafter protocol classes."""

from __future__ import annotations

import numpy as np
import pytest

from hierdraft.drafting import DrafterLike, DraftSessionLike, DraftTreeLike, PyDraftTree, ancestor_matrix


def test_from_chains_merges_prefixes():
    tree = PyDraftTree.from_chains([[1, 2, 3], [1, 2, 4], [5], [1, 6]], sources=[0, 1, 2, 1])
    assert tree.tokens.tolist() == [1, 2, 3, 4, 5, 6]
    assert tree.parents.tolist() == [-1, 0, 1, 1, -1, 0]
    assert tree.depths.tolist() == [1, 2, 3, 3, 1, 2]
    assert tree.sources.tolist() == [0, 0, 0, 1, 2, 1]
    assert tree.tokens.dtype == np.uint32 and tree.parents.dtype == np.int32 and tree.depths.dtype == np.int32
    assert len(tree) == 6 and tree.max_depth == 3
    assert sorted(tree.paths()) == sorted([[1, 2, 3], [1, 2, 4], [5], [1, 6]])
    assert isinstance(tree, DraftTreeLike)


def test_from_chains_budget_and_empty():
    tree = PyDraftTree.from_chains([[1, 2, 3], [1, 9, 9], [4]], budget=4)
    assert tree.tokens.tolist() == [1, 2, 3, 9]
    assert len(PyDraftTree.from_chains([])) == 0
    assert len(PyDraftTree.from_chains([[], []])) == 0
    assert len(PyDraftTree.empty()) == 0 and PyDraftTree.empty().max_depth == 0


def test_depths_computed_and_validated():
    assert PyDraftTree([7, 8, 9], [-1, 0, 0]).depths.tolist() == [1, 2, 2]
    with pytest.raises(ValueError):
        PyDraftTree([7, 8], [-1, 1])  # parent not before child
    with pytest.raises(ValueError):
        PyDraftTree([7, 8], [-1, 0], [1, 1])  # wrong depth
    with pytest.raises(ValueError):
        PyDraftTree([-1], [-1])
    with pytest.raises(ValueError):
        PyDraftTree([1, 2], [-1])


def test_ancestor_matrix():
    tree = PyDraftTree.from_chains([[1, 2, 3], [1, 4], [5]])
    anc = tree.ancestor_mask()
    want = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 0, 0, 1, 0],
            [0, 0, 0, 0, 1],
        ],
        dtype=bool,
    )
    assert np.array_equal(anc, want)
    assert ancestor_matrix(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)).shape == (0, 0)


def test_protocols_are_structural():
    class Session:
        def propose(self):
            return PyDraftTree.empty()

        def accept(self, tokens):
            pass

        def finish(self):
            pass

    class Drafter:
        def start(self, prompt_ids):
            return Session()

    assert isinstance(Drafter(), DrafterLike)
    assert isinstance(Drafter().start([1]), DraftSessionLike)
