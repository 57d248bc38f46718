"""Building the model store (hierarchy level 2) from the target model's own generations.

The target model decodes a prompt set greedily through hierdraft's own loop
(:func:`hierdraft.decoding.generate`; plain decoding by default, optionally with a drafter: the
output is the same either way). Every finished generation is appended to a checkpoint next to
the output (``<out>.generations.jsonl``), so an interrupted build resumes where it stopped.
The n-grams of the generations are then counted into a ``ModelStore`` and saved atomically.

``merge=True`` adds generations for prompts not seen yet to an existing store: when the
checkpoint holds every generation the store was built from, the store is rebuilt from the
checkpoint (exact counts); otherwise (a store from elsewhere, or one whose checkpoint was lost)
the new generations are added to the loaded store online. Either way the saved metadata lists
every prompt the store now holds.

The build runs in four steps, one function each: open the checkpoint, choose the prompts,
generate (resumable), count and save.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _core
from ..prompts import PROMPT_TEMPLATE, token_ids
from ..questions import default_questions_path, load_questions
from .checkpoint import Checkpoint, checkpoint_path_for, prompt_key
from .errors import EmptyCorpusError
from .metadata import decode_metadata, encode_metadata, load_model_store
from .progress import BuildSummary, bar, say
from .sources import load_prompts
from .tokenize import vocab_size_of

__all__ = ["build_model_store", "default_prompt_template", "encode_store_prompt"]

# Prompt tokens kept with each checkpointed generation: the most any store can use (its
# max_ngram is at most ModelStore.MAX_NGRAM), so a checkpoint serves a rebuild with any setting.
CHECKPOINT_CONTEXT_TOKENS = _core.ModelStore.MAX_NGRAM

# The drafter behind ``drafter="context"``: a small tree, because every drafted token is one more
# row in the verification forward while context drafts of chat prompts are seldom accepted far.
CONTEXT_DRAFTER_SETTINGS: dict[str, Any] = {"order": ("context",), "budget": 8, "max_depth": 6}


def default_prompt_template() -> str:
    """The completion template of the bench (``Question: ...\\n\\nAnswer:``), so the store
    learns what the model writes in the format it is benchmarked and used with."""
    return PROMPT_TEMPLATE.replace("{question}", "{prompt}")


def encode_store_prompt(tokenizer: Any, prompt: str, template: str, chat_template: bool) -> list[int]:
    """Token ids of ``prompt`` as the store build feeds it to the model: in ``template`` (a
    string with ``{prompt}``), or as the user turn of the tokenizer's chat template."""
    text = prompt if chat_template else template.format(prompt=prompt)
    return token_ids(tokenizer, text, chat_template=chat_template)


def _model_identity(model: Any) -> tuple[str, str]:
    config = getattr(model, "config", None)
    name = str(getattr(config, "_name_or_path", "") or type(model).__name__)
    name = Path(name).name if os.sep in name else name
    dtype = str(getattr(model, "dtype", "")).removeprefix("torch.")
    return name, dtype


def _make_drafter(drafter: Any) -> Any:
    if drafter == "context":
        return _core.HierarchicalDrafter(**CONTEXT_DRAFTER_SETTINGS)
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
        is the default: on a CPU a many-token verification forward costs several one-token
        forwards, and context drafts of chat prompts are accepted too seldom to pay for it.
    on_generation: called with ``(index, tokens)`` after each generation is checkpointed.
    exclude_benchmark: skip any prompt that is also a turn of the Spec-Bench question file
        (when that file is found), so the store never learns the benchmark's own prompts.
    The remaining keyword arguments are the ModelStore's n-gram settings (core defaults when None;
        a merge keeps the existing store's).
    """
    from ..models import tokenizer_fingerprint

    out_path = _output_path(out, num_prompts, max_new_tokens, merge, overwrite)
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
    resumed = _open_checkpoint(ckpt, overwrite, progress)
    # Decided before generating: the new generations land in the checkpoint too.
    rebuild = existing is None or resumed_covers_store(ckpt, existing)
    choice = _choose_prompts(
        tokenizer, prompts, num_prompts, _prompt_keys_held(ckpt, existing), template=template,
        chat_template=chat_template, text_field=text_field, max_prompt_tokens=max_prompt_tokens,
        exclude_benchmark=exclude_benchmark, merge=merge,
    )
    run = _generate(model, choice.targets, ckpt, _make_drafter(drafter), max_new_tokens, eos_token_id,
                    progress, on_generation)

    t0 = time.perf_counter()
    settings = {"min_ngram": min_ngram, "max_ngram": max_ngram, "continuation_len": continuation_len,
                "top_k": top_k}
    new_keys = [key for key, _ in choice.targets]
    if rebuild:
        counted = _count_from_checkpoint(ckpt, existing, new_keys, settings, merge)
    else:
        counted = _count_online(ckpt, existing, new_keys)
    metadata = encode_metadata(
        "model",
        tokenizer,
        model=model_name,
        dtype=dtype,
        prompts=len(counted.keys),
        max_new_tokens=max_new_tokens,
        generated_tokens=counted.generated_tokens,
        source=str(prompts) if prompts is not None and not isinstance(prompts, list) else ("list" if prompts else "sharegpt"),
        prompt_keys=counted.keys,
    )
    vocab = max(vocab_size_of(tokenizer), int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0))
    store = counted.store(vocab, metadata)
    t_count = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.save(os.fspath(out_path))
    t_save = time.perf_counter() - t0

    summary = BuildSummary(kind="model store", path=str(out_path), documents=len(counted.keys),
                           tokens=counted.generated_tokens)
    summary.stage_seconds = {"generate": run.seconds, "count": t_count, "save": t_save}
    summary.extra = {
        "new generations": run.new_generations,
        "resumed": resumed if not merge else 0,
        "n-gram keys kept": int(store.num_keys),
    }
    if run.new_tokens:
        summary.extra["generation rate"] = f"{run.new_tokens / max(run.seconds, 1e-9):.1f} tokens/s"
    if choice.skipped_benchmark:
        summary.notes.append(f"skipped {choice.skipped_benchmark} prompts that are Spec-Bench questions")
    if choice.skipped_long:
        summary.notes.append(f"skipped {choice.skipped_long} prompts longer than {max_prompt_tokens} tokens")
    if counted.note:
        summary.notes.append(counted.note)
    summary.notes.append(f"generations checkpointed in {ckpt.path}")
    summary.finish(store, started, cpu_started)
    say(str(summary), progress)
    return summary


def _output_path(
    out: str | os.PathLike[str] | None, num_prompts: int, max_new_tokens: int, merge: bool, overwrite: bool
) -> Path:
    """The checked output path (its folder created)."""
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
    return out_path


def _open_checkpoint(ckpt: Checkpoint, overwrite: bool, progress: bool) -> int:
    """Loads the checkpoint's records (moving one of another build aside with ``overwrite``);
    returns how many were resumed."""
    if ckpt.exists() and ckpt.mismatch() and overwrite:
        say(f"checkpoint {ckpt.path} is from a different build; moving it to {ckpt.path.name}.old", progress)
        ckpt.start_fresh()
    resumed = ckpt.load()
    if resumed:
        say(f"resuming from {ckpt.path}: {resumed} generation(s) already done", progress)
    return resumed


def _stored_prompt_keys(store: Any) -> list[str]:
    """The prompt keys a store's metadata lists (empty for a store from elsewhere)."""
    keys = decode_metadata(getattr(store, "metadata", "") or "").get("prompt_keys", [])
    return [str(k) for k in keys] if isinstance(keys, list) else []


def _prompt_keys_held(ckpt: Checkpoint, existing: Any) -> set[str]:
    """Prompts a merge must not generate again: those of the store and of its checkpoint."""
    if existing is None:
        return set()
    return set(ckpt.records) | set(_stored_prompt_keys(existing))


# --- choose the prompts ---------------------------------------------------------------------


@dataclass
class _PromptChoice:
    targets: list[tuple[str, list[int]]]  # (prompt key, prompt ids), in source order
    skipped_long: int = 0
    skipped_benchmark: int = 0


def _choose_prompts(
    tokenizer: Any,
    prompts: str | os.PathLike[str] | list[str] | None,
    num_prompts: int,
    held: set[str],
    *,
    template: str,
    chat_template: bool,
    text_field: str,
    max_prompt_tokens: int,
    exclude_benchmark: bool,
    merge: bool,
) -> _PromptChoice:
    """The first ``num_prompts`` usable prompts of the source that are not ``held`` already."""
    choice = _PromptChoice(targets=[])
    banned = _benchmark_prompts() if exclude_benchmark else set()
    for prompt in load_prompts(prompts, text_field=text_field):
        if _normalize(prompt) in banned:
            choice.skipped_benchmark += 1
            continue
        ids = encode_store_prompt(tokenizer, prompt, template, chat_template)
        if not ids:
            continue
        if len(ids) > max_prompt_tokens:
            choice.skipped_long += 1
            continue
        key = prompt_key(ids)
        if key in held:
            continue  # already in the store: merge adds new prompts only
        choice.targets.append((key, ids))
        if len(choice.targets) >= num_prompts:
            break
    if not choice.targets:
        raise EmptyCorpusError(
            f"no usable prompts in {prompts if prompts is not None else 'sharegpt'!r}"
            + (f" ({choice.skipped_long} longer than max_prompt_tokens={max_prompt_tokens})" if choice.skipped_long else "")
            + (" that are not already in the store" if merge else "")
        )
    return choice


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


# --- generate (resumable) -------------------------------------------------------------------


@dataclass
class _GenerationRun:
    new_generations: int
    new_tokens: int
    seconds: float


def _generate(
    model: Any,
    targets: list[tuple[str, list[int]]],
    ckpt: Checkpoint,
    drafter: Any,
    max_new_tokens: int,
    eos_token_id: int | list[int] | None,
    progress: bool,
    on_generation: Callable[[int, list[int]], None] | None,
) -> _GenerationRun:
    """Generates every target the checkpoint does not hold yet, checkpointing each one."""
    from ..decoding import generate

    todo = [(i, key, ids) for i, (key, ids) in enumerate(targets) if key not in ckpt.records]
    new_tokens = 0
    started = time.perf_counter()
    with bar(progress, desc="generating", total=len(targets), initial=len(targets) - len(todo), unit="prompt") as pbar:
        for i, key, ids in todo:
            t0 = time.perf_counter()
            result = generate(model, ids, drafter, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id)
            tokens = [int(t) for t in result.tokens]
            ckpt.append(
                {
                    "key": key,
                    "prompt_tokens": len(ids),
                    "context": ids[-CHECKPOINT_CONTEXT_TOKENS:],
                    "tokens": tokens,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "steps": int(result.steps),
                }
            )
            new_tokens += len(tokens)
            elapsed = time.perf_counter() - started
            pbar.set_postfix_str(f"{new_tokens:,} tokens, {new_tokens / max(elapsed, 1e-9):.1f} tok/s", refresh=False)
            pbar.update(1)
            if on_generation is not None:
                on_generation(i, tokens)
    return _GenerationRun(len(todo), new_tokens, time.perf_counter() - started)


# --- count n-grams --------------------------------------------------------------------------


@dataclass
class _Counted:
    """What the store will hold: every prompt key and the number of generated tokens behind it,
    and how to make it (``store(vocab, metadata)``)."""

    keys: list[str]
    generated_tokens: int
    store: Callable[[int, str], Any]
    note: str | None = None


def _count_from_checkpoint(
    ckpt: Checkpoint, existing: Any, new_keys: list[str], settings: dict[str, int | None], merge: bool
) -> _Counted:
    """A store counted from the checkpoint: all of its generations for a merge, else those of
    this build's prompts. Settings left as None are the existing store's (merge) or the core's."""
    keys = list(ckpt.order) if merge else list(new_keys)
    given = {k: v for k, v in settings.items() if v is not None}
    if existing is not None and not given:
        given = {name: getattr(existing, name) for name in settings}  # a merge keeps the settings
    # The store's max_ngram decides how much prompt each sequence keeps: given, else the core's.
    max_ngram = int(given["max_ngram"]) if "max_ngram" in given else _core.ModelStore().max_ngram
    sequences = [_sequence(ckpt.records[key], max_ngram) for key in keys]

    def build(vocab: int, metadata: str) -> Any:
        return _core.ModelStore.build(sequences, vocab_size=vocab, metadata=metadata, **given)

    total = sum(len(ckpt.records[k]["tokens"]) for k in keys)
    return _Counted(keys=keys, generated_tokens=total, store=build)


def _count_online(ckpt: Checkpoint, existing: Any, new_keys: list[str]) -> _Counted:
    """The existing store (settings kept) with the new generations added online."""
    for key in new_keys:
        existing.add(_sequence(ckpt.records[key], existing.max_ngram))
    before = int(decode_metadata(existing.metadata or "").get("generated_tokens", 0))
    total = before + sum(len(ckpt.records[k]["tokens"]) for k in new_keys)

    def with_metadata(vocab: int, metadata: str) -> Any:
        existing.set_metadata(metadata)
        return existing

    return _Counted(
        keys=_stored_prompt_keys(existing) + list(new_keys),
        generated_tokens=total,
        store=with_metadata,
        note="merged online into a store without a generation checkpoint",
    )


def resumed_covers_store(ckpt: Checkpoint, store: Any) -> bool:
    """Whether the checkpoint holds every generation the store was built from, so the store can
    be rebuilt from it exactly (rather than the store coming from elsewhere, or holding
    generations that only it still has)."""
    if not ckpt.exists():
        return False
    info = decode_metadata(getattr(store, "metadata", "") or "")
    if isinstance(info.get("prompt_keys"), list):
        return set(_stored_prompt_keys(store)) <= set(ckpt.records)
    # A store whose metadata lists no prompt keys: only its prompt count can be compared.
    built_from = int(info.get("prompts", -1))
    return built_from >= 0 and len(ckpt.records) >= built_from


def _sequence(record: dict[str, Any], max_ngram: int) -> list[int]:
    """Tokens counted for one generation: the last ``max_ngram`` prompt tokens (so the store
    learns how the model starts an answer after the template) followed by the generation."""
    context = [int(t) for t in record.get("context", [])][-max_ngram:] if max_ngram > 0 else []
    return context + list(record["tokens"])


def iter_sequences(records: Iterable[dict[str, Any]], max_ngram: int) -> Iterable[list[int]]:
    return (_sequence(r, max_ngram) for r in records)
