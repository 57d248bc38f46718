"""Choosing the accepted path of a draft tree from the target model's logits.

- `SamplingParams.process`: temperature, then top-k, then top-p, applied to float32 logits exactly
  like transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper` and `TopPLogitsWarper` (the
  order and the arithmetic of `model.generate(do_sample=True)`).
- `verify_greedy`: follow the target's argmax from the root; accept the deepest path of nodes that
  all match it, plus the target's own next token (the bonus token).
- `verify_sampling`: the target's own sample, position by position, followed down the tree. The
  token at output position t is the draw of the target distribution p_t at a uniform number u_t
  that depends only on the seed and t (`hierdraft.draws`). The walk draws the root's token, moves
  to the child holding it (the first in node order) and draws there, until a drawn token has no
  child: that one is the bonus token. So every emitted token is the token plain sampling with the
  same seed emits after the same prefix: with a seed, the output *equals* plain decoding's (the
  rows' logits being equal bit for bit), and without one each token is a fresh draw from p_t.
  Drafts here are tokens without a draft distribution, and for such drafts the chance of going
  down to some child is the sum of their p, the same as with SpecInfer's recursive rejection
  (child x accepted with probability p(x) renormalised over the children not yet rejected).

`logits` is a `TreeLogits` (rows computed on demand). Row 0 is the root (the last chain token);
row 1 + i is node i. Greedy verification moves one small host array per step off the device;
sampling one number per node the walk reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .draws import PositionDraws
from .tree_forward import TreeLogits

__all__ = ["SamplingParams", "Verdict", "verify_greedy", "verify_sampling"]


@dataclass(frozen=True)
class SamplingParams:
    """temperature == 0 means greedy; top_k None/0 and top_p None/1.0 mean no filtering."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and (int(self.top_k) != self.top_k or self.top_k < 0):
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k}")
        if self.top_p is not None and not (0.0 <= self.top_p <= 1.0):
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """Warped float32 scores (rows x vocab), as `model.generate` computes them before softmax."""
        scores = logits.float()
        if self.temperature != 1.0:
            scores = scores / float(self.temperature)
        if self.top_k:
            k = min(int(self.top_k), scores.shape[-1])
            kth = torch.topk(scores, k)[0][..., -1, None]
            scores = scores.masked_fill(scores < kth, -float("inf"))
        if self.top_p is not None and self.top_p < 1.0:
            sorted_scores, sorted_idx = torch.sort(scores, descending=False)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            remove_sorted = cumulative <= (1 - float(self.top_p))
            remove_sorted[..., -1:] = False
            remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
            scores = scores.masked_fill(remove, -float("inf"))
        return scores

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.process(logits), dim=-1)


@dataclass
class Verdict:
    """The outcome of one verification: accepted node indices (root to leaf) and emitted tokens."""

    path: list[int]
    tokens: list[int]  # tokens of the accepted nodes, then the bonus token


def _draw(weights: torch.Tensor, u: float) -> int:
    """The index drawn with probability proportional to the non-negative `weights` (1-D) at the
    uniform number `u` in [0, 1): where `u` times the total falls in their float64 cumulative
    sum. A pure function of the weights and `u`, so equal rows and equal numbers draw equal
    tokens (it is also much cheaper than `torch.multinomial` over a large vocabulary)."""
    cumulative = torch.cumsum(weights, dim=0, dtype=torch.float64)
    index = int(torch.searchsorted(cumulative, u * cumulative[-1], right=True))
    if index >= len(weights) or not weights[index] > 0:
        # u * total rounded up to the total: the last index with any weight
        index = int(torch.nonzero(weights > 0)[-1, 0])
    return index


def _children_order(parents: np.ndarray) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parents.tolist()):
        children.setdefault(p, []).append(i)
    return children


def verify_greedy(
    logits: TreeLogits,
    tokens: np.ndarray,
    parents: np.ndarray,
    depths: np.ndarray,
    anc: np.ndarray,
    batched: bool | None = None,
) -> Verdict:
    """Deepest tree path that matches the target's argmax (first in node order on ties), plus the
    argmax after it.

    batched (default on accelerators): argmax of every row, one copy to the host, vectorised match.
    Otherwise (default on CPU): argmax only of the rows the walk reaches, level by level.
    """
    n = len(tokens)
    if batched is None:
        batched = logits.device.type != "cpu"
    if n == 0:
        return Verdict([], logits.argmax([0]))
    if batched:
        target = logits.all().argmax(dim=-1).cpu().numpy()
        match = tokens.astype(np.int64) == target[parents.astype(np.int64) + 1]
        ok = ~(anc & ~match[None, :]).any(axis=1)  # every node on the path to i matches
        best = int(np.argmax(np.where(ok, depths, 0))) if ok.any() else -1
        bonus = int(target[best + 1])
    else:
        children = _children_order(parents)
        argmax: dict[int, int] = {}
        frontier = [-1]
        while True:
            level = logits.argmax([node + 1 for node in frontier])
            step: list[int] = []
            for node, t in zip(frontier, level):
                argmax[node] = t
                step.extend(ch for ch in children.get(node, ()) if tokens[ch] == t)
            if not step:
                break
            frontier = step
        best = min(frontier)
        bonus = argmax[best]
    if best < 0:
        return Verdict([], [bonus])
    path = np.nonzero(anc[best])[0].tolist()
    return Verdict(path, [int(t) for t in tokens[path]] + [bonus])


def verify_sampling(
    logits: TreeLogits,
    tokens: np.ndarray,
    parents: np.ndarray,
    params: SamplingParams,
    draws: PositionDraws,
    position: int,
) -> Verdict:
    """Follow the target's samples down the tree; `position` is the output position of the
    root's token (the number of tokens emitted before this step).

    Rows are processed (warpers + softmax) lazily, only for the nodes the walk reaches: with a
    large vocabulary and top-p that is a sort per emitted token, as in model.generate, not one
    per tree node.
    """
    children = _children_order(parents)
    path: list[int] = []
    node = -1
    while True:
        probs = params.probabilities(logits.rows([node + 1]))[0]
        token = _draw(probs, draws.uniform(position + len(path)))
        node = next((child for child in children.get(node, ()) if tokens[child] == token), None)
        if node is None:
            return Verdict(path, [int(tokens[i]) for i in path] + [token])
        path.append(node)
