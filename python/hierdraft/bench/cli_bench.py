"""`hierdraft bench`: the end-to-end benchmark on Spec-Bench-style prompts.

Runs ar, hf-ar, hf-pld, context, model, corpus and hd in one process on the same prompts, with
the peers llama.cpp and llama.cpp-pld (llama.cpp on the same GGUF file, via llama-cpp-python)
(interleaved, method order rotated per prompt, one untimed warm-up run each), checks that every
greedy output of hierdraft's and transformers' methods equals ar's (sampled: every output of
hierdraft's methods, whose draws depend only on the seed and the position), and writes results.json,
report.md and speedup.png into --out. The peers have their own numerics: their outputs are
compared with llama.cpp's plain output and reported, never counted as mismatches. They need a
GGUF model (the default is one); with another model they are skipped, and the report says so.

Exit status: 0 when all outputs match; 3 when some method's output differs from ar's where it
must not (each mismatch is listed); 1 on bad input (e.g. a malformed question
file).

Quick by default: 2 prompts per category (26 for Spec-Bench), 64 new tokens each. --full runs
every question with 256 new tokens (unless --max-new-tokens says otherwise).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..numerics import NUMERICS, resolve_numerics
from ..prompts import PROMPT_TEMPLATE, encode_prompt, format_prompt
from ..questions import (
    Question,
    QuestionFileError,
    default_questions_path,
    interleave_categories,
    load_questions,
    select_per_category,
)
from .llama_cpp_methods import PeerModel, build_peer_methods, context_size, resolve_peer_model
from .methods import (
    ALL_METHODS,
    DEFAULT_PLD_NGRAM,
    DEFAULT_PLD_TOKENS,
    FP32_METHOD,
    NUMERICS_METHODS,
    PEER_METHODS,
    PEER_REFERENCE,
    TORCH_METHODS,
    DecodeSettings,
    ForwardCounter,
    Method,
    build_methods,
)
from .report import SPEEDUP_VS_PEER, write_report
from .runner import BenchPrompt, BenchRun, run_bench

QUICK_LIMIT_PER_CATEGORY = 2
QUICK_MAX_NEW_TOKENS = 64
FULL_MAX_NEW_TOKENS = 256
EXIT_MISMATCH = 3
EXIT_INTERRUPTED = 130
# A fixed text that is not a benchmark prompt, used to warm every method up before timing.
WARMUP_QUESTION = "Describe in a few sentences how a bicycle works and why it stays upright."


def _methods_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ALL_METHODS)}"
        )
    return list(dict.fromkeys(names))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` sub-command on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark hierdraft against autoregressive decoding and prompt lookup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--questions", type=Path, default=None,
                   help="Spec-Bench-style JSONL (question_id, category, turns); default: "
                        "../shared/specbench/question.jsonl when present")
    p.add_argument("--limit-per-category", type=_positive_int, default=None,
                   help=f"questions per category (default {QUICK_LIMIT_PER_CATEGORY}; all with --full)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=None,
                   help=f"tokens to generate per prompt (default {QUICK_MAX_NEW_TOKENS}; "
                        f"{FULL_MAX_NEW_TOKENS} with --full)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy (default; outputs are checked against ar); > 0 samples")
    p.add_argument("--model", default=None,
                   help="local model path or name (default: the embedded Gemma 3 270M)")
    p.add_argument("--methods", type=_methods_arg, default=list(ALL_METHODS),
                   help=f"comma-separated subset of {','.join(ALL_METHODS)} (default: all; "
                        "ar is always added as the baseline)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="output directory (default ./bench-results)")
    p.add_argument("--full", action="store_true", help="every question, longer generations")
    p.add_argument("--numerics", choices=NUMERICS, default=None,
                   help="numeric mode of a quantized model's layers: fp32 (default) or int8 "
                   "(int8 activations and integer dot products, as llama.cpp); named in the report")
    p.add_argument("--threads", type=_positive_int, default=2,
                   help="CPU threads of torch and of llama.cpp (default 2)")
    p.add_argument("--budget", type=_positive_int, default=16, help="draft tree nodes per step (default 16)")
    p.add_argument("--model-store", type=Path, default=None, metavar="PATH",
                   help="model store (.hdms) for the model level (default: the cached default "
                        "stores of the model's tokenizer, built on first use)")
    p.add_argument("--corpus-index", type=Path, default=None, metavar="PATH",
                   help="corpus index (.hdci) for the corpus level (default: as --model-store)")
    p.add_argument("--fixed-budget", action="store_true",
                   help="verify every drafted node (default: each drafting method trims its trees with "
                   "hierdraft.AdaptiveDrafter)")
    p.add_argument("--pld-tokens", type=_positive_int, default=DEFAULT_PLD_TOKENS,
                   help="draft length of prompt lookup: prompt_lookup_num_tokens of hf-pld and "
                        f"num_pred_tokens of llama.cpp-pld (default {DEFAULT_PLD_TOKENS})")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop starting new prompts after this many seconds and report the "
                        "prompts done (Ctrl-C does the same)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_bench_command)
    return p


def _resolve_questions(args: argparse.Namespace) -> Path:
    if args.questions is not None:
        return Path(args.questions)
    found = default_questions_path()
    if found is None:
        raise QuestionFileError(
            "no question file given and ../shared/specbench/question.jsonl not found; "
            "pass --questions PATH (Spec-Bench JSONL: question_id, category, turns)"
        )
    return found


def _eos_ids(model: Any, tokenizer: Any) -> int | list[int] | None:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = [int(e) for e in eos]
        return eos[0] if len(eos) == 1 else eos
    return int(eos) if eos is not None else None


def _model_info(model: Any, name: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"name": name or getattr(model, "name_or_path", None) or "default"}
    cfg = getattr(model, "config", None)
    if cfg is not None:
        info["architecture"] = type(model).__name__
        info["vocab_size"] = getattr(cfg, "vocab_size", None)
        info["name"] = name or getattr(cfg, "_name_or_path", None) or info["name"]
    try:
        params = list(model.parameters())
        info["parameters"] = sum(p.numel() for p in params)
        info["dtype"] = str(params[0].dtype).replace("torch.", "") if params else None
    except (AttributeError, TypeError):
        pass
    if hasattr(model, "modules"):
        from ..quant_modules import model_numerics, weight_formats

        info["weights"] = weight_formats(model) or "float"
        info["numerics"] = model_numerics(model) or "float"
    return info


def _command_line() -> str | None:
    argv = sys.argv[1:]
    return shlex.join(["hierdraft", *argv]) if argv[:1] == ["bench"] else None


@dataclass(frozen=True)
class _Plan:
    """What a bench run will do, read from the arguments and the question file."""

    questions: Path
    selected: list[Question]
    limit: int | None
    max_new_tokens: int
    names: list[str]  # methods requested, ar first


def _plan(args: argparse.Namespace) -> _Plan:
    path = _resolve_questions(args)
    questions = load_questions(path)
    limit = args.limit_per_category
    if limit is None and not args.full:
        limit = QUICK_LIMIT_PER_CATEGORY
    selected = interleave_categories(select_per_category(questions, limit))
    max_new = args.max_new_tokens or (FULL_MAX_NEW_TOKENS if args.full else QUICK_MAX_NEW_TOKENS)
    if args.temperature < 0:
        raise ValueError("--temperature must be >= 0")
    return _Plan(path, selected, limit, max_new, list(dict.fromkeys(["ar", *_numerics_methods(args)])))


def _numerics_methods(args: argparse.Namespace) -> list[str]:
    """The requested methods; `ar-fp32` only beside the int8 mode (dropped from the default list
    otherwise, refused when asked for by name)."""
    if resolve_numerics(args.numerics) == "int8" or FP32_METHOD not in args.methods:
        return list(args.methods)
    if list(args.methods) != list(ALL_METHODS):
        raise ValueError(f"{FP32_METHOD} compares the int8 numeric mode with fp32: add --numerics int8")
    return [m for m in args.methods if m != FP32_METHOD]


def _build_all_methods(
    args: argparse.Namespace,
    plan: _Plan,
    model: Any,
    settings: DecodeSettings,
    prompts: list[BenchPrompt],
    warmup_ids: list[int],
    *,
    drafter_factory: Callable[[tuple[str, ...]], Any] | None,
    generate_fn: Callable[..., Any] | None,
    peer_model: PeerModel | None,
) -> tuple[dict[str, Method], ForwardCounter, dict[str, Any] | None]:
    """The methods in run order (ar first), the forward counter, and what the report says
    about the llama.cpp peers (None when none was asked for)."""
    torch_names = [n for n in plan.names if n in TORCH_METHODS or n in NUMERICS_METHODS]
    peer_names = [n for n in plan.names if n in PEER_METHODS]
    peer_info: dict[str, Any] | None = None
    peers: dict[str, Method] = {}
    if peer_names:
        longest = max(len(ids) for ids in [warmup_ids, *(p.ids for p in prompts)])
        build = build_peer_methods(
            peer_names,
            peer_model or PeerModel(None, "no GGUF file was given for the llama.cpp peers"),
            settings,
            threads=args.threads,
            n_ctx=context_size(longest, plan.max_new_tokens),
            pld_tokens=args.pld_tokens,
            check_prompt=(format_prompt(WARMUP_QUESTION), warmup_ids),
        )
        peers = dict(build.methods)
        peer_info = build.info if build.skip_reason is None else {"skipped": build.skip_reason}
    own, counter = build_methods(
        torch_names, model, settings, drafter_factory=drafter_factory,
        pld_tokens=args.pld_tokens, generate_fn=generate_fn,
    )
    methods = {n: own[n] if n in own else peers[n] for n in plan.names if n in own or n in peers}
    return methods, counter, peer_info


def _bench_settings(
    args: argparse.Namespace,
    plan: _Plan,
    settings: DecodeSettings,
    run: BenchRun,
    *,
    prompts_selected: int,
    wall: float,
    peer_info: dict[str, Any] | None,
    stores: Callable[[], dict[str, Any]] | None,
) -> dict[str, Any]:
    return {
        "questions": str(plan.questions),
        "prompts": len(run.prompts),
        "prompts_selected": prompts_selected,
        "interrupted": run.interrupted,
        "categories": len({p.category for p in run.prompts}),
        "limit_per_category": plan.limit,
        "full": bool(args.full),
        "max_new_tokens": plan.max_new_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "threads": args.threads,
        "budget": args.budget,
        "adaptive_trees": not getattr(args, "fixed_budget", False),
        "pld_tokens": args.pld_tokens,
        "pld_max_matching_ngram_size": DEFAULT_PLD_NGRAM,
        "methods": run.methods,
        "methods_requested": plan.names,
        "eos_token_id": settings.eos_token_id,
        "prompt_template": PROMPT_TEMPLATE,
        "order": "interleaved per prompt, method order rotated by one each prompt, one warm-up run each",
        "wall_time_s": wall,
        "command": _command_line(),
        "llama_cpp": peer_info,
        # read after the run: the factory may have built the default stores on first use
        "stores": stores() if stores is not None else None,
    }


def _print_summary(result: dict[str, Any], run: BenchRun, args: argparse.Namespace,
                   prompts_selected: int, wall: float, out_stream: Any) -> None:
    summary = result["summary"]
    print(f"wrote {Path(args.out) / 'results.json'}, report.md, speedup.png "
          f"({len(run.prompts)} prompts, {wall:.0f} s)", file=out_stream)
    if run.interrupted:
        print(f"stopped early: {len(run.prompts)} of {prompts_selected} prompts done", file=out_stream)
    skipped = (result["settings"].get("llama_cpp") or {}).get("skipped")
    if skipped:
        print(f"llama.cpp peers skipped: {skipped}", file=out_stream)
    for m in run.methods:
        s = summary["overall"][m]
        sp = f"{s['speedup']:.2f}x" if s["speedup"] else "-"
        tps = f"{s['tokens_per_second']:.1f}" if s["tokens_per_second"] else "-"
        vs_peer = s[SPEEDUP_VS_PEER]
        peer = f"  vs {PEER_REFERENCE} {vs_peer:.2f}x" if vs_peer else ""
        print(f"  {m:13s} {tps:>7s} tokens/s  speedup {sp}{peer}", file=out_stream)


def _exit_status(run: BenchRun, args: argparse.Namespace) -> int:
    if run.mismatches:
        print(f"error: {len(run.mismatches)} output(s) differ from ar:", file=sys.stderr)
        for mm in run.mismatches:
            print(f"  {mm.describe()}", file=sys.stderr)
        return EXIT_MISMATCH
    return EXIT_INTERRUPTED if run.interrupted and getattr(args, "time_limit", None) is None else 0


def execute(
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    drafter_factory: Callable[[tuple[str, ...]], Any] | None,
    *,
    model_name: str | None = None,
    generate_fn: Callable[..., Any] | None = None,
    out_stream: Any = None,
    stores: Callable[[], dict[str, Any]] | None = None,
    peer_model: PeerModel | None = None,
) -> int:
    """Run the bench on an already loaded model; returns the exit status.

    ``drafter_factory(order)`` builds a fresh drafter for a level order; it is only called
    for the drafting methods that were asked for. ``peer_model`` is the GGUF file the llama.cpp
    peers decode (:func:`.llama_cpp_methods.resolve_peer_model`); without one they are skipped,
    and the report says why.
    """
    import torch

    out_stream = out_stream if out_stream is not None else sys.stdout
    plan = _plan(args)
    torch.set_num_threads(args.threads)
    settings = DecodeSettings(
        max_new_tokens=plan.max_new_tokens,
        temperature=args.temperature,
        eos_token_id=_eos_ids(model, tokenizer),
        seed=args.seed,
    )
    prompts = [
        BenchPrompt(q.question_id, q.category, encode_prompt(tokenizer, format_prompt(q)))
        for q in plan.selected
    ]
    warmup_ids = encode_prompt(tokenizer, format_prompt(WARMUP_QUESTION))
    methods, counter, peer_info = _build_all_methods(
        args, plan, model, settings, prompts, warmup_ids, drafter_factory=drafter_factory,
        generate_fn=generate_fn, peer_model=peer_model,
    )
    t0 = time.perf_counter()
    try:
        run = run_bench(methods, prompts, warmup_ids=warmup_ids, sampled=args.temperature > 0.0,
                        progress=not args.no_progress, stop_after_s=getattr(args, "time_limit", None))
    finally:
        counter.close()
    wall = time.perf_counter() - t0

    if not run.prompts:
        print("interrupted before any prompt finished: nothing to report", file=sys.stderr)
        return EXIT_INTERRUPTED
    bench_settings = _bench_settings(args, plan, settings, run, prompts_selected=len(prompts),
                                     wall=wall, peer_info=peer_info, stores=stores)
    result = write_report(args.out, run, settings=bench_settings,
                          model=_model_info(model, model_name), threads=args.threads)
    _print_summary(result, run, args, len(prompts), wall, out_stream)
    return _exit_status(run, args)


def _drafter_factory(args: argparse.Namespace, tokenizer: Any, model: Any) -> Callable[[tuple[str, ...]], Any]:
    """Drafters over the stores given on the command line, else over the default stores.

    Every call loads the stores afresh (memory-mapped, so cheap): each method gets its own
    instances, and online learning never crosses from one method to another.
    """
    from hierdraft import HierarchicalDrafter
    from hierdraft.adaptive import AdaptiveDrafter
    from hierdraft.stores import default_drafter, load_corpus_index, load_model_store

    explicit = args.model_store is not None or args.corpus_index is not None

    def build(order: tuple[str, ...]) -> Any:
        if not explicit:
            return default_drafter(tokenizer, model=model, budget=args.budget, order=order)
        ms = load_model_store(args.model_store, tokenizer) if args.model_store else None
        ci = load_corpus_index(args.corpus_index, tokenizer) if args.corpus_index else None
        return HierarchicalDrafter(model_store=ms, corpus_index=ci, order=order, budget=args.budget)

    def factory(order: tuple[str, ...]) -> Any:
        drafter = build(order)
        return drafter if getattr(args, "fixed_budget", False) else AdaptiveDrafter(drafter)

    return factory


def _stores_info(args: argparse.Namespace, tokenizer: Any) -> dict[str, str | None]:
    if args.model_store is not None or args.corpus_index is not None:
        return {"model_store": str(args.model_store) if args.model_store else None,
                "corpus_index": str(args.corpus_index) if args.corpus_index else None}
    try:
        from hierdraft.stores import default_store_paths

        small_ms, small_ci = default_store_paths(tokenizer, full=False)
        full_ms, full_ci = default_store_paths(tokenizer, full=True)
        pick = lambda full, small: str(full if full.is_file() else small if small.is_file() else None)  # noqa: E731
        return {"model_store": pick(full_ms, small_ms), "corpus_index": pick(full_ci, small_ci)}
    except Exception:  # noqa: BLE001 - informational only
        return {"model_store": "default", "corpus_index": "default"}


def run_bench_command(args: argparse.Namespace) -> int:
    """Entry point of ``hierdraft bench``: load the model and stores, then :func:`execute`."""
    import torch

    from hierdraft.models import load_model

    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    torch.set_num_threads(args.threads)
    # validate the question file before the (slow) model load
    load_questions(_resolve_questions(args))
    model, tokenizer = load_model(args.model, numerics=args.numerics)
    factory = None
    if any(m in ("context", "model", "corpus", "hd") for m in args.methods):
        factory = _drafter_factory(args, tokenizer, model)
    name = args.model or getattr(tokenizer, "name_or_path", None)
    peer_model = resolve_peer_model(args.model) if any(m in PEER_METHODS for m in args.methods) else None
    return execute(args, model, tokenizer, factory, model_name=name,
                   stores=lambda: _stores_info(args, tokenizer), peer_model=peer_model)
