"""The typed stubs python/hierdraft/_core.pyi match the compiled extension (mypy.stubtest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stubtest_core() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "hierdraft._core"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_is_typed() -> None:
    import hierdraft

    pkg = Path(hierdraft.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "_core.pyi").exists()
