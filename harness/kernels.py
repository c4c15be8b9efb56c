"""numba kernels for the CPU: compiled once (cached on disk where possible) and run without the
GIL (:func:`jit`), on tensors' memory as numpy arrays (:func:`memory`). The wavelet transforms
(:mod:`harness.wavelets.cpu`) spread theirs over torch's thread count (:func:`launch`); the
integer entropy path (:mod:`harness.model.exact_cpu`) runs its own on the calling thread."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided
from torch import Tensor

PARALLEL_MIN = 1 << 16  # below this many elements a kernel runs on the calling thread
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def jit(*signatures):
    """``numba.njit`` without the GIL, cached on disk where numba finds a writable place
    (next to the module, else its user cache); with a read-only install and home, each
    process compiles anew instead of failing at import."""

    def compile_(function):
        try:
            return numba.njit(*signatures, nogil=True, cache=True)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return numba.njit(*signatures, nogil=True)(function)

    return compile_


def _pool(threads: int) -> ThreadPoolExecutor:
    # keyed by pid too: a forked child inherits the executor object but not its threads
    key = (os.getpid(), threads)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="harness-kernel")
    return _POOLS[key]


def launch(compiled, args: tuple, items: int, numel: int, *tail: int) -> None:
    """Run ``compiled(*args, start, stop, *tail)`` over ``items`` work items, split over torch's
    thread count (one call on this thread for fewer than :data:`PARALLEL_MIN` elements)."""
    threads = min(torch.get_num_threads(), items)
    if threads <= 1 or numel < PARALLEL_MIN:
        compiled(*args, 0, items, *tail)
        return
    cuts = [items * i // threads for i in range(threads + 1)]
    pool = _pool(threads)
    futures = [pool.submit(compiled, *args, cuts[i], cuts[i + 1], *tail) for i in range(threads)]
    for f in futures:
        f.result()


def memory(t: Tensor) -> np.ndarray:
    """The memory a CPU tensor spans, as a 1D array from its first element (shares memory):
    kernels take it with the tensor's strides. numpy has no bfloat16: such a tensor comes as
    its uint16 bits (:func:`harness.wavelets.cpu.widen` reads them)."""
    if t.dtype == torch.bfloat16:
        arr = t.detach().view(torch.int16).numpy().view(np.uint16)
    else:
        arr = t.detach().numpy()
    span = 1 + sum((size - 1) * st for size, st in zip(t.shape, t.stride()))
    return as_strided(arr, (span,), (arr.itemsize,))
