"""Small, obviously-correct pure-Python references of the core lookups, for the property tests.

Each store collects the chains that followed its match into a counted prefix tree (``RefTrie``)
and ranks them by heavy-path decomposition, exactly as documented in
``rust/core/src/continuation.rs``: the first chain follows the heaviest child from the root
(count, then recency, then the smaller token); each next chain starts at the best node that
branches off an already extracted chain. A chain's score is the count of its branch node over the
root total.

When two candidate branches tie completely (same count, recency and token, in different subtrees)
the Rust order depends on insertion details, so ``top_chains`` reports ``ambiguous=True`` and the
tests fall back to order-independent checks (``check_ranked``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_CONTEXT_OCCURRENCES = 64
MAX_CORPUS_OCCURRENCES = 256
MAX_CORPUS_MATCH = 16
SEPARATOR = 2**32 - 1

Chain = tuple[int, ...]


@dataclass
class RefNode:
    token: int
    count: int = 0
    recency: int = 0
    parent: RefNode | None = None
    children: dict[int, RefNode] = field(default_factory=dict)

    def key(self) -> tuple[int, int, int]:
        return (self.count, self.recency, -self.token)

    def path(self) -> Chain:
        out = []
        node: RefNode | None = self
        while node is not None and node.parent is not None:
            out.append(node.token)
            node = node.parent
        return tuple(reversed(out))


class RefTrie:
    def __init__(self) -> None:
        self.root = RefNode(token=-1)
        self.total = 0

    def insert(self, chain: list[int] | Chain, weight: int = 1, recency: int = 0) -> None:
        self.total += weight
        node = self.root
        for tok in chain:
            child = node.children.get(tok)
            if child is None:
                child = RefNode(token=tok, parent=node)
                node.children[tok] = child
            child.count += weight
            child.recency = max(child.recency, recency)
            node = child

    def _top_paths(self, k: int, max_len: int) -> tuple[list[tuple[RefNode, RefNode]], bool]:
        out: list[tuple[RefNode, RefNode]] = []
        ambiguous = False
        if k == 0 or max_len == 0:
            return out, ambiguous
        frontier: list[tuple[RefNode, int]] = [(c, 1) for c in self.root.children.values()]
        while len(out) < k and frontier:
            # Branch order: count, then recency, then shallower, then the smaller path.
            best_key = max((n.count, n.recency, -d) for n, d in frontier)
            ties = [i for i, (n, d) in enumerate(frontier) if (n.count, n.recency, -d) == best_key]
            pick = min(ties, key=lambda i: frontier[i][0].path())
            branch, depth = frontier.pop(pick)
            cur = branch
            while depth < max_len and cur.children:
                nxt = max(cur.children.values(), key=RefNode.key)
                frontier.extend((c, depth + 1) for c in cur.children.values() if c is not nxt)
                cur = nxt
                depth += 1
            out.append((cur, branch))
        return out, ambiguous

    def top_chains(self, k: int, max_len: int) -> tuple[list[tuple[Chain, float]], bool]:
        paths, ambiguous = self._top_paths(k, max_len)
        total = self.total
        return [
            (leaf.path(), float(np.float32(branch.count / total)) if total else 0.0)
            for leaf, branch in paths
        ], ambiguous

    def pruned(self, top_k: int, max_len: int) -> tuple[RefTrie, bool]:
        """Only the nodes on the best ``top_k`` chains (what a frozen model store keeps)."""
        paths, ambiguous = self._top_paths(top_k, max_len)
        out = RefTrie()
        out.total = self.total
        for leaf, _ in paths:
            nodes = []
            n: RefNode | None = leaf
            while n is not None and n.parent is not None:
                nodes.append(n)
                n = n.parent
            dst = out.root
            for src in reversed(nodes):
                child = dst.children.get(src.token)
                if child is None:
                    child = RefNode(token=src.token, count=src.count, parent=dst)
                    dst.children[src.token] = child
                dst = child
        return out, ambiguous

    def node_at(self, chain: Chain) -> RefNode | None:
        node = self.root
        for tok in chain:
            nxt = node.children.get(tok)
            if nxt is None:
                return None
            node = nxt
        return node


@dataclass
class RefResult:
    """A reference lookup: the ranked chains, the trie they came from, and whether ties occurred."""

    chains: list[tuple[Chain, float]]
    trie: RefTrie | None
    max_len: int
    ambiguous: bool
    # False when ties already affected which nodes a model store keeps (pruning).
    exact_count: bool = True


def _ranked(trie: RefTrie | None, k: int, max_len: int) -> RefResult:
    if trie is None or trie.total == 0:
        return RefResult([], None, max_len, False)
    chains, amb = trie.top_chains(k, max_len)
    return RefResult(chains, trie, max_len, amb)


def context_lookup(
    seq: list[int], k: int, max_len: int, min_ngram: int = 1, max_ngram: int = 4
) -> RefResult:
    """Longest suffix (max_ngram..min_ngram) of ``seq`` that occurred earlier; recency = position."""
    n_tokens = len(seq)
    for n in range(min(max_ngram, n_tokens), min_ngram - 1, -1):
        suffix = seq[n_tokens - n :]
        ends = [p for p in range(n_tokens - 2, n - 2, -1) if seq[p - n + 1 : p + 1] == suffix]
        ends = ends[:MAX_CONTEXT_OCCURRENCES]
        if ends:
            trie = RefTrie()
            for p in ends:
                trie.insert(seq[p + 1 : p + 1 + max_len], 1, p)
            return _ranked(trie, k, max_len)
    return RefResult([], None, max_len, False)


def model_lookup(
    sequences: list[list[int]],
    context: list[int],
    k: int,
    max_len: int,
    min_ngram: int = 1,
    max_ngram: int = 3,
    continuation_len: int = 6,
    top_k: int = 8,
) -> RefResult:
    """Longest key suffix of ``context`` seen (followed by a token) in ``sequences``; its pruned
    continuation trie ranked."""
    length = min(max_len, continuation_len)
    for n in range(min(max_ngram, len(context)), min_ngram - 1, -1):
        key = context[len(context) - n :]
        trie = RefTrie()
        for seq in sequences:
            for p in range(n - 1, len(seq) - 1):
                if seq[p - n + 1 : p + 1] == key:
                    trie.insert(seq[p + 1 : p + 1 + continuation_len], 1, 0)
        if trie.total:
            pruned, amb = trie.pruned(top_k, continuation_len)
            res = _ranked(pruned, k, length)
            if amb:
                # Which of the tied chains survived pruning is an implementation detail: check
                # the result against the unpruned counts instead.
                res.ambiguous, res.trie, res.exact_count = True, trie, False
            return res
    return RefResult([], None, length, False)


def corpus_lookup(docs: list[list[int]], context: list[int], k: int, max_len: int) -> RefResult:
    """Longest suffix (<= 16 tokens) of ``context`` found followed by a token in one document."""
    if SEPARATOR in context:
        context = context[len(context) - context[::-1].index(SEPARATOR) :]
    for m in range(min(MAX_CORPUS_MATCH, len(context)), 0, -1):
        pat = context[len(context) - m :]
        occ = [(d, i) for d in docs for i in range(len(d) - m) if d[i : i + m] == pat]
        if occ:
            assert len(occ) <= MAX_CORPUS_OCCURRENCES, "reference assumes every occurrence is read"
            trie = RefTrie()
            for d, i in occ:
                trie.insert(d[i + m : i + m + max_len], 1, 0)
            return _ranked(trie, k, max_len)
    return RefResult([], None, max_len, False)


def as_chains(found: list[tuple[np.ndarray, float]]) -> list[tuple[Chain, float]]:
    """Converts an extension lookup result to plain tuples."""
    for tokens, score in found:
        assert isinstance(tokens, np.ndarray) and tokens.dtype == np.uint32 and tokens.ndim == 1
        assert isinstance(score, float)
    return [(tuple(int(t) for t in tokens), score) for tokens, score in found]


def check_ranked(found: list[tuple[np.ndarray, float]], ref: RefResult, k: int) -> None:
    """Asserts that an extension lookup agrees with the reference (exactly, unless ties)."""
    got = as_chains(found)
    assert len(got) <= k
    if not ref.ambiguous:
        assert [c for c, _ in got] == [c for c, _ in ref.chains]
        for (_, s), (_, rs) in zip(got, ref.chains):
            assert abs(s - rs) <= 1e-6
        return
    # Ties between equivalent branches: check everything that does not depend on their order.
    if ref.exact_count:
        assert len(got) == len(ref.chains)
    assert bool(got) == bool(ref.chains)
    if not got:
        return
    assert got[0][0] == ref.chains[0][0]
    trie = ref.trie
    assert trie is not None
    chains = [c for c, _ in got]
    assert len(set(chains)) == len(chains)
    for i, (chain, score) in enumerate(got):
        assert 1 <= len(chain) <= ref.max_len
        node = trie.node_at(chain)
        assert node is not None, f"{chain} is not a path of the reference trie"
        assert len(chain) == ref.max_len or not node.children, f"{chain} stops early"
        counts = {trie.node_at(chain[: j + 1]).count for j in range(len(chain))}  # type: ignore[union-attr]
        assert any(abs(score - c / trie.total) <= 1e-6 for c in counts)
        if i:
            assert score <= got[i - 1][1] + 1e-6
        for other in chains:
            assert other == chain or other[: len(chain)] != chain, "a chain is a prefix of another"


@dataclass
class RefTree:
    """The draft tree merge: chains inserted as root paths under a budget and a depth limit."""

    budget: int
    max_depth: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)

    def full(self) -> bool:
        return len(self.tokens) >= self.budget

    def insert(self, chain: Chain, source: int) -> None:
        parent = -1
        for d, tok in enumerate(chain[: self.max_depth]):
            existing = [
                i for i in range(len(self.tokens)) if self.parents[i] == parent and self.tokens[i] == tok
            ]
            if existing:
                parent = existing[0]
                continue
            if self.full():
                return
            self.tokens.append(tok)
            self.parents.append(parent)
            self.depths.append(d + 1)
            self.sources.append(source)
            parent = len(self.tokens) - 1


def ancestor_mask(parents: list[int]) -> np.ndarray:
    n = len(parents)
    mask = np.zeros((n, n), dtype=bool)
    for i in range(n):
        j = i
        while j >= 0:
            mask[i, j] = True
            j = parents[j]
    return mask
