"""Running one verification forward and handing out the logits rows the verification walk needs.

`forward_tree` runs the model over the inputs `tree_mask.build_tree_inputs` made. On CPU the
model's body and its LM head can run separately (`AttentionLayout.split_head`, decided by the
probe in `tree_probe`): the head is the largest matrix of a small model, and the walk only needs
the rows of the nodes it reaches, so `TreeLogits` computes them on demand.
"""

from __future__ import annotations

from typing import Any

import torch

from .cpu_matmul import apply_linear, head_rows_at_once, kernel_linears
from .model_layout import AttentionLayout, text_config
from .tree_mask import TreeInputs

__all__ = ["TreeLogits", "forward_tree", "apply_head"]


class TreeLogits:
    """The target's logits for the rows of one verification forward (row 0: the last chain token,
    row 1 + i: node i), computed eagerly or, with a split head, on demand.

    With a large vocabulary the LM head costs as much as the rest of a small model per row.
    When its cost grows with the rows, only the rows the verification walk asks for (about the
    accepted length) are computed, one head call per tree level. When a few rows cost about one
    (hierdraft's float32 kernel, see `cpu_matmul.head_rows_at_once`), the first request computes
    every row in a single call (`all_at_once`).
    """

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        head: Any = None,
        all_at_once: bool = False,
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

    def all(self) -> torch.Tensor:
        """(num_rows, vocab) logits."""
        if self._logits is None:
            self._logits = self._head(self._hidden)
        return self._logits

    def rows(self, index: list[int]) -> torch.Tensor:
        """(len(index), vocab) logits of the given rows."""
        if self._logits is not None or self._all_at_once:
            return self.all()[index]
        return self._head(self._hidden[index])


def apply_head(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits for the final hidden states `hidden` (its LM head, then soft-capping)."""
    logits = apply_linear(model.get_output_embeddings(), hidden)
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def forward_tree(model: Any, layout: AttentionLayout, cache: Any, inputs: TreeInputs) -> TreeLogits:
    """Run the verification forward; returns the logits of the last chain token and of each node."""
    kwargs = {
        "input_ids": inputs.input_ids,
        "position_ids": inputs.position_ids,
        "attention_mask": inputs.attention_mask,
        layout.cache_kwarg: cache,
        "use_cache": True,
    }
    k = inputs.num_logits
    # Every forward, plain steps included, computes the linear layers the same way (see cpu_matmul).
    with kernel_linears(model):
        if layout.split_head and k > 1:
            hidden = model.base_model(**kwargs).last_hidden_state[0, -k:]
            all_at_once = k <= head_rows_at_once(model.get_output_embeddings(), hidden)
            return TreeLogits(hidden=hidden, head=lambda h: apply_head(model, h), all_at_once=all_at_once)
        if layout.has_logits_to_keep:
            kwargs["logits_to_keep"] = k
        return TreeLogits(logits=model(**kwargs).logits[0, -k:])


