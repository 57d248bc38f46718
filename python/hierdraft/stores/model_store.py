"""Building the model store (hierarchy level 2) from the target model's own generations.

The target model decodes a prompt set greedily through hierdraft's own loop
(:func:`hierdraft.decoding.generate`; plain decoding by default, optionally with a drafter: the
output is the same either way). Every finished generation is appended to a checkpoint next to
the output (``<out>.generations.jsonl``), so an interrupted build resumes where it stopped.
The n-grams of the generations are then counted into a ``ModelStore`` and saved atomically.

``merge=True`` adds generations for prompts not seen yet to an existing store: with its
checkpoint the store is rebuilt from all generations (exact counts); without one the new
generations are added to the loaded store online.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..prompts import PROMPT_TEMPLATE
from ..questions import default_questions_path, load_questions
from .checkpoint import Checkpoint, checkpoint_path_for, prompt_key
from .errors import EmptyCorpusError
from .metadata import decode_metadata, encode_metadata, load_model_store
from .progress import BuildSummary, bar, say
from .sources import load_prompts
from .tokenize import vocab_size_of

__all__ = ["build_model_store", "default_prompt_template", "encode_store_prompt"]


def default_prompt_template() -> str:
    """The completion template of the bench (``Question: ...\\n\\nAnswer:``), so the store
    learns what the model writes in the format it is benchmarked and used with."""
    return PROMPT_TEMPLATE.replace("{question}", "{prompt}")


def encode_store_prompt(tokenizer: Any, prompt: str, template: str, chat_template: bool) -> list[int]:
    if chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
    else:
        ids = tokenizer.encode(template.format(prompt=prompt))
    if hasattr(ids, "ids"):  # tokenizers.Encoding
        ids = ids.ids
    return [int(t) for t in ids]


def _model_identity(model: Any) -> tuple[str, str]:
    config = getattr(model, "config", None)
    name = str(getattr(config, "_name_or_path", "") or type(model).__name__)
    name = Path(name).name if os.sep in name else name
    dtype = str(getattr(model, "dtype", "")).removeprefix("torch.")
    return name, dtype


def _make_drafter(drafter: Any) -> Any:
    if drafter == "context":
        from .. import _core

        return _core.HierarchicalDrafter(order=("context",), budget=8, max_depth=6)
    if drafter in (None, "none"):
        return None
    return drafter


def build_model_store(
    model: Any,
    tokenizer: Any,
    prompts: str | os.PathLike[str] | list[str] | None = None,
    num_prompts: int = 32,
    max_new_tokens: int = 128,
    out: str | os.PathLike[str] | None = None,
    *,
    merge: bool = False,
    overwrite: bool = False,
    drafter: Any = None,
    max_prompt_tokens: int = 256,
    template: str | None = None,
    chat_template: bool = False,
    eos_token_id: int | list[int] | None = None,
    text_field: str = "text",
    min_ngram: int | None = None,
    max_ngram: int | None = None,
    continuation_len: int | None = None,
    top_k: int | None = None,
    progress: bool = True,
    on_generation: Callable[[int, list[int]], None] | None = None,
    exclude_benchmark: bool = True,
) -> BuildSummary:
    """Generate with ``model`` on ``num_prompts`` prompts and write a ModelStore to ``out``.

    prompts: ``None``/``"sharegpt"`` (first user turns of the ShareGPT package), a file or
        folder (see :func:`hierdraft.stores.sources.load_prompts`) or a list of strings.
        Prompts longer than ``max_prompt_tokens`` tokens are skipped.
    merge: add generations for ``num_prompts`` prompts that are not in the store yet.
    overwrite: replace an existing store at ``out`` (otherwise an existing store is an error
        unless ``merge``); an incompatible checkpoint is moved aside to ``*.old``.
    drafter: ``None`` (plain greedy decoding through hierdraft's loop), ``"context"`` (a
        context-only HierarchicalDrafter) or any drafter object; the output is the same. ``None``
        is the default because it measured fastest here: on the 2-core AVX2 machine a 16-token
        forward costs ~3x a 1-token one and context drafts on ShareGPT prompts accept only
        ~1.1-1.4 tokens per step (4 prompts x 48 tokens: plain 94 s, context budget 8 133 s).
    on_generation: called with ``(index, tokens)`` after each generation is checkpointed.
    exclude_benchmark: skip any prompt that is also a turn of the Spec-Bench question file
        (when that file is found), so the store never learns the benchmark's own prompts.
    The remaining keyword arguments are the ModelStore's n-gram settings (core defaults when None).
    """
    from .. import _core
    from ..decoding import generate
    from ..models import tokenizer_fingerprint

    if out is None:
        raise ValueError("build_model_store needs an output path (out=...)")
    if num_prompts <= 0:
        raise ValueError(f"num_prompts must be positive, got {num_prompts}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    out_path = Path(os.fspath(out)).expanduser()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.is_dir():
        raise IsADirectoryError(f"output path is a folder: {out_path}")
    if out_path.exists() and not (merge or overwrite):
        raise FileExistsError(
            f"model store {out_path} already exists: pass --merge to add generations to it "
            f"or --overwrite to rebuild it"
        )
    existing = load_model_store(out_path, tokenizer) if (merge and out_path.exists()) else None
    template = template if template is not None else default_prompt_template()
    model_name, dtype = _model_identity(model)
    started = time.perf_counter()
    cpu_started = time.process_time()

    ckpt = Checkpoint(
        checkpoint_path_for(out_path),
        {
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "model": model_name,
            "dtype": dtype,
            "max_new_tokens": max_new_tokens,
            "template": "<chat template>" if chat_template else template,
        },
    )
    if ckpt.exists() and ckpt.mismatch() and overwrite:
        say(f"checkpoint {ckpt.path} is from a different build; moving it to {ckpt.path.name}.old", progress)
        ckpt.start_fresh()
    resumed = ckpt.load()
    if resumed:
        say(f"resuming from {ckpt.path}: {resumed} generation(s) already done", progress)
    rebuild_from_checkpoint = existing is None or resumed_covers_store(ckpt, existing)
    in_store: set[str] = set(ckpt.records) if existing is not None else set()
    if existing is not None:
        in_store |= set(decode_metadata(existing.metadata or "").get("prompt_keys", []))

    # --- choose the prompts -------------------------------------------------------------
    targets: list[tuple[str, list[int]]] = []
    skipped_long = 0
    banned = _benchmark_prompts() if exclude_benchmark else set()
    skipped_bench = 0
    for prompt in load_prompts(prompts, text_field=text_field):
        if _normalize(prompt) in banned:
            skipped_bench += 1
            continue
        ids = encode_store_prompt(tokenizer, prompt, template, chat_template)
        if not ids:
            continue
        if len(ids) > max_prompt_tokens:
            skipped_long += 1
            continue
        key = prompt_key(ids)
        if key in in_store:
            continue  # already in the store: merge adds new prompts only
        targets.append((key, ids))
        if len(targets) >= num_prompts:
            break
    if not targets:
        raise EmptyCorpusError(
            f"no usable prompts in {prompts if prompts is not None else 'sharegpt'!r}"
            + (f" ({skipped_long} longer than max_prompt_tokens={max_prompt_tokens})" if skipped_long else "")
            + (" that are not already in the store" if merge else "")
        )

    # --- generate (resumable) -----------------------------------------------------------
    todo = [(i, key, ids) for i, (key, ids) in enumerate(targets) if key not in ckpt.records]
    run_drafter = _make_drafter(drafter)
    new_tokens = 0
    gen_started = time.perf_counter()
    with bar(progress, desc="generating", total=len(targets), initial=len(targets) - len(todo), unit="prompt") as pbar:
        for i, key, ids in todo:
            t0 = time.perf_counter()
            result = generate(model, ids, run_drafter, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)
            tokens = [int(t) for t in result.tokens]
            ckpt.append(
                {
                    "key": key,
                    "prompt_tokens": len(ids),
                    "context": ids[-8:],
                    "tokens": tokens,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "steps": int(result.steps),
                }
            )
            new_tokens += len(tokens)
            elapsed = time.perf_counter() - gen_started
            pbar.set_postfix_str(f"{new_tokens:,} tokens, {new_tokens / max(elapsed, 1e-9):.1f} tok/s", refresh=False)
            pbar.update(1)
            if on_generation is not None:
                on_generation(i, tokens)
    t_generate = time.perf_counter() - gen_started

    # --- count n-grams and save ---------------------------------------------------------
    ngram_kwargs = {
        k: v
        for k, v in dict(
            min_ngram=min_ngram, max_ngram=max_ngram, continuation_len=continuation_len, top_k=top_k
        ).items()
        if v is not None
    }
    t0 = time.perf_counter()
    if not rebuild_from_checkpoint and existing is not None:
        # A store from elsewhere: add the new generations online, keep its settings.
        keys = [key for key, _ in targets]
        store = existing
        for key in keys:
            store.add(_sequence(ckpt.records[key], store.max_ngram))
        old_keys = list(decode_metadata(existing.metadata or "").get("prompt_keys", []))
        keys_used = old_keys + keys
        note = "merged online into a store without a generation checkpoint"
    else:
        keys_used = list(ckpt.order) if merge else [key for key, _ in targets]
        max_n = max_ngram if max_ngram is not None else (existing.max_ngram if existing is not None else 3)
        sequences = [_sequence(ckpt.records[key], max_n) for key in keys_used]
        if existing is not None and not ngram_kwargs:
            ngram_kwargs = dict(
                min_ngram=existing.min_ngram,
                max_ngram=existing.max_ngram,
                continuation_len=existing.continuation_len,
                top_k=existing.top_k,
            )
        note = None
        store = None
    old_info = decode_metadata(existing.metadata or "") if existing is not None else {}
    if rebuild_from_checkpoint:
        total_generated = sum(len(ckpt.records[k]["tokens"]) for k in keys_used)
    else:
        total_generated = int(old_info.get("generated_tokens", 0)) + sum(
            len(ckpt.records[k]["tokens"]) for k, _ in targets
        )
    metadata = encode_metadata(
        "model",
        tokenizer,
        model=model_name,
        dtype=dtype,
        prompts=len(keys_used),
        max_new_tokens=max_new_tokens,
        generated_tokens=total_generated,
        source=str(prompts) if prompts is not None and not isinstance(prompts, list) else ("list" if prompts else "sharegpt"),
        prompt_keys=keys_used,
    )
    vocab = max(vocab_size_of(tokenizer), int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0))
    if store is None:
        store = _core.ModelStore.build(sequences, vocab_size=vocab, metadata=metadata, **ngram_kwargs)
    else:
        store = _with_metadata(store, metadata)
    t_count = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.save(os.fspath(out_path))
    t_save = time.perf_counter() - t0

    summary = BuildSummary(kind="model store", path=str(out_path), documents=len(keys_used), tokens=total_generated)
    summary.stage_seconds = {"generate": t_generate, "count": t_count, "save": t_save}
    summary.extra = {
        "new generations": len(todo),
        "resumed": resumed if not merge else 0,
        "n-gram keys kept": int(store.num_keys),
    }
    if new_tokens:
        summary.extra["generation rate"] = f"{new_tokens / max(t_generate, 1e-9):.1f} tokens/s"
    if skipped_bench:
        summary.notes.append(f"skipped {skipped_bench} prompts that are Spec-Bench questions")
    if skipped_long:
        summary.notes.append(f"skipped {skipped_long} prompts longer than {max_prompt_tokens} tokens")
    if note:
        summary.notes.append(note)
    summary.notes.append(f"generations checkpointed in {ckpt.path}")
    summary.finish(store, started, cpu_started)
    say(str(summary), progress)
    return summary


def _normalize(text: str) -> str:
    return " ".join(text.split()).lower()


def _benchmark_prompts() -> set[str]:
    """Every turn of the default Spec-Bench question file (empty when there is none)."""
    path = default_questions_path()
    if path is None:
        return set()
    try:
        questions = load_questions(path)
    except (OSError, ValueError):
        return set()
    return {_normalize(turn) for q in questions for turn in q.turns}


def _with_metadata(store: Any, metadata: str) -> Any:
    """The store with new metadata (the metadata is fixed at build time in the core API)."""
    setter = getattr(store, "set_metadata", None)
    if setter is not None:
        setter(metadata)
    return store


def resumed_covers_store(ckpt: Checkpoint, store: Any) -> bool:
    """Whether the checkpoint holds the generations the store was built from (so the store
    can be rebuilt from it exactly) rather than the store coming from elsewhere."""
    from .metadata import decode_metadata

    info = decode_metadata(getattr(store, "metadata", "") or "")
    built_from = int(info.get("prompts", -1))
    return built_from >= 0 and len(ckpt.records) >= built_from and ckpt.exists()


def _sequence(record: dict[str, Any], max_ngram: int) -> list[int]:
    """Tokens counted for one generation: the last ``max_ngram`` prompt tokens (so the store
    learns how the model starts an answer after the template) followed by the generation."""
    context = [int(t) for t in record.get("context", [])][-max_ngram:] if max_ngram > 0 else []
    return context + list(record["tokens"])


def iter_sequences(records: Iterable[dict[str, Any]], max_ngram: int) -> Iterable[list[int]]:
    return (_sequence(r, max_ngram) for r in records)
