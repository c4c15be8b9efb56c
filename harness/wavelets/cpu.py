"""The CPU kernels of :mod:`harness.wavelets`: a whole lifting level in one pass over memory.

Done with torch ops, a 9/7 level along one axis is about ten passes over the tensor
(deinterleave, four lifting steps of two adds each, two scalings), each limited by memory
bandwidth on a CPU. These kernels (compiled by numba) copy a tile of the tensor into a
buffer that stays in cache, deinterleaving it for an analysis, run the whole lifting program
on the buffer, and write the tile back, interleaving it for a synthesis. ``level_`` does one
axis (tiles of lines); ``plane_levels_`` does every level of a 2D transform over the last two
dims (one plane per tile, transposed in cache between the axes), so the spatial part of
``dwt2``/``dwt3`` reads and writes the tensor once. Tiles are spread over ``torch.get_num_threads()`` threads (the
compiled code releases the GIL). The program is the list of steps that the torch path runs
too (:func:`harness.wavelets.lifting.program`): the two compute the same map up to rounding.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numba
import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided
from torch import Tensor

# Step kinds of a lifting program (harness.wavelets.lifting builds the programs). With
# ``even``/``odd`` the two halves of a buffer split ``[even | odd]`` (ns and nd samples):
PREDICT = 0  # odd[k] += c * (even[k] + even[min(k+1, ns-1)])   whole-sample symmetric
UPDATE = 1  # even[k] += c * (odd[max(k-1, 0)] + odd[min(k, nd-1)])
PREDICT_T = 2  # transpose of PREDICT: even += c * A^T odd
UPDATE_T = 3  # transpose of UPDATE: odd += c * B^T even
HAAR_PREDICT = 4  # odd[k] += c * even[k]
HAAR_UPDATE = 5  # even[k] += c * odd[k] for k < nd (an odd length's last sample passes)
SCALE_EVEN = 6  # even *= c
SCALE_ODD = 7  # odd *= c

Program = tuple[tuple[int, float], ...]

ENABLED = True  # tests switch the kernel off to run the torch path on the CPU
_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_PARALLEL_MIN = 1 << 16  # below this many samples a level runs on the calling thread
_BUFFER_BYTES = 1 << 18  # a tile's buffer when rows are copied: within one core's L2 cache
_COLUMNS = 32  # a tile's width when lines are copied into columns


def _jit(*signatures):
    """``numba.njit`` without the GIL, cached on disk where numba finds a writable place
    (next to this module, else its user cache); with a read-only install and home, each
    process compiles anew instead of failing at import."""

    def compile_(function):
        try:
            return numba.njit(*signatures, nogil=True, cache=True)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return numba.njit(*signatures, nogil=True)(function)

    return compile_


@_jit()
def _buffer_row(i: int, ns: int) -> int:
    """Row of sample ``i`` in a buffer split ``[even | odd]``."""
    return i // 2 if i % 2 == 0 else ns + i // 2


@_jit()
def _copy(flat, base, s_n, s_q, buf, q0, width, ns, permute, into_buf):
    """Copy lines ``q0:q0+width`` of an (n, Q) tensor held in ``flat`` (element strides
    ``s_n``, ``s_q`` from ``base``) into the columns of ``buf`` (n rows), or back. With
    ``permute``, sample i sits in row ``_buffer_row(i, ns)`` of ``buf``. The three loops are
    one per memory order, so that the compiler sees unit strides where there are some."""
    n = buf.shape[0]
    if s_q == 1:
        for i in range(n):
            row = buf[_buffer_row(i, ns) if permute else i]
            line = flat[base + i * s_n + q0 :]
            if into_buf:
                for j in range(width):
                    row[j] = line[j]
            else:
                for j in range(width):
                    line[j] = row[j]
    elif s_n == 1:
        for j in range(width):
            line = flat[base + (q0 + j) * s_q :]
            if into_buf:
                for i in range(n):
                    buf[_buffer_row(i, ns) if permute else i, j] = line[i]
            else:
                for i in range(n):
                    line[i] = buf[_buffer_row(i, ns) if permute else i, j]
    else:
        for i in range(n):
            row = buf[_buffer_row(i, ns) if permute else i]
            for j in range(width):
                at = base + i * s_n + (q0 + j) * s_q
                if into_buf:
                    row[j] = flat[at]
                else:
                    flat[at] = row[j]


@_jit()
def _add_scaled(dst, src, c, width):
    for j in range(width):
        dst[j] += c * src[j]


@_jit()
def _add_pair(dst, a, b, c, width):
    for j in range(width):
        dst[j] += c * (a[j] + b[j])


@_jit()
def _run(buf, ns, nd, kinds, coefs, width):
    """The program on rows ``0:ns+nd`` (split ``[even | odd]``), columns ``0:width`` of ``buf``.
    Every step updates each row of one half once, from one or two rows of the other half
    (the transposed steps are written that way too, boundary terms added separately)."""
    if nd == 0:  # a single sample passes through (T.800 F.3.7)
        return
    for s in range(kinds.shape[0]):
        kind, c = kinds[s], coefs[s]
        if kind == PREDICT:
            for k in range(nd):
                _add_pair(buf[ns + k], buf[k], buf[min(k + 1, ns - 1)], c, width)
        elif kind == UPDATE:
            for k in range(ns):
                _add_pair(buf[k], buf[ns + max(k - 1, 0)], buf[ns + min(k, nd - 1)], c, width)
        elif kind == PREDICT_T:  # even[j] gets odd[j] and odd[j-1]; the mirrored odd[nd-1]
            for j in range(ns):
                if 1 <= j < nd:
                    _add_pair(buf[j], buf[ns + j], buf[ns + j - 1], c, width)
                else:
                    _add_scaled(buf[j], buf[ns + (j if j < nd else j - 1)], c, width)
                if j == ns - 1 and nd == ns:
                    _add_scaled(buf[j], buf[ns + nd - 1], c, width)
        elif kind == UPDATE_T:  # odd[i] gets even[i] and even[i+1]; the mirrored even[0], even[nd]
            for i in range(nd):
                if i + 1 < ns:
                    _add_pair(buf[ns + i], buf[i], buf[i + 1], c, width)
                else:
                    _add_scaled(buf[ns + i], buf[i], c, width)
                if i == 0:
                    _add_scaled(buf[ns], buf[0], c, width)
                if i == nd - 1 and ns > nd:
                    _add_scaled(buf[ns + i], buf[nd], c, width)
        elif kind == HAAR_PREDICT:
            for k in range(nd):
                _add_scaled(buf[ns + k], buf[k], c, width)
        elif kind == HAAR_UPDATE:
            for k in range(nd):
                _add_scaled(buf[k], buf[ns + k], c, width)
        else:
            first, count = (0, ns) if kind == SCALE_EVEN else (ns, nd)
            for k in range(first, first + count):
                row = buf[k]
                for j in range(width):
                    row[j] *= c


def _level(src, src_strides, dst, dst_strides, n, width_q, kinds, coefs, analysis, start, stop, tile):
    """Tiles ``start:stop`` of one level. ``src`` and ``dst`` are flat arrays holding (P, n, Q)
    tensors with the given element strides; a tile is ``tile`` consecutive indices of Q at one
    index of P."""
    ns = (n + 1) // 2
    nd = n - ns
    tiles = (width_q + tile - 1) // tile
    buf = np.empty((n, tile), dtype=src.dtype)
    for item in range(start, stop):
        p = item // tiles
        q0 = (item % tiles) * tile
        width = min(tile, width_q - q0)
        _copy(src, p * src_strides[0], src_strides[1], src_strides[2], buf, q0, width, ns, analysis, True)
        _run(buf, ns, nd, kinds, coefs, width)
        _copy(dst, p * dst_strides[0], dst_strides[1], dst_strides[2], buf, q0, width, ns, not analysis, False)


@_jit()
def _transpose(src, dst, n, m, ns, deinterleave):
    """``dst[:m, :n]`` = ``src[:n, :m]`` transposed, in cache. With ``deinterleave`` the rows
    of ``dst`` go to their ``[even | odd]`` places (``dst[row(j), i] = src[i, j]``, ``ns`` of
    the m samples even); otherwise the rows of ``src`` are read from theirs
    (``dst[i, j] = src[row(j), i]``, ``ns`` of the n samples even)."""
    if deinterleave:
        for j in range(m):
            row = dst[_buffer_row(j, ns)]
            for i in range(n):
                row[i] = src[i, j]
    else:
        for j in range(n):
            row = src[_buffer_row(j, ns)]
            for i in range(m):
                dst[i, j] = row[i]


def _planes(src, src_strides, dst, dst_strides, h, w, kinds, coefs, analysis, start, stop, levels):
    """Planes ``start:stop`` of a ``levels``-level 2D transform (Mallat: each level on the
    previous one's LL block), each plane read once and written once; the levels run in
    cache. ``src`` and ``dst`` are flat arrays holding (P, h, w) tensors with the given
    element strides; they may be the same memory, as a plane is read whole before it is
    written. ``rows`` holds a plane as it is stored, ``cols`` its transpose: a level lifts
    along width in ``cols`` and along height in ``rows``, so that both vectorise over lines.
    The synthesis undoes the analysis step by step in reverse."""
    rows = np.empty((h, w), dtype=src.dtype)
    cols = np.empty((w, h), dtype=src.dtype)
    for p in range(start, stop):
        s0, d0 = p * src_strides[0], p * dst_strides[0]
        if analysis:
            hh, ww = h, w
            for level in range(levels):
                ns_h, ns_w = (hh + 1) // 2, (ww + 1) // 2
                if level == 0:
                    _copy(src, s0, src_strides[2], src_strides[1], cols, 0, h, ns_w, True, True)
                else:
                    _transpose(rows, cols, hh, ww, ns_w, True)
                _run(cols, ns_w, ww - ns_w, kinds, coefs, hh)
                _transpose(cols, rows, ww, hh, ns_h, True)
                _run(rows, ns_h, hh - ns_h, kinds, coefs, ww)
                hh, ww = ns_h, ns_w
            _copy(dst, d0, dst_strides[1], dst_strides[2], rows, 0, w, 0, False, False)
        else:
            _copy(src, s0, src_strides[1], src_strides[2], rows, 0, w, 0, False, True)
            for level in range(levels - 1, -1, -1):
                hh, ww = h, w
                for _ in range(level):
                    hh, ww = (hh + 1) // 2, (ww + 1) // 2
                ns_h, ns_w = (hh + 1) // 2, (ww + 1) // 2
                _run(rows, ns_h, hh - ns_h, kinds, coefs, ww)
                _transpose(rows, cols, hh, ww, ns_h, False)
                _run(cols, ns_w, ww - ns_w, kinds, coefs, hh)
                if level > 0:
                    _transpose(cols, rows, ww, hh, ns_w, False)
                else:
                    _copy(dst, d0, dst_strides[2], dst_strides[1], cols, 0, h, ns_w, True, False)


@functools.cache
def _compiled(kernel: str, dtype: str):
    """``_level`` or ``_planes`` compiled for one dtype on first use (cached on disk where
    :func:`_jit` can); strides are arguments, so one compilation serves every layout."""
    sig = (
        "void({t}[::1], int64[::1], {t}[::1], int64[::1], int64, int64, int64[::1], {t}[::1], "
        "boolean, int64, int64, int64)"  # ..., start, stop, and the tile width or level count
    ).format(t=dtype)
    return _jit([sig])(globals()[kernel])


def _merged(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> list[tuple[int, list[int]]]:
    """Adjacent dims merged wherever every tensor's memory allows: ``(size, strides)`` groups."""
    groups: list[tuple[int, list[int]]] = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        st = [s[d] for s in strides]
        if groups and all(g == s * size for g, s in zip(groups[-1][1], st)):
            groups[-1] = (groups[-1][0] * size, st)
        else:
            groups.append((size, st))
    return groups


def _single(groups: list[tuple[int, list[int]]]) -> tuple[int, list[int]] | None:
    """The one group of ``groups`` (size 1 if none); None if there are several."""
    if len(groups) > 1:
        return None
    return groups[0] if groups else (1, [0, 0])


def _strides(outer: list[int], inner: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per tensor: the folded outer stride, then the given inner strides."""
    return tuple(np.array([outer[k], *inner[k]], dtype=np.int64) for k in (0, 1))


def _fold(src: Tensor, dst: Tensor, dim: int) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """``src`` and ``dst`` as (P, n, Q) tensors: ``(P, Q, src strides, dst strides)``; None
    if the dims around ``dim`` do not fold into one each. Q is the dim the kernel vectorises
    over: the dims after ``dim``, or for an innermost ``dim`` the lines (the dims before it)."""
    strides = (src.stride(), dst.stride())
    before = _merged(src.shape[:dim], strides)
    after = _merged(src.shape[dim + 1 :], [s[dim + 1 :] for s in strides])
    if not after:
        before, after = before[:-1], before[-1:]
    outer, inner = _single(before), _single(after)
    if outer is None or inner is None:
        return None
    src_st, dst_st = _strides(outer[1], [(s[dim], inner[1][k]) for k, s in enumerate(strides)])
    return outer[0], inner[0], src_st, dst_st


def _flat(t: Tensor) -> np.ndarray:
    """The memory a tensor spans, as a 1D array from its first element (shares memory)."""
    arr = t.detach().numpy()
    span = 1 + sum((size - 1) * st for size, st in zip(t.shape, t.stride()))
    return as_strided(arr, (span,), (arr.itemsize,))


@functools.cache
def _program_arrays(program: Program, dtype) -> tuple[np.ndarray, np.ndarray]:
    kinds = np.array([k for k, _ in program], dtype=np.int64)
    coefs = np.array([c for _, c in program], dtype=dtype)
    return kinds, coefs


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    # keyed by pid too: a forked child inherits the executor object but not its threads
    key = (os.getpid(), threads)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="harness-dwt")
    return _POOLS[key]


def _usable(src: Tensor, dst: Tensor) -> bool:
    return (
        ENABLED
        and src.device.type == "cpu"
        and dst.device.type == "cpu"
        and src.dtype in _DTYPES
        and dst.dtype == src.dtype
        and src.numel() > 0
    )


def _launch(kernel: str, args: tuple, items: int, numel: int, *tail: int) -> None:
    """Run ``kernel`` over ``items`` work items, split over torch's thread count."""
    compiled = _compiled(kernel, str(args[0].dtype))
    threads = min(torch.get_num_threads(), items)
    if threads <= 1 or numel < _PARALLEL_MIN:
        compiled(*args, 0, items, *tail)
        return
    cuts = [items * i // threads for i in range(threads + 1)]
    pool = _pool(threads)
    futures = [pool.submit(compiled, *args, cuts[i], cuts[i + 1], *tail) for i in range(threads)]
    for f in futures:
        f.result()


def level_(src: Tensor, dst: Tensor, dim: int, program: Program, analysis: bool) -> bool:
    """One lifting level along ``dim`` from ``src`` into ``dst`` (same shape, no overlap):
    an analysis deinterleaves then runs ``program``, a synthesis runs it then interleaves.
    Returns False, doing nothing, where the kernel does not apply (not a CPU float32/float64
    pair, or a layout whose dims do not fold); the caller then uses torch ops."""
    if not _usable(src, dst):
        return False
    folded = _fold(src, dst, dim)
    if folded is None:
        return False
    p, q, src_st, dst_st = folded
    n = src.shape[dim]
    if src_st[2] == 1 or dst_st[2] == 1:  # rows copied whole: a tile as wide as the cache allows
        tile = max(16, min(q, _BUFFER_BYTES // (n * src.element_size())))
    else:  # lines copied into columns
        tile = min(q, _COLUMNS)
    kinds, coefs = _program_arrays(program, _DTYPES[src.dtype])
    args = (_flat(src), src_st, _flat(dst), dst_st, n, q, kinds, coefs, analysis)
    _launch("_level", args, p * math.ceil(q / tile), src.numel(), tile)
    return True


def plane_levels_(src: Tensor, dst: Tensor, program: Program, analysis: bool, levels: int) -> bool:
    """A ``levels``-level 2D transform over the last two dims from ``src`` into ``dst`` (same
    shape; may be the same tensor), in Mallat layout like the engine's. The analysis lifts
    along width then height at each level, the synthesis undoes it (the two axes of a level
    commute, so this is the engine's transform up to rounding). False where the kernel does
    not apply (as for :func:`level_`, or planes too big for the cache)."""
    if not _usable(src, dst) or src.dim() < 2:
        return False
    h, w = src.shape[-2:]
    if h * w * src.element_size() > _BUFFER_BYTES:
        return False
    strides = (src.stride(), dst.stride())
    outer = _single(_merged(src.shape[:-2], [st[:-2] for st in strides]))
    if outer is None:
        return False
    src_st, dst_st = _strides(outer[1], [st[-2:] for st in strides])
    kinds, coefs = _program_arrays(program, _DTYPES[src.dtype])
    args = (_flat(src), src_st, _flat(dst), dst_st, h, w, kinds, coefs, analysis)
    _launch("_planes", args, outer[0], src.numel(), levels)
    return True
