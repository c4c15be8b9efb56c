"""The lifting engine behind :mod:`harness.wavelets`: T.800 lifting steps applied in place,
the Mallat recursion over one buffer, and the autograd functions (the transpose transform as
backward). Private to the package; the public transforms are in ``harness.wavelets``.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from harness.errors import HarnessError
from harness.wavelets import cpu, volume

WAVELETS = ("haar", "5/3", "9/7")

# ITU-T T.800 Table F.4 (irreversible 9/7 lifting parameters).
ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
K = 1.230174104914001

Highs2D = tuple[Tensor, Tensor, Tensor]


class WaveletError(HarnessError, ValueError):
    """Invalid wavelet name, level count or band shapes."""


class WaveletTypeError(HarnessError, TypeError):
    """A tensor that is not floating point was given to a transform."""


# --------------------------------------------------------------------------- checks


def check_wavelet(wavelet: str) -> None:
    if wavelet not in WAVELETS:
        raise WaveletError(
            f"unknown wavelet {wavelet!r}; valid wavelets are {', '.join(map(repr, WAVELETS))}"
        )


def check_float(*tensors: Tensor) -> None:
    for t in tensors:
        if not isinstance(t, Tensor):
            raise WaveletTypeError(f"expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise WaveletTypeError(
                f"wavelet transforms need a floating-point tensor, got dtype {t.dtype}; "
                "convert first, e.g. x.float()"
            )


def norm_dim(dim: int, ndim: int) -> int:
    if not -ndim <= dim < ndim:
        raise WaveletError(f"dim {dim} is out of range for a {ndim}-D tensor")
    return dim % ndim


def check_levels(levels: int, what: str) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise WaveletError(f"{what} must be an integer >= 1, got {levels!r}")


def min_size(levels: int) -> int:
    """Smallest length on which ``levels`` decompositions all yield a non-empty high band."""
    return 2 ** (levels - 1) + 1


def check_size(n: int, levels: int, what: str, strict: bool) -> None:
    if n < 1:
        raise WaveletError(f"cannot transform an empty {what} (size 0)")
    if strict and n < min_size(levels):
        raise WaveletError(
            f"{levels} level(s) need a {what} of at least {min_size(levels)} samples, got {n}; "
            "use fewer levels (or strict=False to let short axes pass through)"
        )


# --------------------------------------------------------------------------- lifting programs
#
# A transform along one axis is a program: a list of steps (their kinds are
# defined in harness.wavelets.cpu) on a buffer split ``[even | odd]``. T.800
# gives the analysis; the synthesis runs the inverse steps in reverse order, and
# autograd needs the transposes of both, because the biorthogonal transforms are
# not orthogonal: the gradient of the analysis is its adjoint ("forward_t"), not
# the inverse, and likewise for the synthesis ("inverse_t").



_ANALYSIS: dict[str, cpu.Program] = {
    "haar": ((cpu.HAAR_PREDICT, -1.0), (cpu.HAAR_UPDATE, 0.5)),
    "5/3": ((cpu.PREDICT, -0.5), (cpu.UPDATE, 0.25)),  # T.800 eq. F-5/F-6 without rounding
    "9/7": (
        (cpu.PREDICT, ALPHA), (cpu.UPDATE, BETA), (cpu.PREDICT, GAMMA), (cpu.UPDATE, DELTA),
        (cpu.SCALE_EVEN, 1.0 / K), (cpu.SCALE_ODD, K),
    ),
}
_TRANSPOSED = {
    cpu.PREDICT: cpu.PREDICT_T, cpu.PREDICT_T: cpu.PREDICT,
    cpu.UPDATE: cpu.UPDATE_T, cpu.UPDATE_T: cpu.UPDATE,
    cpu.HAAR_PREDICT: cpu.HAAR_UPDATE, cpu.HAAR_UPDATE: cpu.HAAR_PREDICT,
    cpu.SCALE_EVEN: cpu.SCALE_EVEN, cpu.SCALE_ODD: cpu.SCALE_ODD,
}
_SCALES = (cpu.SCALE_EVEN, cpu.SCALE_ODD)

# Modes: "forward" is the analysis, "inverse" the synthesis, "forward_t" and
# "inverse_t" their transposes. Analysis modes deinterleave their input, then run
# their program; the others run their program, then interleave.
_ANALYSIS_MODES = ("forward", "inverse_t")


def _inverse(steps: cpu.Program) -> cpu.Program:
    return tuple((k, 1.0 / c if k in _SCALES else -c) for k, c in reversed(steps))


def _transpose(steps: cpu.Program) -> cpu.Program:
    return tuple((_TRANSPOSED[k], c) for k, c in reversed(steps))


@functools.cache
def program(wavelet: str, mode: str) -> cpu.Program:
    """The lifting steps of ``wavelet`` in ``mode`` (see the modes above)."""
    steps = _ANALYSIS[wavelet]
    if mode in ("inverse", "inverse_t"):
        steps = _inverse(steps)
    return _transpose(steps) if mode.endswith("_t") else steps


# --------------------------------------------------------------------------- torch steps
#
# The device-agnostic path: each step is a few in-place adds on narrowed views
# of a buffer in Mallat layout (along a transformed dim the low band's samples
# come first, then the high band's). In-place adds need no saved tensors, and a
# whole multi-level 3D transform needs two full-size allocations.


def _axpy_(y: Tensor, x: Tensor, c: float) -> None:
    """y += c * x. Under :func:`harness.wavelets.portable` as two correctly rounded ops:
    ``add_(x, alpha=c)`` is a fused multiply-add on some CPUs and GPUs and not on
    others, so its last bit depends on the machine."""
    if cpu.portable_active():
        y.add_(x * c)
    else:
        y.add_(x, alpha=c)


def _predict_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    nd, ns = odd.shape[dim], even.shape[dim]
    _axpy_(odd, even.narrow(dim, 0, nd), c)
    inner = min(nd, ns - 1)
    if inner:
        _axpy_(odd.narrow(dim, 0, inner), even.narrow(dim, 1, inner), c)
    if inner < nd:  # even length: even[nd] mirrors to even[nd-2] = even position nd-1
        _axpy_(odd.narrow(dim, nd - 1, 1), even.narrow(dim, ns - 1, 1), c)


def _update_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    ns, nd = even.shape[dim], odd.shape[dim]
    _axpy_(even.narrow(dim, 0, nd), odd, c)
    if ns > nd:  # odd length: odd[nd] mirrors to odd[nd-1]
        _axpy_(even.narrow(dim, nd, 1), odd.narrow(dim, nd - 1, 1), c)
    _axpy_(even.narrow(dim, 1, ns - 1), odd.narrow(dim, 0, ns - 1), c)
    _axpy_(even.narrow(dim, 0, 1), odd.narrow(dim, 0, 1), c)  # odd[-1] mirrors to odd[0]


def _predict_t_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    nd, ns = odd.shape[dim], even.shape[dim]
    _axpy_(even.narrow(dim, 0, nd), odd, c)
    inner = min(nd, ns - 1)
    if inner:
        _axpy_(even.narrow(dim, 1, inner), odd.narrow(dim, 0, inner), c)
    if inner < nd:
        _axpy_(even.narrow(dim, ns - 1, 1), odd.narrow(dim, nd - 1, 1), c)


def _update_t_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    ns, nd = even.shape[dim], odd.shape[dim]
    _axpy_(odd, even.narrow(dim, 0, nd), c)
    if ns > nd:
        _axpy_(odd.narrow(dim, nd - 1, 1), even.narrow(dim, nd, 1), c)
    _axpy_(odd.narrow(dim, 0, ns - 1), even.narrow(dim, 1, ns - 1), c)
    _axpy_(odd.narrow(dim, 0, 1), even.narrow(dim, 0, 1), c)


def _haar_predict_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    _axpy_(odd, even.narrow(dim, 0, odd.shape[dim]), c)


def _haar_update_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    _axpy_(even.narrow(dim, 0, odd.shape[dim]), odd, c)


def _scale_even_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    even.mul_(c)


def _scale_odd_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    odd.mul_(c)


_TORCH_STEPS = {
    cpu.PREDICT: _predict_,
    cpu.UPDATE: _update_,
    cpu.PREDICT_T: _predict_t_,
    cpu.UPDATE_T: _update_t_,
    cpu.HAAR_PREDICT: _haar_predict_,
    cpu.HAAR_UPDATE: _haar_update_,
    cpu.SCALE_EVEN: _scale_even_,
    cpu.SCALE_ODD: _scale_odd_,
}


def _lift_(buf: Tensor, dim: int, steps: cpu.Program) -> None:
    """Run ``steps`` in place on a buffer split ``[even | odd]`` along ``dim``."""
    n = buf.shape[dim]
    ns = (n + 1) // 2
    if n == ns:  # a single sample passes through (T.800 F.3.7)
        return
    even, odd = buf.narrow(dim, 0, ns), buf.narrow(dim, ns, n - ns)
    for kind, c in steps:
        _TORCH_STEPS[kind](even, odd, c, dim)


def _strided(dim: int, start: int) -> tuple[slice, ...]:
    return (slice(None),) * dim + (slice(start, None, 2),)


def _split_into(src: Tensor, dim: int, dst: Tensor) -> None:
    """Deinterleave ``src`` along ``dim`` into ``dst`` as ``[even | odd]``."""
    ns = (src.shape[dim] + 1) // 2
    dst.narrow(dim, 0, ns).copy_(src[_strided(dim, 0)])
    dst.narrow(dim, ns, src.shape[dim] - ns).copy_(src[_strided(dim, 1)])


def _merge_into(src: Tensor, dim: int, dst: Tensor) -> None:
    """Interleave ``src`` (``[even | odd]`` along ``dim``) into ``dst``."""
    ns = (src.shape[dim] + 1) // 2
    dst[_strided(dim, 0)] = src.narrow(dim, 0, ns)
    dst[_strided(dim, 1)] = src.narrow(dim, ns, src.shape[dim] - ns)


def _step(src: Tensor, dim: int, dst: Tensor, wavelet: str, mode: str) -> None:
    """One level along ``dim`` from ``src`` into ``dst``: analysis modes deinterleave and
    lift, synthesis modes lift and interleave. ``src`` may be overwritten. On the CPU the
    compiled kernel does it in one pass; elsewhere (and for other dtypes) torch ops do."""
    steps = program(wavelet, mode)
    analysis = mode in _ANALYSIS_MODES
    if cpu.level_(src, dst, dim, steps, analysis):
        return
    if analysis:
        _split_into(src, dim, dst)
        _lift_(dst, dim, steps)
    else:
        _lift_(src, dim, steps)
        _merge_into(src, dim, dst)


# --------------------------------------------------------------------------- Mallat engine

# A plan is a sequence of groups ``(dims, levels)``: each level of a group
# transforms the current low region along every dim of the group in turn. Later
# groups act on the whole buffer, i.e. on every band of the earlier groups (the
# 3D transform: channel group first, then the spatial group on all channel bands).
Plan = Sequence[tuple[tuple[int, ...], int]]
Spans = dict[int, tuple[int, int]]  # dim -> (start, stop) of a band in a Mallat buffer


def _sizes(n: int, levels: int) -> list[int]:
    """Low-band length before level 1, after level 1, ..., after ``levels``."""
    sizes = [n]
    for _ in range(levels):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _region(buf: Tensor, dims: Sequence[int], size: dict[int, int]) -> Tensor:
    for d in dims:
        buf = buf.narrow(d, 0, size[d])
    return buf


_WORKSPACE = threading.local()


def _workspace(device: torch.device, dtype: torch.dtype, numel: int) -> Tensor:
    """A flat buffer for temporaries that never leave a transform.

    On the CPU it is kept per thread and dtype between calls: a fresh tensor of
    tens of MB is page-faulted in by the OS on first touch, which costs more
    than the lifting itself. CUDA's caching allocator already recycles memory.
    """
    if device.type != "cpu":
        return torch.empty(numel, device=device, dtype=dtype)
    cache = _WORKSPACE.__dict__.setdefault("buffers", {})
    flat = cache.get(dtype)
    if flat is None or flat.numel() < numel:
        with torch.inference_mode(False):  # an inference tensor would be read-only outside
            flat = torch.empty(numel, device=device, dtype=dtype)
        cache[dtype] = flat
    return flat.narrow(0, 0, numel)


def release_workspace() -> None:
    """Free this thread's workspaces: between the phases of a coding (g_a, the entropy model,
    g_s), whose transforms' sizes differ, so that one phase's does not sit beside the next's."""
    _WORKSPACE.__dict__.pop("buffers", None)


# Memory order: an analysis's buffer, and so its bands, takes its input's, and a synthesis's
# result the one its caller asks for (the default layout unless told): a bf16 3DM-WeConv layer
# keeps its tensors channels-last, which its convolutions (and the kernels' folding, cpu._fold)
# want, while the entropy model's y_hat stays in the default layout that g_s's fp32 kernels, and
# so their roundings, have always had. Scratch takes the order of the region it stands for, so
# that the two fold together.
Order = Sequence[int]  # a tensor's dims from the outermost in memory


def format_order(memory_format: torch.memory_format, ndim: int) -> list[int]:
    """The order of ``memory_format`` for a tensor of ``ndim`` dims (channels-last: 4 dims)."""
    if memory_format == torch.contiguous_format:
        return list(range(ndim))
    if memory_format == torch.channels_last and ndim == 4:
        return [0, 2, 3, 1]
    raise WaveletError(f"bands cannot be laid out as {memory_format} in {ndim} dims (contiguous_format, or "
                       "channels_last in 4)")


def _in_order(flat: Tensor, shape: Sequence[int], order: Order) -> Tensor:
    """The first elements of the 1D ``flat`` as a tensor of ``shape`` laid out in ``order``."""
    held = flat.view([shape[d] for d in order])
    return held.permute([list(order).index(d) for d in range(len(order))])


def _empty(shape: Sequence[int], order: Order, like: Tensor, dtype: torch.dtype) -> Tensor:
    """A new tensor of ``shape`` in ``order``, on ``like``'s device."""
    return _in_order(like.new_empty(math.prod(shape), dtype=dtype), shape, order)


def _flat(t: Tensor, order: Order) -> Tensor:
    """The memory of a tensor made by :func:`_empty` in ``order``, as 1D."""
    return t.permute(list(order)).view(-1)


class _Scratch:
    """One flat buffer for the temporaries of a transform: ``flat``, or else the workspace
    (taken on first use)."""

    def __init__(self, like: Tensor, flat: Tensor | None = None) -> None:
        self._like = like
        self._flat = flat

    def like(self, t: Tensor) -> Tensor:
        if self._flat is None:
            self._flat = _workspace(self._like.device, self._like.dtype, self._like.numel())
        return _in_order(self._flat.narrow(0, 0, t.numel()), t.shape, cpu.memory_order(t))


def _plane_levels(src: Tensor, dst: Tensor, dims: Sequence[int], levels: int, wavelet: str, mode: str) -> bool:
    """All levels of a group over the last two dims by the CPU plane kernel, from ``src``
    into ``dst`` (full buffers; may be the same); False where it does not apply."""
    if tuple(dims) != (src.dim() - 2, src.dim() - 1):
        return False
    return cpu.plane_levels_(src, dst, program(wavelet, mode), mode in _ANALYSIS_MODES, levels)


def _volume(sources: Sequence[tuple[Tensor, Spans]], dst: Tensor, plan: Plan, wavelet: str, mode: str) -> bool:
    """A plan of one channel level and a spatial group over the last two dims, whole, by the
    CPU volume kernel into ``dst`` (see :func:`volume.volume_` for ``sources``); False where it
    does not apply."""
    if len(plan) != 2:
        return False
    (cdims, clevels), (sdims, slevels) = plan
    if len(cdims) != 1 or clevels != 1 or tuple(sdims) != (dst.dim() - 2, dst.dim() - 1):
        return False
    return volume.volume_(sources, dst, cdims[0], program(wavelet, mode), mode in _ANALYSIS_MODES, slevels)


def _group_level(
    src: Tensor, region: Tensor, dims: Sequence[int], scratch: _Scratch, wavelet: str, mode: str
) -> Tensor:
    """One level of a group of ``dims`` from ``src`` towards ``region`` (``src`` may be
    ``region``); returns the buffer that holds the result: ``region``, or the scratch
    buffer when the level took an odd number of steps into it."""
    analysis = mode in _ANALYSIS_MODES
    cur = src
    for i, d in enumerate(dims if analysis else tuple(reversed(dims))):
        # alternate buffers so that the last dim lands in ``region``
        dst = region if (len(dims) - i) % 2 == 1 else scratch.like(region)
        if dst is cur:
            dst = scratch.like(region)
        _step(cur, d, dst, wavelet, mode)
        cur = dst
    return cur


def _analysis(x: Tensor, wavelet: str, plan: Plan, mode: str = "forward") -> Tensor:
    """Forward transform of ``x`` by ``plan`` (or, with ``mode="inverse_t"``, the
    transpose of the synthesis); returns a new buffer in Mallat layout, in ``x``'s memory order."""
    out = _empty(x.shape, cpu.memory_order(x), x, x.dtype)
    if _volume([(x, {})], out, plan, wavelet, mode):
        return out
    scratch = _Scratch(out)
    src: Tensor | None = x  # the input is read once, by the first split
    for dims, levels in plan:
        if _plane_levels(out if src is None else src, out, dims, levels, wavelet, mode):
            src = None
            continue
        sizes = {d: _sizes(x.shape[d], levels) for d in dims}
        for level in range(levels):
            region = _region(out, dims, {d: sizes[d][level] for d in dims})
            cur = _group_level(region if src is None else src, region, dims, scratch, wavelet, mode)
            if cur is not region:
                region.copy_(cur)
            src = None
    return out


def _synthesis(
    bands: Sequence[Tensor | None],
    spans: Sequence[Spans],
    shape: Sequence[int],
    wavelet: str,
    plan: Plan,
    mode: str = "inverse",
    order: Order | None = None,
) -> Tensor:
    """Inverse of :func:`_analysis` (or, with ``mode="forward_t"``, its transpose)
    of bands placed at ``spans`` in a Mallat buffer of ``shape``; returns a new tensor laid
    out in ``order`` (by default, the default layout)."""
    order = list(range(len(shape))) if order is None else order
    like = next(b for b in bands if b is not None)
    dtype = _bands_dtype(bands, like)
    placed = _placed(bands, spans, shape, like, dtype)
    # The outermost level ends in the scratch buffer when its group has an odd
    # number of dims, so then the workspace holds the bands and the scratch is
    # the fresh result (and the other way round otherwise).
    if len(plan[0][0]) % 2 == 1:
        out = _empty(shape, order, like, dtype)
        if _volume(placed, out, plan, wavelet, mode):  # reads the bands where they are
            return out
        buf = _in_order(_workspace(like.device, dtype, math.prod(shape)), shape, order)
        scratch = _Scratch(buf, _flat(out, order))
    else:
        buf = _empty(shape, order, like, dtype)
        scratch = _Scratch(buf)
    for band, span in placed:
        _band(buf, span).copy_(band)
    spare: Tensor | None = None
    groups = list(plan)
    for g in range(len(groups) - 1, -1, -1):
        dims, levels = groups[g]
        if _plane_levels(buf, buf, dims, levels, wavelet, mode):
            continue
        sizes = {d: _sizes(buf.shape[d], levels) for d in dims}
        for level in range(levels - 1, -1, -1):
            region = _region(buf, dims, {d: sizes[d][level] for d in dims})
            cur = _group_level(region, region, dims, scratch, wavelet, mode)
            if cur is not region:
                if g == 0 and level == 0:  # the outermost level: its buffer is the result
                    spare = cur
                else:
                    region.copy_(cur)
    return buf if spare is None else spare


def _band(buf: Tensor, spans: dict[int, tuple[int, int]]) -> Tensor:
    for d, (start, stop) in spans.items():
        buf = buf.narrow(d, start, stop - start)
    return buf


def band_spans(n: int, levels: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Positions in a Mallat buffer of the final low band and of each level's high band."""
    sizes = _sizes(n, levels)
    return (0, sizes[-1]), [(sizes[lv + 1], sizes[lv]) for lv in range(levels)]


def _bands_dtype(bands: Sequence[Tensor | None], like: Tensor) -> torch.dtype:
    present = [b for b in bands if b is not None]
    check_float(*present)
    dtype = like.dtype
    for band in present:
        if band.device != like.device:
            raise WaveletError(f"bands are on different devices: {like.device} and {band.device}")
        dtype = torch.promote_types(dtype, band.dtype)
    return dtype


def _placed(
    bands: Sequence[Tensor | None], spans: Sequence[Spans], shape: Sequence[int], like: Tensor, dtype: torch.dtype
) -> list[tuple[Tensor, Spans]]:
    """Each band with its spans in a Mallat buffer of ``shape``, after checking its shape;
    as ``dtype``, and ``None`` bands as zeros on ``like``'s device (broadcast, without memory)."""
    placed = []
    for band, span in zip(bands, spans):
        want = tuple(span[d][1] - span[d][0] if d in span else shape[d] for d in range(len(shape)))
        if band is None:
            band = torch.zeros((), device=like.device, dtype=dtype).expand(want)
        elif tuple(band.shape) != want:
            raise WaveletError(
                f"bands do not fit together: a band of shape {tuple(band.shape)} where "
                f"{want} is expected for a signal of shape {tuple(shape)}"
            )
        placed.append((band.to(dtype), span))
    return placed


class Analysis(torch.autograd.Function):
    """Analysis by ``plan``; its backward is the transposed transform (same cost)."""

    @staticmethod
    def forward(ctx, x: Tensor, wavelet: str, plan: Plan, spans: Sequence[Spans]):
        ctx.meta = (wavelet, plan, spans, tuple(x.shape), cpu.memory_order(x))
        buf = _analysis(x, wavelet, plan)
        return tuple(_band(buf, span) for span in spans)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor | None):
        wavelet, plan, spans, shape, order = ctx.meta  # the gradient in the input's layout
        return _synthesis(grads, spans, shape, wavelet, plan, "forward_t", order), None, None, None


class Synthesis(torch.autograd.Function):
    """Synthesis of bands placed by ``spans``, laid out in ``order`` (None: the default
    layout); backward is its transpose."""

    @staticmethod
    def forward(ctx, wavelet: str, plan: Plan, spans: Sequence[Spans], shape, order: Order | None, *bands: Tensor):
        ctx.meta = (wavelet, plan, spans, [b.dtype for b in bands])
        return _synthesis(bands, spans, shape, wavelet, plan, order=order)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        wavelet, plan, spans, dtypes = ctx.meta
        g = _analysis(grad, wavelet, plan, "inverse_t")
        return (None,) * 5 + tuple(_band(g, sp).to(dt) for sp, dt in zip(spans, dtypes))
