"""docs/architecture.md lists every module of the tree, and nothing that is gone.

The Layout block is read as a tree: a line's name (or comma-separated names) sits below the
nearest less-indented line that names a folder (ending in ``/``). Every ``.rs`` file of the Rust
crates' ``src/`` folders and every ``.py`` / ``.pyi`` file of ``python/hierdraft`` must appear in
it, and every file it names under those folders must exist.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
MODULE_ROOTS = {
    "rust/core/src/": ("*.rs",),
    "rust/kernels/src/": ("*.rs",),
    "rust/python/src/": ("*.rs",),
    "python/hierdraft/": ("*.py", "*.pyi"),
}


def _layout_lines() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "docs/architecture.md: no code block under ## Layout"
    return [line for line in block.group(1).splitlines() if line.strip()]


def documented_paths() -> set[str]:
    """Every path the Layout block names (folders end in '/')."""
    paths: set[str] = set()
    parents: list[tuple[int, str]] = []  # (indent, folder path) of the enclosing folders
    for line in _layout_lines():
        indent = len(line) - len(line.lstrip(" "))
        # Names end at the first run of two spaces (then comes the description).
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        base = parents[-1][1] if parents else ""
        for name in (n.strip() for n in names.split(",")):
            path = base + name
            paths.add(path)
            if name.endswith("/"):
                parents.append((indent, path))
    return paths


def module_files() -> set[str]:
    found: set[str] = set()
    for root, patterns in MODULE_ROOTS.items():
        for pattern in patterns:
            for path in (ROOT / root).rglob(pattern):
                if "__pycache__" not in path.parts:
                    found.add(path.relative_to(ROOT).as_posix())
    return found


def test_every_module_is_in_the_layout() -> None:
    missing = sorted(module_files() - documented_paths())
    assert not missing, f"modules missing from docs/architecture.md's Layout: {missing}"


def test_the_layout_names_no_module_that_is_gone() -> None:
    documented = {
        p for p in documented_paths()
        if any(p.startswith(root) for root in MODULE_ROOTS) and not p.endswith("/")
    }
    stale = sorted(p for p in documented if not (ROOT / p).is_file())
    assert not stale, f"docs/architecture.md's Layout names files that do not exist: {stale}"


def test_the_layout_parser_reads_nested_folders() -> None:
    # The reading rule itself, on this repository's own entries.
    paths = documented_paths()
    assert "python/hierdraft/stores/model_store.py" in paths
    assert "rust/kernels/src/gguf/metadata.rs" in paths
    assert "python/hierdraft/__main__.py" in paths
