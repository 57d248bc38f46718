"""Running one verification forward and handing out the logits rows the verification walk needs.

`forward_tree` runs the model over the inputs `tree_mask.build_tree_inputs` made. On CPU the
model's body and its LM head can run separately (`AttentionLayout.split_head`, decided by the
probe in `tree_probe`): the head is the largest matrix of a small model, and the walk only needs
the rows of the nodes it reaches, so `TreeLogits` computes them on demand. A greedy walk only
needs each row's argmax: for a row asked for alone, a head that has one answers from its greedy
proxy (`QuantLinear.greedy_argmax`, the exact argmax at about two thirds of the head's bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .cpu_attention import kernel_attention
from .cpu_matmul import GREEDY_PROXY_PATHS, KERNELS_PATH, apply_linear, head_rows_at_once, kernel_linears
from .direct_layers import direct_layers
from .model_layout import AttentionLayout, text_config
from .tree_mask import TreeInputs

__all__ = ["TreeLogits", "forward_tree", "apply_head", "argmax_rows", "greedy_head", "likely_rows"]


def argmax_rows(rows: torch.Tensor) -> list[int]:
    """The argmax of each row (the first maximal index, NaN counting as maximal, as in
    `torch.argmax`). A float32 CPU row goes through numpy, whose argmax over a large vocabulary
    is many times faster than PyTorch's on CPU (the README gives the figures)."""
    if rows.device.type == "cpu" and rows.dtype == torch.float32:
        return rows.detach().numpy().argmax(axis=-1).tolist()
    return rows.argmax(dim=-1).tolist()


class TreeLogits:
    """The target's logits for the rows of one verification forward (row 0: the last chain token,
    row 1 + i: node i), computed eagerly or, with a split head, on demand.

    With a large vocabulary the LM head costs as much as the rest of a small model per row, and
    the verification walk needs only the rows of the nodes it reaches (about the accepted length),
    one tree level at a time. Computed rows are kept, so no row is computed twice. `likely` rows
    are computed together with the first request: one head call over a few rows costs little
    more than over one (the weights are read once), so the rows the walk will probably ask for
    next (see `likely_rows`) ride along; `all_at_once` computes every row at the first request.
    `greedy` (hidden rows -> their argmax, see `greedy_head`) answers `argmax` for a row asked
    for alone when no likely rows would ride along.
    """

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        head: Any = None,
        all_at_once: bool = False,
        likely: Sequence[int] = (),
        greedy: Any = None,
    ):
        source = logits if logits is not None else hidden
        if source is None or (logits is None and head is None):
            raise ValueError("TreeLogits needs logits, or hidden states and a head")
        self._logits = logits
        self._hidden = source
        self._head = head
        self.num_rows = int(source.shape[0])
        self.device = source.device
        self._all_at_once = all_at_once
        self._likely = [int(r) for r in likely if 0 <= int(r) < self.num_rows]
        self._computed: dict[int, torch.Tensor] = {}
        self._greedy = greedy if logits is None else None
        self._argmax: dict[int, int] = {}

    def all(self) -> torch.Tensor:
        """(num_rows, vocab) logits."""
        if self._logits is None:
            self._logits = self._head(self._hidden)
        return self._logits

    def rows(self, index: list[int]) -> torch.Tensor:
        """(len(index), vocab) logits of the given rows."""
        if self._logits is not None or self._all_at_once:
            return self.all()[index]
        missing = list(dict.fromkeys(i for i in index if i not in self._computed))
        if missing:
            if not self._computed:  # the first request: take the likely rows along
                missing += [r for r in self._likely if r not in missing]
            for row, logits in zip(missing, self._head(self._hidden[missing])):
                self._computed[row] = logits
        return torch.stack([self._computed[i] for i in index])

    def argmax(self, index: list[int]) -> list[int]:
        """The argmax of the given rows (`argmax_rows` of their logits)."""
        if self._greedy is not None and not self._all_at_once:
            missing = [i for i in dict.fromkeys(index) if i not in self._computed and i not in self._argmax]
            riding = not self._computed and any(r not in missing for r in self._likely)
            if len(missing) == 1 and not riding:
                self._argmax[missing[0]] = int(self._greedy(self._hidden[missing])[0])
            if all(i in self._computed or i in self._argmax for i in index):
                return [self._argmax[i] if i in self._argmax else argmax_rows(self._computed[i][None])[0] for i in index]
        return argmax_rows(self.rows(index))


def likely_rows(parents: np.ndarray, count: int) -> list[int]:
    """Rows of the root and of the first-child chain below it, `count` rows at most: the nodes a
    greedy walk most probably visits (a drafter lists each node's children best first)."""
    rows, node = [0], -1
    first_child: dict[int, int] = {}
    for i, p in enumerate(np.asarray(parents).tolist()):
        first_child.setdefault(int(p), i)
    while len(rows) < count and node in first_child:
        node = first_child[node]
        rows.append(node + 1)
    return rows


def apply_head(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits for the final hidden states `hidden` (its LM head, then soft-capping)."""
    logits = apply_linear(model.get_output_embeddings(), hidden)
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def greedy_head(model: Any, device: torch.device) -> Any:
    """A function from hidden rows to their argmax through the model's greedy proxy head, or None
    when it has none (not on CPU, the head is not a `QuantLinear` with a proxy, or the logits are
    soft-capped, which could merge distinct logits into ties) or when the full product is the faster
    one on this CPU's kernel path (`cpu_matmul.GREEDY_PROXY_PATHS`)."""
    head = model.get_output_embeddings()
    if device.type != "cpu" or KERNELS_PATH not in GREEDY_PROXY_PATHS:
        return None
    if not hasattr(head, "has_greedy_argmax") or not head.has_greedy_argmax():
        return None
    if getattr(text_config(model), "final_logit_softcapping", None) is not None:
        return None
    return lambda rows: head.greedy_argmax(rows.contiguous().numpy())


def forward_tree(
    model: Any,
    layout: AttentionLayout,
    cache: Any,
    inputs: TreeInputs,
    parents: np.ndarray | None = None,
    greedy: bool = False,
) -> TreeLogits:
    """Run the verification forward; returns the logits of the last chain token and of each node.

    `parents` (the tree's) lets a split head compute the rows a walk will probably need together.
    `greedy` says the walk will only ask for argmaxes: a one-row forward then splits the head too,
    so that a greedy proxy head can answer (see `greedy_head`)."""
    kwargs = {
        "input_ids": inputs.input_ids,
        "position_ids": inputs.position_ids,
        "attention_mask": inputs.attention_mask,
        layout.cache_kwarg: cache,
        "use_cache": True,
    }
    k = inputs.num_logits
    # Every forward, plain steps included, computes the linear layers and the attention the same
    # way (see cpu_matmul and cpu_attention); the decoder layers of quantized models run as direct
    # kernel calls, with the modules' arithmetic (see direct_layers).
    with kernel_linears(model), kernel_attention(model), direct_layers(model):
        fast = greedy_head(model, layout.device) if greedy and layout.split_head else None
        if layout.split_head and (k > 1 or fast is not None):
            hidden = model.base_model(**kwargs).last_hidden_state[0, -k:]
            at_once = head_rows_at_once(model.get_output_embeddings(), hidden)
            likely = likely_rows(parents, at_once) if parents is not None else ()
            return TreeLogits(
                hidden=hidden,
                head=lambda h: apply_head(model, h),
                all_at_once=k <= at_once and fast is None,
                likely=likely,
                greedy=fast,
            )
        if layout.has_logits_to_keep:
            kwargs["logits_to_keep"] = k
        return TreeLogits(logits=model(**kwargs).logits[0, -k:])


