"""`AdaptiveDrafter`: trims each draft tree to the nodes that are worth verifying.

Each extra node makes the verification forward more expensive (on CPU by a few percent of a plain
step per node; the README gives measured figures). A node pays off only if it is likely enough to
be accepted. The wrapper learns both quantities online, from what it sees through the session
protocol:

- acceptance: whether each proposed node ended up on the accepted path. Counts are kept per
  bucket (the level that proposed the node, its depth, and whether it is its parent's first
  child), both across requests and within the current request; a request's own rate starts
  from the cross-request rate and moves towards what this request shows (how well a level
  drafts differs a lot from one prompt to the next).
- cost: the time from `propose()` returning to `accept()` being called, which is the
  verification. It is fitted as `a + b * nodes` over recent steps.

A node's value is its bucket's acceptance rate, capped by its parent's value (a node cannot be
reached more often than its parent). Nodes are ranked by value, parents first. The tree keeps the
prefix of that ranking that maximises the expected tokens per second, `(1 + sum of values) /
cost(nodes)`. Every `explore_every`-th step also verifies the next `explore_nodes` nodes of the
ranking, so the buckets just below the cut keep being measured (and the node counts vary enough
to fit the cost's slope). The whole tree is not verified then: on CPU such a step costs several
plain ones, which, once every `explore_every` steps, is as much as drafting gains where few
drafts are accepted (sampling at temperature 1; the README gives the measurements).
Pruning only removes nodes, so decoding stays lossless.

The output is unchanged, greedy or sampled: the trees depend on measured timings, but each sampled
token is the target's draw at a uniform keyed by the seed and its position (`hierdraft.draws`),
whatever tree was verified, so a seed still fixes the output.

It wraps any drafter that follows the `hierdraft.drafting` protocol, for example
`AdaptiveDrafter(default_drafter(tokenizer))`, and works in any loop that calls `propose` /
`accept` on the session. All sessions of one wrapper share its statistics (under a lock), so
what one request learns carries over to the next.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from .drafting import DrafterLike, DraftSessionLike, PyDraftTree, keep_nodes

__all__ = ["AdaptiveDrafter", "AcceptanceStats", "StepCost", "choose_prefix"]

Bucket = tuple[int, int, bool]  # (source level, depth, first child of its parent)
# How many of its own observations a request needs before they weigh as much as the
# cross-request rate.
SESSION_PRIOR_WEIGHT = 4.0
# Nodes deeper than this share one bucket: they are rare, so separate buckets would never move
# far from the prior.
MAX_BUCKET_DEPTH = 16
# Weight of the newest plain (tree-less) step in the running mean of their time: smooths out the
# noise of single steps while still following a machine whose speed drifts.
PLAIN_STEP_WEIGHT = 0.2
# Tree steps needed before a fitted slope is trusted over the prior one.
MIN_STEPS_FOR_SLOPE = 8
# One step in this many verifies `DEFAULT_EXPLORE_NODES` more nodes than the choice: often
# enough that buckets that were cut are measured again within a request, seldom enough that the
# larger trees cost little. A bucket is only measured while it is verified, so one whose first
# few nodes were rejected by chance stays below the cut until an exploring step reaches it; at
# one step in 16 a bucket that pays stayed cut for whole runs (the README gives the runs).
DEFAULT_EXPLORE_EVERY = 8
DEFAULT_EXPLORE_NODES = 4


class AcceptanceStats:
    """How often proposed nodes were accepted, per bucket, starting from a prior.

    `prior` is the acceptance rate assumed before anything is seen, weighted like `prior_weight`
    observations. Counts are halved once a bucket has seen `max_count` nodes, so recent steps
    weigh more.
    """

    def __init__(self, prior: float = 0.3, prior_weight: float = 2.0, max_count: float = 2000.0):
        if not 0.0 <= prior <= 1.0 or prior_weight <= 0 or max_count <= 0:
            raise ValueError("AcceptanceStats needs 0 <= prior <= 1, prior_weight > 0 and max_count > 0")
        self.prior, self.prior_weight, self.max_count = prior, prior_weight, max_count
        self._counts: dict[Bucket, list[float]] = {}

    def rate(self, bucket: Bucket, prior: float | None = None) -> float:
        """Smoothed acceptance rate of the bucket; `prior` replaces the default prior."""
        proposed, accepted = self._counts.get(bucket, (0.0, 0.0))
        p = self.prior if prior is None else prior
        return (accepted + p * self.prior_weight) / (proposed + self.prior_weight)

    def update(self, buckets: Sequence[Bucket], accepted: Sequence[bool]) -> None:
        for bucket, ok in zip(buckets, accepted):
            counts = self._counts.setdefault(bucket, [0.0, 0.0])
            counts[0] += 1.0
            counts[1] += float(ok)
            if counts[0] >= self.max_count:
                counts[0] /= 2.0
                counts[1] /= 2.0


class StepCost:
    """Verification time as a function of the number of tree nodes, fitted online.

    Tree steps are fitted as `a + b * nodes` by least squares over the last `window` steps. While
    the node counts seen are too uniform for a slope, `b` is taken as `prior_slope` of a step.
    Steps without a tree are tracked separately (on CPU they take another code path).
    """

    def __init__(self, window: int = 64, prior_slope: float = 0.04):
        if window < 2 or prior_slope < 0:
            raise ValueError("StepCost needs window >= 2 and prior_slope >= 0")
        self.prior_slope = prior_slope
        self._tree_steps: deque[tuple[int, float]] = deque(maxlen=window)
        # running sums over the window (n, t, n*n, n*t): the fit costs O(1) per step
        self._sums = [0.0, 0.0, 0.0, 0.0]
        self._plain: float | None = None

    def _add(self, nodes: int, seconds: float, sign: float) -> None:
        for i, v in enumerate((nodes, seconds, nodes * nodes, nodes * seconds)):
            self._sums[i] += sign * v

    def observe(self, nodes: int, seconds: float) -> None:
        if not seconds > 0:
            return
        if nodes == 0:
            if self._plain is None:
                self._plain = seconds
            else:
                self._plain = (1.0 - PLAIN_STEP_WEIGHT) * self._plain + PLAIN_STEP_WEIGHT * seconds
            return
        if len(self._tree_steps) == self._tree_steps.maxlen:
            self._add(*self._tree_steps.popleft(), -1.0)
        self._tree_steps.append((nodes, seconds))
        self._add(nodes, seconds, 1.0)

    def predict(self, max_nodes: int) -> np.ndarray | None:
        """Expected seconds for 0..max_nodes nodes, or None before any tree step was seen."""
        k = len(self._tree_steps)
        if k == 0:
            return None
        sn, st, snn, snt = self._sums
        mean_n, mean_t = sn / k, st / k
        var_n = snn / k - mean_n * mean_n
        slope = None
        if k >= MIN_STEPS_FOR_SLOPE and var_n >= 1.0:
            fitted = (snt / k - mean_n * mean_t) / var_n
            if fitted >= 0:
                slope = fitted
        if slope is None:
            slope = self.prior_slope * mean_t / (1.0 + self.prior_slope * mean_n)
        intercept = mean_t - slope * mean_n
        if intercept <= 0:
            intercept = min(t for _, t in self._tree_steps)
        cost = intercept + slope * np.arange(max_nodes + 1, dtype=np.float64)
        cost[0] = self._plain if self._plain is not None else intercept
        return cost


def choose_prefix(values: np.ndarray, cost: np.ndarray) -> int:
    """How many of the nodes (sorted by value, best first) maximise (1 + sum of values) / cost."""
    gain = 1.0 + np.concatenate([[0.0], np.cumsum(values)])
    return int(np.argmax(gain / cost[: len(gain)]))


def _buckets(parents: np.ndarray, depths: np.ndarray, sources: np.ndarray) -> list[Bucket]:
    seen: set[int] = set()
    out: list[Bucket] = []
    for p, d, s in zip(parents.tolist(), depths.tolist(), sources.tolist()):
        out.append((int(s), min(int(d), MAX_BUCKET_DEPTH), p not in seen))
        seen.add(p)
    return out


def _accepted_nodes(tokens: np.ndarray, parents: np.ndarray, emitted: Sequence[int]) -> np.ndarray:
    """Which nodes lie on the path spelled by the emitted tokens (the bonus token matches none)."""
    accepted = np.zeros(len(tokens), dtype=bool)
    node = -1
    for tok in emitted:
        match = np.nonzero((parents == node) & (tokens == tok))[0]
        if len(match) == 0:
            break
        node = int(match[0])
        accepted[node] = True
    return accepted


class AdaptiveDrafter:
    """Wraps a drafter; its sessions return trees trimmed to the nodes worth verifying (see the
    module docstring). Other attributes are those of the wrapped drafter."""

    def __init__(
        self,
        drafter: DrafterLike,
        explore_every: int = DEFAULT_EXPLORE_EVERY,
        stats: AcceptanceStats | None = None,
        cost: StepCost | None = None,
        explore_nodes: int = DEFAULT_EXPLORE_NODES,
    ):
        if explore_every < 1:
            raise ValueError(f"explore_every must be >= 1, got {explore_every}")
        if explore_nodes < 0:
            raise ValueError(f"explore_nodes must be >= 0, got {explore_nodes}")
        self.drafter = drafter
        self.explore_every = explore_every
        self.explore_nodes = explore_nodes
        self.stats = stats if stats is not None else AcceptanceStats()
        self.cost = cost if cost is not None else StepCost()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.drafter, name)

    def start(self, prompt_ids: Sequence[int]) -> _AdaptiveSession:
        return _AdaptiveSession(self, self.drafter.start(prompt_ids))

    def select(self, parents: np.ndarray, buckets: list[Bucket], session: AcceptanceStats,
               extra: int = 0) -> np.ndarray:
        """Boolean mask of the nodes to verify (closed under ancestors): the best prefix of the
        ranking, and `extra` more nodes of it."""
        n = len(parents)
        with self._lock:
            rates = [session.rate(b, prior=self.stats.rate(b)) for b in buckets]
            cost = self.cost.predict(n)
        if cost is None:
            return np.ones(n, dtype=bool)
        values = np.empty(n, dtype=np.float64)
        for i, (p, r) in enumerate(zip(parents.tolist(), rates)):
            values[i] = r if p < 0 else min(r, values[p])
        order = np.lexsort((np.arange(n), -values))  # by value, then node order: parents first
        keep = np.zeros(n, dtype=bool)
        keep[order[: choose_prefix(values[order], cost) + extra]] = True
        return keep

    def observe(self, buckets: list[Bucket], accepted: np.ndarray, nodes: int, seconds: float | None) -> None:
        with self._lock:
            self.stats.update(buckets, accepted.tolist())
            if seconds is not None:
                self.cost.observe(nodes, seconds)


class _AdaptiveSession:
    """One request's session: the wrapped session plus what the last proposal kept."""

    def __init__(self, owner: AdaptiveDrafter, inner: DraftSessionLike):
        self._owner = owner
        self._inner = inner
        self._steps = 0
        self._pending: tuple[np.ndarray, np.ndarray, list[Bucket]] | None = None
        self._stats = AcceptanceStats(prior_weight=SESSION_PRIOR_WEIGHT)
        self._proposed_at = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def propose(self) -> PyDraftTree:
        tree = self._inner.propose()
        self._steps += 1
        tokens = np.asarray(tree.tokens).astype(np.int64, copy=False).reshape(-1)
        parents = np.asarray(tree.parents).astype(np.int64, copy=False).reshape(-1)
        depths = np.asarray(tree.depths).astype(np.int64, copy=False).reshape(-1)
        sources = np.asarray(getattr(tree, "sources", np.zeros(len(tokens))), dtype=np.int64).reshape(-1)
        buckets = _buckets(parents, depths, sources)
        if len(tokens):
            exploring = self._steps % self._owner.explore_every == 0
            keep = self._owner.select(parents, buckets, self._stats, self._owner.explore_nodes if exploring else 0)
        else:
            keep = np.ones(0, dtype=bool)
        tokens, parents, depths = keep_nodes(tokens, parents, depths, keep)
        kept_buckets = [b for b, k in zip(buckets, keep.tolist()) if k]
        self._pending = (tokens, parents, kept_buckets)
        self._proposed_at = time.perf_counter()
        return PyDraftTree(tokens, parents, depths, sources[keep])

    def accept(self, tokens: Sequence[int]) -> None:
        seconds = time.perf_counter() - self._proposed_at
        if self._pending is not None:
            node_tokens, parents, buckets = self._pending
            accepted = _accepted_nodes(node_tokens, parents, [int(t) for t in tokens])
            self._stats.update(buckets, accepted.tolist())
            # the first step also runs the prompt's forward: its time says nothing about the tree
            self._owner.observe(buckets, accepted, len(node_tokens), seconds if self._steps > 1 else None)
            self._pending = None
        self._inner.accept(tokens)

    def finish(self, *args: Any, **kwargs: Any) -> None:
        self._inner.finish(*args, **kwargs)
