"""The `hierdraft` command line: `generate`, `build corpus|model` and `bench`.

Each subcommand lives with the code it drives (`cli_generate`, `cli_build`, `bench.cli_bench`);
this module only assembles the parser, so `hierdraft --help` stays fast (torch is imported
lazily by the subcommand that needs it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from hierdraft import __version__
    from hierdraft.bench.cli_bench import add_bench_parser
    from hierdraft.cli_build import add_build_parser
    from hierdraft.cli_generate import add_generate_parser

    parser = argparse.ArgumentParser(
        prog="hierdraft",
        description="Lossless speculative decoding with Hierarchy Drafting "
        "(context -> model -> corpus n-gram stores).",
    )
    parser.add_argument("--version", action="version", version=f"hierdraft {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    add_generate_parser(subparsers)
    add_build_parser(subparsers)
    add_bench_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"hierdraft {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)
