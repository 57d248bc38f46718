"""``HierdraftProposer``: vLLM's custom-class proposer interface on top of hierdraft's Rust drafter.

One call of :meth:`HierdraftProposer.propose` per engine step:

1. checks the arguments (types, shapes, lengths) and reads them as numpy arrays (a CPU torch
   tensor is viewed, not copied);
2. brings every row's draft session up to date (:class:`~hierdraft.vllm.sessions.SessionTable`:
   sessions found by content, extended incrementally);
3. drafts a tree for every row that has new tokens and room left and cuts it to its most
   probable root-to-leaf path (``DraftTree.best_chain``) of at most ``min(K, max_model_len -
   length)`` tokens, since vLLM verifies chains, not trees: all rows in one
   ``HierarchicalDrafter.propose_chains`` call (Rust, the trees drafted in parallel as
   ``propose_batch`` does, the GIL released).

Rows without new tokens (vLLM passes ``[]`` for a prefill chunk or a discarded row), rows at
``max_model_len`` and rows whose tree is empty get ``[]``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .options import ProposerOptions, options_from_vllm_config
from .sessions import SessionTable
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
    ``drafter`` (a ``HierarchicalDrafter``) and ``tokenizer`` replace what the config would select;
    they are for tests and embedding, vLLM passes neither.
    """

    def __init__(self, vllm_config: Any, *, drafter: Any = None, tokenizer: Any = None) -> None:
        self.options: ProposerOptions = options_from_vllm_config(vllm_config)
        self.drafter = drafter if drafter is not None else build_drafter(self.options, tokenizer=tokenizer)
        self.sessions = SessionTable(self.drafter, self.options.max_idle_sessions, learn=self.options.learn)
        self.num_speculative_tokens = self.options.num_speculative_tokens
        self.max_model_len = self.options.max_model_len

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
        rows = len(sampled_token_ids)
        num_tokens = _as_array(num_tokens_no_spec, "num_tokens_no_spec", 1)
        tokens = _as_array(token_ids_cpu, "token_ids_cpu", 2)
        if tokens.dtype not in _TOKEN_DTYPES:
            raise TypeError(f"token_ids_cpu must have dtype int32, int64 or uint32, got {tokens.dtype}")
        if rows == 0:
            return []
        if not tokens.flags.c_contiguous:  # the sessions read rows as contiguous slices
            tokens = np.ascontiguousarray(tokens[:rows])
        if num_tokens.shape[0] < rows or tokens.shape[0] < rows:
            raise ValueError(
                f"{rows} rows in sampled_token_ids, but num_tokens_no_spec has {num_tokens.shape[0]} "
                f"and token_ids_cpu {tokens.shape[0]}"
            )
        counts = [len(s) for s in sampled_token_ids]
        lengths = num_tokens[:rows].astype(np.int64)
        # a cheap bound first; the row-by-row check runs (and names the bad row) only when it fails
        if max(counts) > int(lengths.min()) or int(lengths.max()) > min(tokens.shape[1], self.max_model_len):
            self._check_lengths(counts, lengths, tokens.shape[1])

        sessions = self.sessions.step(sampled_token_ids, lengths, tokens, counts)
        room = np.minimum(self.num_speculative_tokens, self.max_model_len - lengths).tolist()
        drafting = [i for i in range(rows) if sessions[i] is not None and room[i] > 0]
        if len(drafting) == rows:
            return self.drafter.propose_chains(sessions, room)
        out: list[list[int]] = [[] for _ in range(rows)]
        if drafting:
            chains = self.drafter.propose_chains([sessions[i] for i in drafting], [room[i] for i in drafting])
            for i, chain in zip(drafting, chains):
                out[i] = chain
        return out

    def _check_lengths(self, counts: list[int], lengths: np.ndarray, width: int) -> None:
        counts_arr = np.asarray(counts, dtype=np.int64)
        bad = (lengths < counts_arr) | (lengths > min(width, self.max_model_len))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"row {i}: num_tokens_no_spec[{i}] = {int(lengths[i])} with {counts[i]} new token(s); "
                f"it must be at least that and at most min(token_ids_cpu.shape[1] = {width}, "
                f"max_model_len = {self.max_model_len})"
            )

    def close(self) -> None:
        """Finish every session (feeding the model store when learning is on)."""
        self.sessions.close()
