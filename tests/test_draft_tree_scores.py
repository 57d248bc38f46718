"""DraftTree.scores and DraftTree.best_chain from Python: the node-probability rule of the core
(rust/core/src/draft_tree.rs) seen through the binding."""

from __future__ import annotations

import numpy as np
import pytest

import hierdraft


def _path_products(tree) -> np.ndarray:
    scores = tree.scores.astype(np.float64)
    parents = tree.parents
    prod = np.empty(len(tree))
    for i in range(len(tree)):
        prod[i] = scores[i] * (prod[parents[i]] if parents[i] >= 0 else 1.0)
    return prod


def _node_paths(tree) -> list[tuple[int, ...]]:
    """Tokens from the root to each node (the ancestor mask selects them, parents first)."""
    mask = tree.ancestor_mask()
    return [tuple(int(t) for t in tree.tokens[mask[i]]) for i in range(len(tree))]


def _leaf_paths(tree, max_len: int) -> dict[int, list[int]]:
    has_child = np.zeros(len(tree), dtype=bool)
    has_child[tree.parents[tree.parents >= 0]] = True
    paths = _node_paths(tree)
    leaves = {}
    for i in range(len(tree)):
        d = int(tree.depths[i])
        if d == max_len or (d < max_len and not has_child[i]):
            leaves[i] = list(paths[i])
    return leaves


def test_context_scores_are_branch_frequencies():
    # "1 2" occurred twice before: once followed by 3 4 5, once by 3 9 1 2 (more recent).
    drafter = hierdraft.HierarchicalDrafter(order=("context",))
    tree = drafter.start([1, 2, 3, 4, 5, 1, 2, 3, 9, 1, 2]).propose()
    assert tree.scores.dtype == np.float32 and tree.scores.shape == (len(tree),)
    assert ((tree.scores >= 0) & (tree.scores <= 1)).all()
    by_path = dict(zip(_node_paths(tree), _path_products(tree)))
    assert by_path[(3,)] == pytest.approx(1.0)  # both occurrences continue with 3
    assert by_path[(3, 4)] == pytest.approx(0.5)  # the older branch: one of two
    assert tree.best_chain(3).tolist() == [3, 9, 1]
    assert tree.best_chain(0).dtype == np.uint32 and len(tree.best_chain(0)) == 0


def test_best_chain_is_the_most_probable_cut_leaf_on_real_drafts():
    rng = np.random.default_rng(7)
    words = rng.integers(0, 40, size=(30, 6))
    text = np.concatenate([words[i] for i in rng.integers(0, 30, size=60)])
    corpus = hierdraft.CorpusIndex.build([np.concatenate([words[i] for i in rng.integers(0, 30, 40)])])
    drafter = hierdraft.HierarchicalDrafter(corpus_index=corpus, budget=24)
    for end in range(20, len(text), 17):
        tree = drafter.start(text[:end]).propose()
        prod = _path_products(tree)
        for k in (1, 3, 8):
            chain = tree.best_chain(k).tolist()
            leaves = _leaf_paths(tree, k)
            if not leaves:
                assert chain == []
                continue
            best = max(prod[i] for i in leaves)
            winners = [i for i in sorted(leaves) if prod[i] >= best * (1 - 1e-5)]
            assert chain == leaves[winners[0]]
            assert len(chain) <= k


def test_best_chain_rejects_a_negative_length():
    tree = hierdraft.HierarchicalDrafter().start([1, 2, 1]).propose()
    with pytest.raises(ValueError, match="max_len"):
        tree.best_chain(-1)
