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

A kernel computes in float32 (float64 for float64 tensors) in its buffers, whatever the
tensor's dtype: a bfloat16 tensor is read into float32 and rounded back to bfloat16 once, as
it is written (:func:`widen`, :func:`narrow`), where torch's
lifting on bfloat16 rounds after every step. Lines are folded in the tensors' memory order,
so a channels-last tensor is lifted along height and width with its channels as the vector.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Sequence

import numba
import numpy as np
import torch
from numba import types
from numba.extending import overload
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
# A tensor dtype's elements as the kernels see them in memory, and the dtype they compute in.
DTYPES = {
    torch.float32: (np.float32, np.float32),
    torch.float64: (np.float64, np.float64),
    torch.bfloat16: (np.uint16, np.float32),
}
BUFFER_BYTES = 1 << 18  # a tile's buffer: within one core's L2 cache
# A tile's buffer rows are this many elements longer than the tile: where lines are copied into
# its columns, a power-of-two row length would put a column in a handful of L1 cache sets,
# evicting itself (a 128 x 256 float32 tile took 4x as long to fill).
_PAD = 16


# bfloat16 is the upper half of a float32. The kernels compute in float32 (or float64) buffers
# and touch a tensor's memory only through these two, which the compiler inlines: for a float
# array they are the identity, for bfloat16 bits one shift in and one rounding out per element.
# They live beside the kernels because numba's disk cache keys a kernel on its own file only.


def widen(value):
    """A tensor element as the kernels compute with it: bfloat16 bits (uint16) as float32."""
    return value


def narrow(value, out):
    """``value`` as an element of the array ``out``: for bfloat16 bits, rounded to the nearest
    bfloat16 with ties to even, as ``Tensor.to(torch.bfloat16)`` rounds (a NaN stays a NaN)."""
    return value


@overload(widen)
def _widen(value):
    if value == types.uint16:
        return lambda value: np.uint32(np.uint32(value) << np.uint32(16)).view(np.float32)
    return lambda value: value


@overload(narrow)
def _narrow(value, out):
    if out.dtype != types.uint16:
        return lambda value, out: value

    def to_bfloat16(value, out):
        bits = np.float32(value).view(np.uint32)
        if bits & np.uint32(0x7FFFFFFF) > np.uint32(0x7F800000):  # NaN (rounding could make it inf)
            return np.uint16(0x7FC0)
        even = (bits >> np.uint32(16)) & np.uint32(1)
        return np.uint16((bits + np.uint32(0x7FFF) + even) >> np.uint32(16))

    return to_bfloat16


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
                    row[j] = widen(line[j])
            else:
                for j in range(width):
                    line[j] = narrow(row[j], line)
    elif s_n == 1:
        for j in range(width):
            line = flat[base + (q0 + j) * s_q :]
            if into_buf:
                for i in range(n):
                    buf[_buffer_row(i, ns) if permute else i, j] = widen(line[i])
            else:
                for i in range(n):
                    line[i] = narrow(buf[_buffer_row(i, ns) if permute else i, j], line)
    else:
        for i in range(n):
            row = buf[_buffer_row(i, ns) if permute else i]
            for j in range(width):
                at = base + i * s_n + (q0 + j) * s_q
                if into_buf:
                    row[j] = widen(flat[at])
                else:
                    flat[at] = narrow(row[j], flat)


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
    buf = np.empty((n, tile + _PAD), dtype=coefs.dtype)
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
                dst[j, i] = widen(line[2 * j])
            for j in range(m - ns):
                dst[ns + j, i] = widen(line[2 * j + 1])
        elif deinterleave:
            for j in range(m):
                dst[_buffer_row(j, ns), i] = widen(line[j * s_m])
        else:
            j = 2 * i if i < ns else 2 * (i - ns) + 1
            for k in range(m):
                dst[k, j] = widen(line[k * s_m])


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
    rows = np.empty((h, w), dtype=coefs.dtype)
    cols = np.empty((w, h), dtype=coefs.dtype)
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


def signature(dtype: torch.dtype, head: tuple, own: int):
    """A kernel's numba signature for tensors of ``dtype``: the arguments ``head``, then the
    program's kinds and coefficients (in the compute dtype, which the kernel's buffers take),
    the analysis flag, the items' start and stop, and ``own`` ints of the kernel's own."""
    i64 = numba.int64
    coefs = array_type(DTYPES[dtype][1])
    return numba.void(*head, numba.int64[::1], coefs, numba.boolean, i64, i64, *(i64,) * own)


def element_bytes(dtype: torch.dtype) -> int:
    """Bytes of an element of a kernel's buffers for tensors of ``dtype``."""
    return np.dtype(DTYPES[dtype][1]).itemsize


@functools.cache
def _compiled(kernel: str, dtype: torch.dtype):
    """``_level`` or ``_planes`` compiled for one dtype on first use (cached on disk where
    :func:`harness.kernels.jit` can); strides are arguments, so one compilation serves every layout."""
    t, i64 = array_type(DTYPES[dtype][0]), numba.int64
    # src, its strides, dst, its strides, the line length or h, the width or w; the tile or levels
    return jit([signature(dtype, (t, i64[::1], t, i64[::1], i64, i64), 1)])(globals()[kernel])


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


def memory_order(t: Tensor) -> list[int]:
    """``t``'s dims from the outermost in memory to the innermost (where strides tie, as those
    of size-1 dims may, in their logical order)."""
    return sorted(range(t.dim()), key=lambda d: -t.stride(d))


def _fold(src: Tensor, dst: Tensor, dim: int) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """``src`` and ``dst`` as (P, n, Q) tensors: ``(P, Q, src strides, dst strides)``; None
    if the dims around ``dim`` do not fold into one each. The dims are taken in ``src``'s
    memory order, so Q, the dim the kernel vectorises over, is the dims after ``dim`` in
    memory (a channels-last tensor's width and channels, along height), or for a ``dim``
    innermost in memory the lines (the dims before it)."""
    order = memory_order(src)
    shape = [src.shape[d] for d in order]
    strides = [[t.stride(d) for d in order] for t in (src, dst)]
    dim = order.index(dim)
    before = merged_dims(shape[:dim], strides)
    after = merged_dims(shape[dim + 1 :], [s[dim + 1 :] for s in strides])
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
    Returns False, doing nothing, where the kernel does not apply (not a CPU pair of one of
    :data:`DTYPES`, or a layout whose dims do not fold); the caller then uses torch ops."""
    if not usable(src, dst):
        return False
    folded = _fold(src, dst, dim)
    if folded is None:
        return False
    p, q, src_st, dst_st = folded
    n = src.shape[dim]
    # A tile as wide as the cache allows: the lifting runs along its rows, each step a loop
    # over the tile's width (32 columns made the loops' overhead cost 6x the arithmetic).
    tile = max(16, min(q, BUFFER_BYTES // (n * element_bytes(src.dtype))))
    kinds, coefs = program_arrays(program, DTYPES[src.dtype][1])
    args = (memory(src), src_st, memory(dst), dst_st, n, q, kinds, coefs, analysis)
    launch(_compiled("_level", src.dtype), args, p * math.ceil(q / tile), src.numel(), tile)
    return True


def plane_levels_(src: Tensor, dst: Tensor, program: Program, analysis: bool, levels: int) -> bool:
    """A ``levels``-level 2D transform over the last two dims from ``src`` into ``dst`` (same
    shape; may be the same tensor), in Mallat layout like the engine's. The analysis lifts
    along width then height at each level, the synthesis undoes it (the two axes of a level
    commute, so this is the engine's transform up to rounding). False where the kernel does
    not apply (as for :func:`level_`, planes too big for the cache, or planes whose rows are
    strided, as a channels-last tensor's: there the per-axis kernel reads whole lines)."""
    if not usable(src, dst) or src.dim() < 2 or src.stride(-1) != 1 or dst.stride(-1) != 1:
        return False
    h, w = src.shape[-2:]
    if h * w * element_bytes(src.dtype) > BUFFER_BYTES:
        return False
    strides = (src.stride(), dst.stride())
    outer = single(merged_dims(src.shape[:-2], [st[:-2] for st in strides]))
    if outer is None:
        return False
    src_st, dst_st = _strides(outer[1], [st[-2:] for st in strides])
    kinds, coefs = program_arrays(program, DTYPES[src.dtype][1])
    args = (memory(src), src_st, memory(dst), dst_st, h, w, kinds, coefs, analysis)
    launch(_compiled("_planes", src.dtype), args, outer[0], src.numel(), levels)
    return True
