"""Choosing the accepted path of a draft tree from the target model's logits.

- `SamplingParams.process`: temperature, then top-k, then top-p, applied to float32 logits exactly
  like transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper` and `TopPLogitsWarper` (the
  order and the arithmetic of `model.generate(do_sample=True)`).
- `verify_greedy`: follow the target's argmax from the root; accept the deepest path of nodes that
  all match it, plus the target's own next token (the bonus token).
- `verify_sampling`: SpecInfer-style recursive rejection over each node's children. At a node with
  target distribution p the children are tried in order: child x is accepted with probability
  p(x) / (1 - mass of the children rejected so far), i.e. p renormalised after zeroing the
  rejected ones; if every child is rejected, the bonus token is drawn from p with all of them
  zeroed. The output distribution is exactly that of sampling without drafts.

`logits` is a `TreeLogits` (rows computed on demand). Row 0 is the root (the last chain token); row 1 + i is node i. Greedy verification
moves one small host array per step off the device; sampling one per node the walk reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One index drawn with probability proportional to the non-negative `weights` (1-D): the
    inverse of their float64 cumulative sum at a uniform draw. It is the draw of
    `torch.multinomial(weights, 1)`, whose CPU path over a large vocabulary costs a sizeable
    share of a sampled decoding step (the README gives the figures)."""
    cumulative = torch.cumsum(weights, dim=0, dtype=torch.float64)
    u = torch.rand((), generator=generator, dtype=torch.float64, device=weights.device)
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
    generator: torch.Generator | None,
    uniform_generator: torch.Generator | None,
) -> Verdict:
    """Recursive rejection sampling over the tree.

    Rows are processed (warpers + softmax) lazily, only for the nodes the walk reaches: with a
    large vocabulary and top-p that is a sort per emitted token, as in model.generate, not one
    per tree node. Each reached row costs one small device-to-host copy.
    """
    n = len(tokens)
    children = _children_order(parents)
    u = torch.rand(n, generator=uniform_generator, dtype=torch.float64).numpy()
    device = logits.device
    path: list[int] = []
    node = -1
    draws = 0
    while True:
        probs = params.probabilities(logits.rows([node + 1]))[0]
        kids = children.get(node)
        accepted = None
        rejected: list[int] = []
        rejected_mass = 0.0
        if kids:
            kid_tokens = tokens[kids]
            kid_p = probs[torch.from_numpy(kid_tokens.astype(np.int64)).to(device)].double().cpu().numpy()
            for child, tok, p in zip(kids, kid_tokens.tolist(), kid_p.tolist()):
                if tok in rejected:  # already zeroed: p'(tok) = 0
                    continue
                left = 1.0 - rejected_mass
                ratio = p / left if left > 0.0 else 0.0
                draw = u[draws]
                draws += 1
                if draw < ratio:
                    accepted = child
                    break
                rejected_mass += p
                rejected.append(tok)
        if accepted is not None:
            path.append(accepted)
            node = accepted
            continue
        residual = probs
        if rejected and rejected_mass < 1.0 - 1e-6:  # (else: float round-off, nothing left to zero)
            residual = probs.clone()
            residual[torch.tensor(rejected, device=device)] = 0.0
        bonus = _draw(residual, generator)
        return Verdict(path, [int(tokens[i]) for i in path] + [bonus])
