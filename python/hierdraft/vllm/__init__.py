"""hierdraft as a vLLM speculative proposer: ``hierdraft.vllm.HierdraftProposer``.

Configure vLLM with::

    speculative_config={"method": "custom_class",
                        "model": "hierdraft.vllm.HierdraftProposer",
                        "num_speculative_tokens": K}

and optionally ``additional_config={"hierdraft": {...}}`` (see :mod:`hierdraft.vllm.options`).
This package never imports vLLM: it reads the config by attribute, so it imports and is tested
without vLLM, and vLLM (which pins other torch and transformers versions than this project)
lives in an environment of its own.

What vLLM 0.33.0 does with a custom proposer, read from its wheel (paths inside ``vllm/``):

- ``config/speculative.py``: ``method="custom_class"`` requires ``model`` to hold the dotted
  path of the class. With ``method`` left out, a ``model`` that is a dotted path of identifiers
  (no ``/``, no URL) selects ``custom_class`` by itself. For this method vLLM sets
  ``prompt_lookup_min/max`` to 0 and takes the target model's config as the draft model config.
  ``SpeculativeConfig`` forbids unknown fields, so options reach the proposer through
  ``VllmConfig.additional_config``, vLLM's free-form dict (``--additional-config`` on the CLI).
- ``v1/spec_decode/custom_class_proposer.py``: ``create_custom_proposer(vllm_config)`` imports the
  module, takes the class, builds it with ``cls(vllm_config)`` (any exception becomes a
  RuntimeError naming the class) and checks that the object has a callable ``propose``.
- ``v1/worker/gpu_model_runner.py`` (the V1 GPU model runner) builds the drafter on the last
  pipeline-parallel rank, so with tensor parallelism every rank of that stage runs its own
  proposer (the memory-mapped stores share their pages). It calls ``load_model(model)`` when the
  drafter has one. After each step's bookkeeping has appended the accepted tokens, it calls
  ``drafter.propose(valid_sampled_token_ids, input_batch.num_tokens_no_spec,
  input_batch.token_ids_cpu, slot_mappings=...)`` (no ``num_speculative_tokens`` argument, unlike
  the ngram proposer), and only when every request of the batch still has room for K more tokens
  (``_input_fits_in_drafter``); on other steps it drafts nothing.
- ``v1/worker/gpu_input_batch.py``: ``token_ids_cpu`` is an int32 numpy view of a
  ``(max_num_reqs, max_model_len)`` CPU tensor and ``num_tokens_no_spec`` an int32 view of a
  ``(max_num_reqs,)`` one: row i holds the tokens of the request in slot i up to
  ``num_tokens_no_spec[i]`` (prompt and accepted output, this step's tokens included), and what
  lies beyond is stale. ``condense`` and ``swap_states`` move requests between rows.
  ``sampled_token_ids`` is a list with one list per active row, ``[]`` for a row whose tokens were
  discarded (a partial prefill chunk).
- The result, one token list per active row, is zipped with ``input_batch.req_ids``; the
  scheduler (``v1/core/sched/scheduler.py``) trims each list to the speculative tokens it
  schedules and ignores drafts for prefill chunks. Chains only: no tree is verified.
- ``config/vllm.py``: the V2 model runner does not support ``custom_class``, so vLLM falls back
  to the V1 runner (``VLLM_USE_V2_MODEL_RUNNER=1`` is an error), and async scheduling is turned
  off for this method (asking for it explicitly is an error).
"""

from .proposer import HierdraftProposer

__all__ = ["HierdraftProposer"]
