"""``HierdraftProposer``: vLLM's custom-class proposer interface on top of hierdraft's Rust drafter.

One call of :meth:`HierdraftProposer.propose` per engine step:

1. checks the argument types and shapes and reads both arrays as numpy arrays (a CPU torch
   tensor is viewed, not copied);
2. hands the whole batch to one ``SessionTable.step`` call (Rust, the GIL released), which
   brings every row's draft session up to date and drafts its chain.

The rules of that step live in the Rust core (``hierdraft_core::session_table``):

- vLLM passes no request ids, so each row's session is found by content: the *signature* of a
  sequence is a 64-bit hash of its length, its first 8 and its last 8 tokens. A row with ``c``
  new tokens and length ``n`` takes the session filed under the signature of its first ``n - c``
  tokens (the same request one step earlier, wherever its row was) and extends it by the ``c``
  tokens, without re-indexing anything. Not found, it takes the session it held last step if it
  still starts with that sequence (vLLM skipped the proposer for some steps), else a new session
  indexes its tokens. Only the number of ``sampled_token_ids[i]`` is read: vLLM has written the
  tokens into ``token_ids_cpu`` already (as vLLM's own n-gram proposer reads them).
- Sessions no row claims go to an idle pool (a preempted request finds its session there); the
  oldest beyond ``max_idle_sessions`` are finished, feeding the model store's online part when
  ``learn`` is on (cross-request history).
- Each row with new tokens and room left gets the best chain (``DraftTree.best_chain``) of the
  tree its session proposes, at most ``min(K, max_model_len - n)`` tokens: exactly what a fresh
  session of the same drafter over the row's tokens proposes. Large batches are drafted in
  parallel. Rows without new tokens (vLLM passes ``[]`` for a prefill chunk or a discarded row),
  rows at ``max_model_len`` and rows with nothing to draft get ``[]``.

The drafter is set up for chains (:mod:`hierdraft.vllm.options`): a tree budget of K nodes, so the
hierarchy stops at the first level that brings the tree to K nodes, and one candidate chain per
level.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import _core
from .options import ProposerOptions, options_from_vllm_config
from .stores import build_drafter

__all__ = ["HierdraftProposer"]

_TOKEN_DTYPES = (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint32))


def _as_array(value: Any, name: str, ndim: int) -> np.ndarray:
    """A numpy view of a numpy array or CPU torch tensor with ``ndim`` dimensions of integers."""
    if not isinstance(value, np.ndarray):
        to_numpy = getattr(value, "numpy", None)
        if not callable(to_numpy):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
        try:
            value = to_numpy()
        except (TypeError, RuntimeError) as exc:  # a CUDA tensor, or one that requires grad
            raise ValueError(f"{name} cannot be read as a numpy array (pass a CPU tensor without grad): {exc}") from exc
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name}.numpy() did not return a numpy array")
    if value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {value.shape}")
    if value.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {value.dtype}")
    return value


class HierdraftProposer:
    """A vLLM speculative proposer drafting with Hierarchy Drafting (context, model, corpus).

    vLLM builds it as ``HierdraftProposer(vllm_config)`` (``speculative_config={"method":
    "custom_class", "model": "hierdraft.vllm.HierdraftProposer", "num_speculative_tokens": K}``).
    ``drafter`` (a ``hierdraft._core.HierarchicalDrafter``) and ``tokenizer`` replace what the
    config would select; they are for tests and embedding, vLLM passes neither.
    """

    def __init__(self, vllm_config: Any, *, drafter: Any = None, tokenizer: Any = None) -> None:
        self.options: ProposerOptions = options_from_vllm_config(vllm_config)
        self.drafter = drafter if drafter is not None else build_drafter(self.options, tokenizer=tokenizer)
        if not isinstance(self.drafter, _core.HierarchicalDrafter):
            raise TypeError(f"drafter must be a hierdraft HierarchicalDrafter, got {type(self.drafter).__name__}")
        self.num_speculative_tokens = self.options.num_speculative_tokens
        self.max_model_len = self.options.max_model_len
        self.sessions = _core.SessionTable(
            self.drafter,
            self.num_speculative_tokens,
            self.max_model_len,
            self.options.max_idle_sessions,
            learn=self.options.learn,
        )

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """vLLM calls this after loading the target model; hierdraft needs no model."""

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: Any,
        token_ids_cpu: Any,
        slot_mappings: Any = None,
        **_unused: Any,
    ) -> list[list[int]]:
        """Draft chains for the active rows; ``result[i]`` belongs to row i (see the module docs).

        ``sampled_token_ids[i]``: the tokens row i accepted this step (``[]``: do not draft);
        ``num_tokens_no_spec``: int array, row i's token count at ``[i]`` (its length is the batch
        capacity); ``token_ids_cpu``: int array ``(capacity, max_model_len)``, row i's tokens in
        ``[i, :num_tokens_no_spec[i]]``. ``slot_mappings`` is vLLM's and unused.
        """
        if not isinstance(sampled_token_ids, (list, tuple)):
            raise TypeError(f"sampled_token_ids must be a list of lists, got {type(sampled_token_ids).__name__}")
        num_tokens = _as_array(num_tokens_no_spec, "num_tokens_no_spec", 1)
        tokens = _as_array(token_ids_cpu, "token_ids_cpu", 2)
        if tokens.dtype not in _TOKEN_DTYPES:
            raise TypeError(f"token_ids_cpu must have dtype int32, int64 or uint32, got {tokens.dtype}")
        if not sampled_token_ids:
            return []
        if num_tokens.dtype not in _TOKEN_DTYPES:
            num_tokens = num_tokens.astype(np.int64)
        if not tokens.flags.c_contiguous:  # the table reads rows as contiguous slices
            tokens = np.ascontiguousarray(tokens[: len(sampled_token_ids)])
        return self.sessions.step(sampled_token_ids, num_tokens, tokens)

    def close(self) -> None:
        """Finish every session (feeding the model store when learning is on)."""
        self.sessions.close()
