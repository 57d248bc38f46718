"""Progress reporting shared by the store builders: tqdm bars, a ticker for long native calls,
and the end-of-build summary."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["BuildSummary", "bar", "run_with_ticker", "say", "human_bytes"]

T = TypeVar("T")


def say(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(f"[hierdraft] {msg}", file=sys.stderr, flush=True)


def bar(enabled: bool, **kwargs: Any):
    """A tqdm bar on stderr (a no-op object when disabled)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(disable=not enabled, **kwargs)


def run_with_ticker(fn: Callable[[], T], desc: str, enabled: bool = True) -> T:
    """Run ``fn`` (a native call that releases the GIL) while a bar shows the elapsed time."""
    if not enabled:
        return fn()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    worker = threading.Thread(target=target, name="hierdraft-build", daemon=True)
    with bar(True, desc=desc, total=None, bar_format="{desc}: {elapsed} elapsed") as ticker:
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
            ticker.refresh()
    if "error" in result:
        raise result["error"]
    return result["value"]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass
class BuildSummary:
    """What a build produced; ``str(summary)`` is the report printed at the end."""

    kind: str
    path: str
    documents: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    bytes_per_token: float | None = None
    file_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    store: Any = field(default=None, repr=False, compare=False)

    def finish(self, store: Any, started: float, cpu_started: float | None = None) -> BuildSummary:
        self.store = store
        self.seconds = time.perf_counter() - started
        if cpu_started is not None:
            self.cpu_seconds = time.process_time() - cpu_started
        self.file_bytes = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        return self

    def __str__(self) -> str:
        lines = [f"{self.kind} written to {self.path}"]
        docs_label = "prompts" if self.kind == "model store" else "documents"
        lines.append(f"  {docs_label:<16} {self.documents:,}")
        lines.append(f"  {'tokens':<16} {self.tokens:,}")
        for key, value in self.extra.items():
            lines.append(f"  {key:<16} {value:,}" if isinstance(value, int) else f"  {key:<16} {value}")
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items())
        lines.append(f"  {'build time':<16} {self.seconds:.1f} s" + (f" ({stages})" if stages else ""))
        if self.cpu_seconds:
            lines.append(f"  {'cpu time':<16} {self.cpu_seconds:.1f} s (all threads)")
        if self.tokens and self.seconds > 0:
            lines.append(f"  {'throughput':<16} {self.tokens / self.seconds:,.0f} tokens/s")
        if self.bytes_per_token is not None:
            lines.append(f"  {'bytes per token':<16} {self.bytes_per_token:.2f}")
        lines.append(f"  {'file size':<16} {human_bytes(self.file_bytes)} ({self.file_bytes:,} bytes)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
