"""The one-pass 3D kernel of :mod:`harness.wavelets`: ``dwt3``/``idwt3`` of one channel level.

The per-axis kernels of :mod:`harness.wavelets.cpu` would read and write the tensor once for
the channel level and once for the 2D levels (and the synthesis would first copy the bands
into a work buffer). Here the channel lifting streams through a ring of planes that stays in
cache: each lifting step trails the one before it by one sample, so as soon as a plane is
final it gets every 2D level (:func:`harness.wavelets.cpu.plane_analysis`) and is written
out. An analysis reads each input sample once and writes each coefficient once; a synthesis
reads every band where it is, in any layout, and writes each output sample once. The
arithmetic is that of the per-axis kernels, step for step, so the values are the same.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numba
import numpy as np
import torch
from torch import Tensor

from harness.kernels import jit, launch, memory
from harness.wavelets.cpu import (
    BUFFER_BYTES,
    DTYPES,
    Program,
    array_type,
    copy_block,
    element_bytes,
    lift,
    merged_dims,
    plane_analysis,
    program_arrays,
    signature,
    single,
    synthesize,
    targets,
    usable,
    widen,
)


@jit()
def _advance(buf, ns, nd, kinds, coefs, width, mask, odd, done, loaded, n):
    """Run every step of the program as far as the first ``loaded`` of ``n`` samples
    (interleaved positions) allow, a wavefront: a step reads its neighbours at distance one,
    so each step trails the one before it by one position until all ``n`` are loaded.
    ``done[s]`` is the position up to which step s has run. Returns the position below which
    every sample is final."""
    f = loaded
    for s in range(kinds.shape[0]):
        if f < n:
            f = max(f - 1, 0)
        count, parity = targets(kinds[s], ns, nd)
        if parity == 1:
            k0, k1 = done[s] // 2, min(f // 2, count)
        else:
            k0, k1 = (done[s] + 1) // 2, min((f + 1) // 2, count)
        if nd > 0 and k1 > k0:
            lift(buf, kinds[s], coefs[s], k0, k1, ns, nd, mask, odd, width)
        done[s] = f
    return f


@jit()
def _gather(srcs, table, parity, p, ch, target):
    """Plane ``ch`` at index ``p`` of every band in ``srcs`` on the ``parity`` side of the
    channel transform, copied into its place in ``target`` (h x w). Row i of ``table``
    describes ``srcs[i]``: its parity, the first row and column of its place, its height
    and width, and its element strides along P, channels, height and width."""
    for i in range(table.shape[0]):
        if table[i, 0] != parity:
            continue
        src = srcs[i]
        r0, c0, hb, wb, s_h, s_w = table[i, 1], table[i, 2], table[i, 3], table[i, 4], table[i, 7], table[i, 8]
        at = p * table[i, 5] + ch * table[i, 6]
        for r in range(hb):
            line, row = src[at + r * s_h :], target[r0 + r, c0:]
            if s_w == 1:  # unit stride spelled out, so that the compiler vectorises it
                for j in range(wb):
                    row[j] = widen(line[j])
            else:
                for j in range(wb):
                    row[j] = widen(line[j * s_w])


def _volume(srcs, table, dst, dst_strides, c, h, w, kinds, coefs, analysis, start, stop, levels, chunk):
    """Items ``start:stop`` of a 3D transform: one level along channels and ``levels`` 2D
    levels over every plane, each sample read once and written once. ``dst`` is a flat array
    holding a (P, c, h, w) tensor with the given element strides; an analysis reads such a
    tensor, the one entry of ``srcs``, and a synthesis reads the bands in ``srcs`` (placed by
    ``table``, see :func:`_gather`). An item is ``chunk`` channel pairs at one index of P.

    The channel lifting streams through a ring of planes in cache (:func:`_advance`): an
    analysis loads the planes of a channel pair, and each plane that comes out final is
    transformed in 2D and written; a synthesis loads the 2D synthesis of a pair of band
    planes and writes each final plane. An item starts and stops ``kinds.shape[0]`` pairs
    beyond its own (clipped to the signal), so that the samples it writes are computed as
    from the whole signal."""
    ns_c = (c + 1) // 2
    nd_c = c - ns_c
    steps = kinds.shape[0]
    ring = 1
    while 2 * ring <= steps + 2:  # every sample still needed stays in the ring
        ring *= 2
    plane = h * w
    buf = np.empty((2 * ring, plane), dtype=coefs.dtype)
    flat = buf.reshape(2 * ring * plane)
    rows = np.empty((h, w), dtype=coefs.dtype)
    cols = np.empty((w, h), dtype=coefs.dtype)
    done = np.zeros(steps, dtype=np.int64)
    chunks = (ns_c + chunk - 1) // chunk
    mask = ring - 1
    for item in range(start, stop):
        p = item // chunks
        k0 = (item % chunks) * chunk
        k1 = min(ns_c, k0 + chunk)
        j0, j1 = max(0, k0 - steps), min(ns_c, k1 + steps)
        ns, nd = j1 - j0, min(nd_c, j1) - j0
        n = ns + nd
        d_p = p * dst_strides[0]
        done[:] = 0
        final = 0
        for m in range(ns):
            for parity in range(2 if m < nd else 1):
                row = parity * ring + (m & mask)
                if analysis:
                    _gather(srcs, table, 0, p, 2 * (j0 + m) + parity, buf[row].reshape((h, w)))
                else:
                    _gather(srcs, table, parity, p, j0 + m, rows)
                    synthesize(rows, cols, flat, row * plane, w, 1, h, w, kinds, coefs, levels)
            ready = _advance(buf, ns, nd, kinds, coefs, plane, mask, ring, done, min(n, 2 * m + 2), n)
            for t in range(final, ready):
                k, parity = j0 + t // 2, t % 2
                if k < k0 or k >= k1:
                    continue
                row = parity * ring + ((t // 2) & mask)
                if analysis:
                    at = d_p + (k + parity * ns_c) * dst_strides[1]
                    plane_analysis(
                        flat, row * plane, w, 1, dst, at, dst_strides[2], dst_strides[3],
                        h, w, rows, cols, kinds, coefs, levels,
                    )
                else:
                    at = d_p + (2 * k + parity) * dst_strides[1]
                    source = buf[row].reshape((h, w))
                    copy_block(dst, at, dst_strides[2], dst_strides[3], source, 0, w, 0, False, False)
            final = ready


# The bands a kernel call reads, as a tuple of this many arrays (empty ones after the bands):
# a synthesis of one channel level and 4 2D levels reads 2 * (3 * 4 + 1) = 26. A tuple, not a
# numba typed list: building one from Python compiles numba's list helpers in every process
# (0.28 s of each `harness compress` and `decompress`); a tuple's type is fixed and cached.
_SOURCES = 32


@functools.cache
def _compiled(dtype: torch.dtype):
    """:func:`_volume` compiled for one dtype on first use (cached on disk where
    :func:`harness.kernels.jit` can); strides are arguments, so one compilation serves
    every layout."""
    t, i64 = array_type(DTYPES[dtype][0]), numba.int64
    # the bands, their table, dst, its strides, c, h, w; the level count and the chunk
    head = (numba.types.UniTuple(t, _SOURCES), i64[:, ::1], t, i64[::1], i64, i64, i64)
    return jit([signature(dtype, head, 2)])(_volume)


def volume_(
    sources: Sequence[tuple[Tensor, dict[int, tuple[int, int]]]],
    dst: Tensor,
    cdim: int,
    program: Program,
    analysis: bool,
    levels: int,
) -> bool:
    """The 3D transform of one channel level along ``cdim`` and ``levels`` 2D levels over
    the last two dims into ``dst``, in one pass over memory. An analysis reads one tensor of
    ``dst``'s shape (``sources = [(x, {})]``) and writes Mallat layout; a synthesis reads the
    bands where they are, each placed by its spans (``{cdim: ..., hdim: ..., wdim: ...}``
    in the Mallat layout of ``dst``'s shape), and writes the signal. The analysis lifts along
    channels and then in 2D, the synthesis undoes it in reverse: the same arithmetic as
    :func:`cpu.level_` and :func:`cpu.plane_levels_`. False where the kernel does not apply
    (as for :func:`cpu.plane_levels_`, dims between ``cdim`` and the planes, or more than
    :data:`_SOURCES` bands)."""
    sources = [(t, spans) for t, spans in sources if t.numel() > 0]  # an empty band adds nothing
    tensors = [t for t, _ in sources]
    if not 0 < len(tensors) <= _SOURCES or not all(usable(t, dst) for t in tensors) or dst.dim() < 3 \
            or cdim >= dst.dim() - 2:
        return False
    h, w = dst.shape[-2:]
    if math.prod(dst.shape[cdim + 1 : -2]) != 1 or h * w * element_bytes(dst.dtype) > BUFFER_BYTES:
        return False
    strides = [dst.stride()] + [t.stride() for t in tensors]
    folded = single(merged_dims(dst.shape[:cdim], [st[:cdim] for st in strides]), len(strides))
    if folded is None:
        return False
    (p, outer), hdim, wdim = folded, dst.dim() - 2, dst.dim() - 1
    table = np.array(
        [
            [
                int(spans.get(cdim, (0, 0))[0] > 0), spans.get(hdim, (0, 0))[0], spans.get(wdim, (0, 0))[0],
                t.shape[hdim], t.shape[wdim], outer[k + 1], t.stride(cdim), t.stride(hdim), t.stride(wdim),
            ]
            for k, (t, spans) in enumerate(sources)
        ],
        dtype=np.int64,
    ).reshape(-1, 9)
    unused = np.empty(0, dtype=DTYPES[dst.dtype][0])
    srcs = tuple(memory(t) for t in tensors) + (unused,) * (_SOURCES - len(tensors))
    dst_st = np.array([outer[0], dst.stride(cdim), dst.stride(hdim), dst.stride(wdim)], dtype=np.int64)
    c = dst.shape[cdim]
    pairs = (c + 1) // 2
    # Enough items for every thread; an item recomputes len(program) pairs at each end.
    chunk = max(len(program), math.ceil(pairs / math.ceil(torch.get_num_threads() / p)))
    kinds, coefs = program_arrays(program, DTYPES[dst.dtype][1])
    args = (srcs, table, memory(dst), dst_st, c, h, w, kinds, coefs, analysis)
    launch(_compiled(dst.dtype), args, p * math.ceil(pairs / chunk), dst.numel(), levels, chunk)
    return True
