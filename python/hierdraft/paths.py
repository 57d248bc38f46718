"""Where hierdraft keeps its cached files, and how Python-side files are written safely.

The cache directory holds the converted default model and the default stores. It is
``$HIERDRAFT_HOME`` if set, else ``$XDG_CACHE_HOME/hierdraft``, else ``~/.cache/hierdraft``.

Every file hierdraft writes from Python goes through :func:`atomic_write` or
:func:`atomic_dir`: the data lands in a temporary sibling first, is flushed to disk, and is
then renamed over the target, so a crash never leaves a half-written file under the final
name and whatever was there before stays intact until the new version is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "cache_dir",
    "models_dir",
    "stores_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_dir",
    "fsync_dir",
]


def cache_dir(create: bool = True) -> Path:
    """The root cache directory (see the module docstring for how it is chosen)."""
    home = os.environ.get("HIERDRAFT_HOME")
    if home:
        root = Path(home).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        root = base / "hierdraft"
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir(create: bool = True) -> Path:
    """Subdirectory holding converted models (one folder per version key)."""
    path = cache_dir(create) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def stores_dir(create: bool = True) -> Path:
    """Subdirectory holding the default model stores and corpus indexes."""
    path = cache_dir(create) / "stores"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry (after a rename) where the platform allows it."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success move it to ``path``.

    Used for multi-file artifacts (a converted model). If ``path`` already exists it is
    replaced only after the new directory is complete. On an exception the temporary
    directory is deleted and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; use the usual mode
        yield tmp
        _fsync_tree(tmp)
        if target.exists():
            # Swap: move the old one aside first so the target name is never half-populated.
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
