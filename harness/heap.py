"""Handing freed memory back to the operating system, so that a process's peak RSS is what it holds.

glibc serves allocations below its mmap threshold (which grows, up to 32 MiB, as large blocks are
freed) from heaps it keeps: a tensor of tens of megabytes freed there stays in the process's RSS,
and the next, slightly larger one is placed beside it. The entropy model allocates and frees such
tensors slice after slice, so coding a 6 MP image held ~0.6 GB more than its live tensors (measured
in benchmarks/memory.py's setting). :func:`trim` (``malloc_trim``) returns the free pages;
elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def trim() -> None:
    """Return the heap's free pages to the system (milliseconds; call between large steps)."""
    function = _malloc_trim()
    if function is not None:
        function(0)
