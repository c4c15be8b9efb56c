"""The CPU kernels of :mod:`harness.wavelets`: whole transforms in one pass over memory.

Done with torch ops, a 9/7 level along one axis is about ten passes over the tensor
(deinterleave, four lifting steps of two adds each, two scalings), each limited by memory
bandwidth on a CPU. These kernels (compiled by numba) copy a tile of the tensor into a
buffer that stays in cache, deinterleaving it for an analysis, run the whole lifting program
on the buffer, and write the tile back, interleaving it for a synthesis. ``level_`` does one
axis (tiles of lines); ``plane_levels_`` does every level of a 2D transform over the last two
dims (one plane per tile, transposed in cache between the axes); the routines here also serve
:mod:`harness.wavelets.volume`, which does ``dwt3``/``idwt3`` of one channel level in one
pass. Work is spread
over ``torch.get_num_threads()`` threads (the compiled code releases the GIL). The program is
the list of steps that the torch path runs too (:func:`harness.wavelets.lifting.program`):
the two compute the same map up to rounding, and the three kernels the very same values.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Sequence

import numba
import numpy as np
import torch
from torch import Tensor

from harness.kernels import jit, launch, memory

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
PORTABLE = threading.local()  # harness.wavelets.portable(): the torch path, unfused, on this thread
DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
BUFFER_BYTES = 1 << 18  # a tile's buffer when rows are copied: within one core's L2 cache
_COLUMNS = 32  # a tile's width when lines are copied into columns


@jit()
def _buffer_row(i: int, ns: int) -> int:
    """Row of sample ``i`` in a buffer split ``[even | odd]``."""
    return i // 2 if i % 2 == 0 else ns + i // 2


@jit()
def copy_block(flat, base, s_n, s_q, buf, q0, width, ns, permute, into_buf):
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


@jit()
def _add_scaled(dst, src, c, width):
    for j in range(width):
        dst[j] += c * src[j]


@jit()
def _add_pair(dst, a, b, c, width):
    for j in range(width):
        dst[j] += c * (a[j] + b[j])


@jit()
def targets(kind, ns, nd):
    """``(count, parity)`` of the samples a step updates: ``parity`` 1 for the odd half."""
    if kind == PREDICT or kind == UPDATE_T or kind == HAAR_PREDICT or kind == SCALE_ODD:
        return nd, 1
    return (nd if kind == HAAR_UPDATE else ns), 0


@jit()
def lift(buf, kind, c, k0, k1, ns, nd, mask, odd, width):
    """Step ``kind`` on samples ``k0:k1`` of the half it updates, columns ``0:width`` of
    ``buf``; even sample k sits in row ``k & mask``, odd sample k in ``odd + (k & mask)``
    (``mask`` -1 and ``odd`` ns for a buffer split ``[even | odd]``, a power of two less
    one and the ring's size for the volume kernel's ring). Every step updates each row of one
    half once, from one or two rows of the other half (the transposed steps are written that
    way too, boundary terms added separately)."""
    if kind == PREDICT:
        for k in range(k0, k1):
            _add_pair(buf[odd + (k & mask)], buf[k & mask], buf[min(k + 1, ns - 1) & mask], c, width)
    elif kind == UPDATE:
        for k in range(k0, k1):
            _add_pair(
                buf[k & mask], buf[odd + (max(k - 1, 0) & mask)], buf[odd + (min(k, nd - 1) & mask)], c, width
            )
    elif kind == PREDICT_T:  # even[j] gets odd[j] and odd[j-1]; the mirrored odd[nd-1]
        for j in range(k0, k1):
            if 1 <= j < nd:
                _add_pair(buf[j & mask], buf[odd + (j & mask)], buf[odd + ((j - 1) & mask)], c, width)
            else:
                _add_scaled(buf[j & mask], buf[odd + ((j if j < nd else j - 1) & mask)], c, width)
            if j == ns - 1 and nd == ns:
                _add_scaled(buf[j & mask], buf[odd + ((nd - 1) & mask)], c, width)
    elif kind == UPDATE_T:  # odd[i] gets even[i] and even[i+1]; the mirrored even[0], even[nd]
        for i in range(k0, k1):
            if i + 1 < ns:
                _add_pair(buf[odd + (i & mask)], buf[i & mask], buf[(i + 1) & mask], c, width)
            else:
                _add_scaled(buf[odd + (i & mask)], buf[i & mask], c, width)
            if i == 0:
                _add_scaled(buf[odd + (0 & mask)], buf[0 & mask], c, width)
            if i == nd - 1 and ns > nd:
                _add_scaled(buf[odd + (i & mask)], buf[nd & mask], c, width)
    elif kind == HAAR_PREDICT:
        for k in range(k0, k1):
            _add_scaled(buf[odd + (k & mask)], buf[k & mask], c, width)
    elif kind == HAAR_UPDATE:
        for k in range(k0, k1):
            _add_scaled(buf[k & mask], buf[odd + (k & mask)], c, width)
    else:
        base = odd if kind == SCALE_ODD else 0
        for k in range(k0, k1):
            row = buf[base + (k & mask)]
            for j in range(width):
                row[j] *= c


@jit()
def _run(buf, ns, nd, kinds, coefs, width):
    """The program on rows ``0:ns+nd`` (split ``[even | odd]``), columns ``0:width`` of ``buf``."""
    if nd == 0:  # a single sample passes through (T.800 F.3.7)
        return
    for s in range(kinds.shape[0]):
        count, _ = targets(kinds[s], ns, nd)
        lift(buf, kinds[s], coefs[s], 0, count, ns, nd, -1, ns, width)


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
        copy_block(src, p * src_strides[0], src_strides[1], src_strides[2], buf, q0, width, ns, analysis, True)
        _run(buf, ns, nd, kinds, coefs, width)
        copy_block(dst, p * dst_strides[0], dst_strides[1], dst_strides[2], buf, q0, width, ns, not analysis, False)


@jit()
def _transpose(src, s0, s_n, s_m, dst, n, m, ns, deinterleave):
    """``dst[:m, :n]`` = the n x m block at ``src[s0]`` (a flat array, strides ``s_n``,
    ``s_m``) transposed, reading it line by line and writing ``dst`` with a stride (in
    cache). With ``deinterleave`` the rows of ``dst`` go to their ``[even | odd]`` places
    (``ns`` of the m samples even); otherwise the lines of ``src`` come from theirs (``ns``
    of the n samples even)."""
    for i in range(n):
        line = src[s0 + i * s_n :]
        if deinterleave and s_m == 1:  # unit stride spelled out, so that it vectorises
            for j in range(ns):
                dst[j, i] = line[2 * j]
            for j in range(m - ns):
                dst[ns + j, i] = line[2 * j + 1]
        elif deinterleave:
            for j in range(m):
                dst[_buffer_row(j, ns), i] = line[j * s_m]
        else:
            j = 2 * i if i < ns else 2 * (i - ns) + 1
            for k in range(m):
                dst[k, j] = line[k * s_m]


@jit()
def plane_analysis(src, s0, s_h, s_w, dst, d0, d_h, d_w, h, w, rows, cols, kinds, coefs, levels):
    """A ``levels``-level 2D analysis of one h x w plane (Mallat: each level on the previous
    one's LL block) from ``src`` into ``dst`` (flat arrays; the plane at element ``s0``/``d0``
    with strides ``s_h, s_w``/``d_h, d_w``); the plane is read whole before it is written.
    ``rows`` holds the plane as it is stored, ``cols`` its transpose: a level lifts along
    width in ``cols`` and along height in ``rows``, so that both vectorise over lines."""
    flat_rows, flat_cols = rows.reshape(h * w), cols.reshape(w * h)
    hh, ww = h, w
    for level in range(levels):
        ns_h, ns_w = (hh + 1) // 2, (ww + 1) // 2
        if level == 0:
            _transpose(src, s0, s_h, s_w, cols, h, w, ns_w, True)
        else:
            _transpose(flat_rows, 0, w, 1, cols, hh, ww, ns_w, True)
        _run(cols, ns_w, ww - ns_w, kinds, coefs, hh)
        _transpose(flat_cols, 0, h, 1, rows, ww, hh, ns_h, True)
        _run(rows, ns_h, hh - ns_h, kinds, coefs, ww)
        hh, ww = ns_h, ns_w
    copy_block(dst, d0, d_h, d_w, rows, 0, w, 0, False, False)


@jit()
def _plane_synthesis(src, s0, s_h, s_w, dst, d0, d_h, d_w, h, w, rows, cols, kinds, coefs, levels):
    """The synthesis that undoes :func:`plane_analysis` step by step in reverse (same
    arguments)."""
    copy_block(src, s0, s_h, s_w, rows, 0, w, 0, False, True)
    synthesize(rows, cols, dst, d0, d_h, d_w, h, w, kinds, coefs, levels)


@jit()
def synthesize(rows, cols, dst, d0, d_h, d_w, h, w, kinds, coefs, levels):
    """:func:`_plane_synthesis` of the plane already in ``rows``."""
    flat_rows, flat_cols = rows.reshape(h * w), cols.reshape(w * h)
    for level in range(levels - 1, -1, -1):
        hh, ww = h, w
        for _ in range(level):
            hh, ww = (hh + 1) // 2, (ww + 1) // 2
        ns_h, ns_w = (hh + 1) // 2, (ww + 1) // 2
        _run(rows, ns_h, hh - ns_h, kinds, coefs, ww)
        _transpose(flat_rows, 0, w, 1, cols, hh, ww, ns_h, False)
        _run(cols, ns_w, ww - ns_w, kinds, coefs, hh)
        _transpose(flat_cols, 0, h, 1, rows, ww, hh, ns_w, False)
    copy_block(dst, d0, d_h, d_w, rows, 0, w, 0, False, False)


def _planes(src, src_strides, dst, dst_strides, h, w, kinds, coefs, analysis, start, stop, levels):
    """Planes ``start:stop`` of a ``levels``-level 2D transform. ``src`` and ``dst`` are
    flat arrays holding (P, h, w) tensors with the given element strides; they may be the
    same memory."""
    rows = np.empty((h, w), dtype=src.dtype)
    cols = np.empty((w, h), dtype=src.dtype)
    for p in range(start, stop):
        s0, d0 = p * src_strides[0], p * dst_strides[0]
        if analysis:
            plane_analysis(
                src, s0, src_strides[1], src_strides[2], dst, d0, dst_strides[1], dst_strides[2],
                h, w, rows, cols, kinds, coefs, levels,
            )
        else:
            _plane_synthesis(
                src, s0, src_strides[1], src_strides[2], dst, d0, dst_strides[1], dst_strides[2],
                h, w, rows, cols, kinds, coefs, levels,
            )


def array_type(dtype: type):
    """numba's type of a flat contiguous array of ``dtype`` (a numpy scalar type)."""
    return numba.from_dtype(np.dtype(dtype))[::1]


def signature(t, head: tuple, own: int):
    """A kernel's numba signature, for element arrays of type ``t``: the arguments ``head``,
    then the program's kinds and coefficients, the analysis flag, the items' start and stop,
    and ``own`` ints of the kernel's own."""
    i64 = numba.int64
    return numba.void(*head, numba.int64[::1], t, numba.boolean, i64, i64, *(i64,) * own)


@functools.cache
def _compiled(kernel: str, dtype: type):
    """``_level`` or ``_planes`` compiled for one dtype on first use (cached on disk where
    :func:`harness.kernels.jit` can); strides are arguments, so one compilation serves every layout."""
    t, i64 = array_type(dtype), numba.int64
    # src, its strides, dst, its strides, the line length or h, the width or w; the tile or levels
    return jit([signature(t, (t, i64[::1], t, i64[::1], i64, i64), 1)])(globals()[kernel])


def merged_dims(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> list[tuple[int, list[int]]]:
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


def single(groups: list[tuple[int, list[int]]], tensors: int = 2) -> tuple[int, list[int]] | None:
    """The one group of ``groups`` (size 1 if none) of ``tensors`` tensors' dims; None if
    there are several."""
    if len(groups) > 1:
        return None
    return groups[0] if groups else (1, [0] * tensors)


def _strides(outer: list[int], inner: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per tensor: the folded outer stride, then the given inner strides."""
    return tuple(np.array([outer[k], *inner[k]], dtype=np.int64) for k in (0, 1))


def _fold(src: Tensor, dst: Tensor, dim: int) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """``src`` and ``dst`` as (P, n, Q) tensors: ``(P, Q, src strides, dst strides)``; None
    if the dims around ``dim`` do not fold into one each. Q is the dim the kernel vectorises
    over: the dims after ``dim``, or for an innermost ``dim`` the lines (the dims before it)."""
    strides = (src.stride(), dst.stride())
    before = merged_dims(src.shape[:dim], strides)
    after = merged_dims(src.shape[dim + 1 :], [s[dim + 1 :] for s in strides])
    if not after:
        before, after = before[:-1], before[-1:]
    outer, inner = single(before), single(after)
    if outer is None or inner is None:
        return None
    src_st, dst_st = _strides(outer[1], [(s[dim], inner[1][k]) for k, s in enumerate(strides)])
    return outer[0], inner[0], src_st, dst_st


@functools.cache
def program_arrays(program: Program, dtype) -> tuple[np.ndarray, np.ndarray]:
    kinds = np.array([k for k, _ in program], dtype=np.int64)
    coefs = np.array([c for _, c in program], dtype=dtype)
    return kinds, coefs


def portable_active() -> bool:
    return getattr(PORTABLE, "on", False)


def usable(src: Tensor, dst: Tensor) -> bool:
    return (
        ENABLED
        and not portable_active()
        and src.device.type == "cpu"
        and dst.device.type == "cpu"
        and src.dtype in DTYPES
        and dst.dtype == src.dtype
        and src.numel() > 0
    )


def level_(src: Tensor, dst: Tensor, dim: int, program: Program, analysis: bool) -> bool:
    """One lifting level along ``dim`` from ``src`` into ``dst`` (same shape, no overlap):
    an analysis deinterleaves then runs ``program``, a synthesis runs it then interleaves.
    Returns False, doing nothing, where the kernel does not apply (not a CPU float32/float64
    pair, or a layout whose dims do not fold); the caller then uses torch ops."""
    if not usable(src, dst):
        return False
    folded = _fold(src, dst, dim)
    if folded is None:
        return False
    p, q, src_st, dst_st = folded
    n = src.shape[dim]
    if src_st[2] == 1 or dst_st[2] == 1:  # rows copied whole: a tile as wide as the cache allows
        tile = max(16, min(q, BUFFER_BYTES // (n * src.element_size())))
    else:  # lines copied into columns
        tile = min(q, _COLUMNS)
    kinds, coefs = program_arrays(program, DTYPES[src.dtype])
    args = (memory(src), src_st, memory(dst), dst_st, n, q, kinds, coefs, analysis)
    launch(_compiled("_level", DTYPES[src.dtype]), args, p * math.ceil(q / tile), src.numel(), tile)
    return True


def plane_levels_(src: Tensor, dst: Tensor, program: Program, analysis: bool, levels: int) -> bool:
    """A ``levels``-level 2D transform over the last two dims from ``src`` into ``dst`` (same
    shape; may be the same tensor), in Mallat layout like the engine's. The analysis lifts
    along width then height at each level, the synthesis undoes it (the two axes of a level
    commute, so this is the engine's transform up to rounding). False where the kernel does
    not apply (as for :func:`level_`, or planes too big for the cache)."""
    if not usable(src, dst) or src.dim() < 2:
        return False
    h, w = src.shape[-2:]
    if h * w * src.element_size() > BUFFER_BYTES:
        return False
    strides = (src.stride(), dst.stride())
    outer = single(merged_dims(src.shape[:-2], [st[:-2] for st in strides]))
    if outer is None:
        return False
    src_st, dst_st = _strides(outer[1], [st[-2:] for st in strides])
    kinds, coefs = program_arrays(program, DTYPES[src.dtype])
    args = (memory(src), src_st, memory(dst), dst_st, h, w, kinds, coefs, analysis)
    launch(_compiled("_planes", DTYPES[src.dtype]), args, outer[0], src.numel(), levels)
    return True
