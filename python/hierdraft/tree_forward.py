"""Running one verification forward and handing out the logits rows the verification walk needs.

`forward_tree` runs the model over the inputs `tree_mask.build_tree_inputs` made. On CPU the
model's body and its LM head can run separately (`AttentionLayout.split_head`, decided by the
probe in `tree_probe`): the head is the largest matrix of a small model, and the walk only needs
the rows of the nodes it reaches, so `TreeLogits` computes them on demand.
"""

from __future__ import annotations

from typing import Any

import torch

from .cpu_matmul import MAX_ROWS, few_rows_linear, kernel_applies, small_batch_linears
from .model_layout import AttentionLayout, text_config
from .tree_mask import TreeInputs

__all__ = ["TreeLogits", "forward_tree", "apply_head"]


class TreeLogits:
    """The target's logits for the rows of one verification forward (row 0: the last chain token,
    row 1 + i: node i), computed eagerly or, with a split head, on demand.

    With a large vocabulary the LM head costs as much as the rest of a small model per row.
    With PyTorch's kernels the cost grows with the rows, so only the rows the verification walk
    asks for (about the accepted length) are computed, one head call per tree level. With
    hierdraft's kernel (`cpu_matmul`) up to `HEAD_ROWS_AT_ONCE` rows cost about one, so the
    first request computes every row in a single call (`all_at_once`).
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


# Rows up to which one call of hierdraft's kernel over every row of a tree beats a head call per
# tree level (Gemma 3 270M's 262k x 640 head, 2 threads, `cargo bench -p hierdraft-kernels`:
# 1 / 4 / 9 / 17 rows 30 / 33 / 47 / 76 ms).
HEAD_ROWS_AT_ONCE = 24


def _few_rows_head(head: Any, hidden: torch.Tensor) -> bool:
    """Whether `apply_head` runs the head through `cpu_matmul.few_rows_linear`."""
    return hidden.device.type == "cpu" and type(head) is torch.nn.Linear and hidden.shape[0] <= MAX_ROWS


def apply_head(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    head = model.get_output_embeddings()
    if _few_rows_head(head, hidden):
        logits = few_rows_linear(head, hidden)  # see cpu_matmul: 3-4x faster from 2 rows on
    else:
        logits = head(hidden)
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
    # Plain steps (no tree) run exactly as model.generate would; tree steps on CPU use the
    # weight-major matmul form for their few rows (see cpu_matmul).
    rows = int(inputs.input_ids.shape[1]) if k > 1 and layout.device.type == "cpu" else 1
    with small_batch_linears(model, rows):
        if layout.split_head and k > 1:
            hidden = model.base_model(**kwargs).last_hidden_state[0, -k:]
            head = model.get_output_embeddings()
            all_at_once = (
                k <= HEAD_ROWS_AT_ONCE and _few_rows_head(head, hidden) and kernel_applies(head.weight, hidden)
            )
            return TreeLogits(hidden=hidden, head=lambda h: apply_head(model, h), all_at_once=all_at_once)
        if layout.has_logits_to_keep:
            kwargs["logits_to_keep"] = k
        return TreeLogits(logits=model(**kwargs).logits[0, -k:])


