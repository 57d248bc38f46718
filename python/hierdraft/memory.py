"""Giving freed heap memory back to the operating system.

Loading a model's tokenizer parses a file of tens of megabytes (a 262k-token vocabulary): the
parser's temporary structures are freed afterwards, but glibc's allocator keeps the pages, so the
process's resident memory stays hundreds of megabytes above what it uses. `release_free_memory`
asks the allocator to return them (glibc's `malloc_trim`); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True if the allocator supports it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
