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

WAVELETS = ("haar", "5/3", "9/7")

# ITU-T T.800 Table F.4 (irreversible 9/7 lifting parameters).
ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
K = 1.230174104914001

# (is_predict, coefficient) per lifting step; predict steps update the odd
# (high) samples from their even neighbours, update steps the even (low) ones.
_LIFTING: dict[str, tuple[tuple[tuple[bool, float], ...], float]] = {
    "5/3": (((True, -0.5), (False, 0.25)), 1.0),
    "9/7": (((True, ALPHA), (False, BETA), (True, GAMMA), (False, DELTA)), K),
}

Highs2D = tuple[Tensor, Tensor, Tensor]


class WaveletError(HarnessError, ValueError):
    """Invalid wavelet name, level count or band shapes."""


class WaveletTypeError(HarnessError, TypeError):
    """A tensor that is not floating point was given to a transform."""


# --------------------------------------------------------------------------- checks


def _check_wavelet(wavelet: str) -> None:
    if wavelet not in WAVELETS:
        raise WaveletError(
            f"unknown wavelet {wavelet!r}; valid wavelets are {', '.join(map(repr, WAVELETS))}"
        )


def _check_float(*tensors: Tensor) -> None:
    for t in tensors:
        if not isinstance(t, Tensor):
            raise WaveletTypeError(f"expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise WaveletTypeError(
                f"wavelet transforms need a floating-point tensor, got dtype {t.dtype}; "
                "convert first, e.g. x.float()"
            )


def _norm_dim(dim: int, ndim: int) -> int:
    if not -ndim <= dim < ndim:
        raise WaveletError(f"dim {dim} is out of range for a {ndim}-D tensor")
    return dim % ndim


def _check_levels(levels: int, what: str) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise WaveletError(f"{what} must be an integer >= 1, got {levels!r}")


def min_size(levels: int) -> int:
    """Smallest length on which ``levels`` decompositions all yield a non-empty high band."""
    return 2 ** (levels - 1) + 1


def _check_size(n: int, levels: int, what: str, strict: bool) -> None:
    if n < 1:
        raise WaveletError(f"cannot transform an empty {what} (size 0)")
    if strict and n < min_size(levels):
        raise WaveletError(
            f"{levels} level(s) need a {what} of at least {min_size(levels)} samples, got {n}; "
            "use fewer levels (or strict=False to let short axes pass through)"
        )


# --------------------------------------------------------------------------- lifting kernels
#
# The transforms work on buffers in Mallat layout: along a transformed dim the
# low band's samples come first, then the high band's. Lifting steps update one
# half of such a buffer in place from the other half, so a whole multi-level 3D
# transform needs two full-size allocations. Large fresh CPU allocations are
# page-faulted in by the kernel and cost more than the arithmetic, and in-place
# adds need no saved tensors, so autograd still differentiates through them.


def _predict_(odd: Tensor, even: Tensor, c: float, dim: int) -> None:
    """``odd[k] += c * (even[k] + even[k+1])``, whole-sample symmetric at the right end."""
    nd, ns = odd.shape[dim], even.shape[dim]
    odd.add_(even.narrow(dim, 0, nd), alpha=c)
    inner = min(nd, ns - 1)
    if inner:
        odd.narrow(dim, 0, inner).add_(even.narrow(dim, 1, inner), alpha=c)
    if inner < nd:  # even length: even[nd] mirrors to even[nd-2] = even position nd-1
        odd.narrow(dim, nd - 1, 1).add_(even.narrow(dim, ns - 1, 1), alpha=c)


def _update_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    """``even[k] += c * (odd[k-1] + odd[k])``, whole-sample symmetric at both ends."""
    ns, nd = even.shape[dim], odd.shape[dim]
    even.narrow(dim, 0, nd).add_(odd, alpha=c)
    if ns > nd:  # odd length: odd[nd] mirrors to odd[nd-1]
        even.narrow(dim, nd, 1).add_(odd.narrow(dim, nd - 1, 1), alpha=c)
    even.narrow(dim, 1, ns - 1).add_(odd.narrow(dim, 0, ns - 1), alpha=c)
    even.narrow(dim, 0, 1).add_(odd.narrow(dim, 0, 1), alpha=c)  # odd[-1] mirrors to odd[0]


def _predict_t_(even: Tensor, odd: Tensor, c: float, dim: int) -> None:
    """Transpose of :func:`_predict_`: ``even += c * A^T odd`` (for the adjoint)."""
    nd, ns = odd.shape[dim], even.shape[dim]
    even.narrow(dim, 0, nd).add_(odd, alpha=c)
    inner = min(nd, ns - 1)
    if inner:
        even.narrow(dim, 1, inner).add_(odd.narrow(dim, 0, inner), alpha=c)
    if inner < nd:
        even.narrow(dim, ns - 1, 1).add_(odd.narrow(dim, nd - 1, 1), alpha=c)


def _update_t_(odd: Tensor, even: Tensor, c: float, dim: int) -> None:
    """Transpose of :func:`_update_`: ``odd += c * B^T even`` (for the adjoint)."""
    ns, nd = even.shape[dim], odd.shape[dim]
    odd.add_(even.narrow(dim, 0, nd), alpha=c)
    if ns > nd:
        odd.narrow(dim, nd - 1, 1).add_(even.narrow(dim, nd, 1), alpha=c)
    odd.narrow(dim, 0, ns - 1).add_(even.narrow(dim, 1, ns - 1), alpha=c)
    odd.narrow(dim, 0, 1).add_(even.narrow(dim, 0, 1), alpha=c)


# Lifting modes: the analysis ("forward"), the synthesis ("inverse"), and their
# transposes, which autograd needs because the biorthogonal transforms are not
# orthogonal: the gradient of the analysis is the adjoint ("forward_t"), not the
# inverse, and likewise for the synthesis ("inverse_t").
_MODES = ("forward", "inverse", "forward_t", "inverse_t")


def _lift_(buf: Tensor, dim: int, wavelet: str, mode: str) -> None:
    """Lifting in place on a buffer split ``[even | odd]`` along ``dim``."""
    n = buf.shape[dim]
    ns = (n + 1) // 2
    nd = n - ns
    if nd == 0:  # a single sample passes through (T.800 F.3.7)
        return
    even, odd = buf.narrow(dim, 0, ns), buf.narrow(dim, ns, nd)
    if wavelet == "haar":
        e = even.narrow(dim, 0, nd)
        if mode == "forward":
            odd.sub_(e)
            e.add_(odd, alpha=0.5)
        elif mode == "inverse":
            e.sub_(odd, alpha=0.5)
            odd.add_(e)
        elif mode == "forward_t":
            odd.add_(e, alpha=0.5)
            e.sub_(odd)
        else:
            e.add_(odd)
            odd.sub_(e, alpha=0.5)
        return
    steps, scale = _LIFTING[wavelet]
    sign = 1.0 if mode in ("forward", "forward_t") else -1.0
    order = steps if mode in ("forward", "inverse_t") else tuple(reversed(steps))
    transposed = mode.endswith("_t")
    if mode in ("inverse", "forward_t") and scale != 1.0:
        even.mul_(scale if mode == "inverse" else 1.0 / scale)
        odd.mul_(1.0 / scale if mode == "inverse" else scale)
    for is_predict, c in order:
        if is_predict:
            if transposed:
                _predict_t_(even, odd, sign * c, dim)
            else:
                _predict_(odd, even, sign * c, dim)
        elif transposed:
            _update_t_(odd, even, sign * c, dim)
        else:
            _update_(even, odd, sign * c, dim)
    if mode in ("forward", "inverse_t") and scale != 1.0:
        even.mul_(1.0 / scale if mode == "forward" else scale)
        odd.mul_(scale if mode == "forward" else 1.0 / scale)


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


# --------------------------------------------------------------------------- matrix form
#
# On the CPU, a lifting pass over a large tensor is limited by memory bandwidth
# (~6 passes per transformed axis), while one matmul with the transform's n x n
# matrix reads and writes the tensor once, at 2n flops per sample: cheaper for
# short axes (the spatial axes of deep feature maps and of y). The matrices are
# built by the lifting code itself from an identity in float64, so both paths
# compute the same linear map; float32 results differ by rounding only. CUDA
# keeps the lifting: its passes are cheap, and a matmul there may run in TF32
# when a user enables it, which would break perfect reconstruction.

MATRIX_MAX = 96  # longest axis transformed by a matmul: break-even with lifting lies at 64-128 here
_ANALYSIS_MODES = ("forward", "inverse_t")  # split, then lift; the others lift, then merge


@functools.lru_cache(maxsize=512)
def _matrix(wavelet: str, n: int, mode: str, dtype: torch.dtype) -> Tensor:
    """The n x n CPU matrix of one lifting step along an axis: ``dst = M @ src``."""
    eye = torch.eye(n, dtype=torch.float64)
    out = torch.empty_like(eye)
    if mode in _ANALYSIS_MODES:
        _split_into(eye, 0, out)
        _lift_(out, 0, wavelet, mode)
    else:
        _lift_(eye, 0, wavelet, mode)
        _merge_into(eye, 0, out)
    return out.to(dtype)


def _matmul_into(matrix: Tensor, src: Tensor, dim: int, dst: Tensor) -> bool:
    """``dst = matrix`` applied along ``dim`` of ``src``; False where the layout needs a copy first."""
    if src.numel() == 0:
        return False
    if src.dim() == 1:  # matmul's out= wants the 1 x n form of a vector
        src, dst, dim = src.unsqueeze(0), dst.unsqueeze(0), 1
    if dim == src.dim() - 1:
        left, right, shape = src, matrix.mT, src.shape
    elif dim == src.dim() - 2:
        left, right, shape = matrix, src, src.shape
    elif src.is_contiguous():  # an outer dim: (before, n, after) with the matrix broadcast over before
        right = src.view(math.prod(src.shape[:dim]), src.shape[dim], -1)
        left, shape = matrix, right.shape
    else:
        return False
    if dst.is_contiguous():
        torch.matmul(left, right, out=dst.view(shape))
    else:
        dst.copy_(torch.matmul(left, right).view(dst.shape))
    return True


def _step(src: Tensor, dim: int, dst: Tensor, wavelet: str, mode: str) -> None:
    """One level along ``dim`` from ``src`` into ``dst``: analysis modes deinterleave and
    lift, synthesis modes lift and interleave. ``src`` may be overwritten."""
    n = src.shape[dim]
    if src.device.type == "cpu" and 1 < n <= MATRIX_MAX:
        if _matmul_into(_matrix(wavelet, n, mode, src.dtype), src, dim, dst):
            return
    if mode in _ANALYSIS_MODES:
        _split_into(src, dim, dst)
        _lift_(dst, dim, wavelet, mode)
    else:
        _lift_(src, dim, wavelet, mode)
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


class _Scratch:
    """One flat buffer (the workspace, or a fresh one) for the temporaries of a transform."""

    def __init__(self, like: Tensor, fresh: bool) -> None:
        self._like = like
        self._fresh = fresh
        self._flat: Tensor | None = None

    def like(self, t: Tensor) -> Tensor:
        if self._flat is None:
            n = self._like.numel()
            if self._fresh:
                self._flat = self._like.new_empty(n)
            else:
                self._flat = _workspace(self._like.device, self._like.dtype, n)
        return self._flat.narrow(0, 0, t.numel()).view(t.shape)


def _analysis(x: Tensor, wavelet: str, plan: Plan, mode: str = "forward") -> Tensor:
    """Forward transform of ``x`` by ``plan`` (or, with ``mode="inverse_t"``, the
    transpose of the synthesis); returns a new buffer in Mallat layout."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    scratch = _Scratch(out, fresh=False)
    src: Tensor | None = x  # the input is read once, by the first split
    for dims, levels in plan:
        sizes = {d: _sizes(x.shape[d], levels) for d in dims}
        for level in range(levels):
            region = _region(out, dims, {d: sizes[d][level] for d in dims})
            cur = region if src is None else src
            for i, d in enumerate(dims):
                # alternate buffers so that the last dim lands in ``region``
                dst = region if (len(dims) - i) % 2 == 1 else scratch.like(region)
                if dst is cur:
                    dst = scratch.like(region)
                _step(cur, d, dst, wavelet, mode)
                cur = dst
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
) -> Tensor:
    """Inverse of :func:`_analysis` (or, with ``mode="forward_t"``, its transpose)
    of bands placed at ``spans`` in a Mallat buffer of ``shape``; returns a new tensor."""
    like = next(b for b in bands if b is not None)
    dtype = _bands_dtype(bands, like)
    # The outermost level ends in the scratch buffer when its group has an odd
    # number of dims, so then the workspace holds the bands and the scratch is
    # the fresh result (and the other way round otherwise).
    ends_in_scratch = len(plan[0][0]) % 2 == 1
    if ends_in_scratch:
        buf = _workspace(like.device, dtype, math.prod(shape)).view(list(shape))
    else:
        buf = like.new_empty(list(shape), dtype=dtype)
    _assemble_into(buf, bands, spans)
    scratch = _Scratch(buf, fresh=ends_in_scratch)
    spare: Tensor | None = None
    groups = list(plan)
    for g in range(len(groups) - 1, -1, -1):
        dims, levels = groups[g]
        sizes = {d: _sizes(buf.shape[d], levels) for d in dims}
        for level in range(levels - 1, -1, -1):
            region = _region(buf, dims, {d: sizes[d][level] for d in dims})
            outermost = g == 0 and level == 0
            tmp = scratch.like(region)
            cur = region
            for d in reversed(dims):
                dst = tmp if cur is region else region
                _step(cur, d, dst, wavelet, mode)
                cur = dst
            if cur is not region:
                if outermost:
                    spare = cur
                else:
                    region.copy_(cur)
    return buf if spare is None else spare


def _band(buf: Tensor, spans: dict[int, tuple[int, int]]) -> Tensor:
    for d, (start, stop) in spans.items():
        buf = buf.narrow(d, start, stop - start)
    return buf


def _spans(n: int, levels: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Positions in a Mallat buffer of the final low band and of each level's high band."""
    sizes = _sizes(n, levels)
    return (0, sizes[-1]), [(sizes[lv + 1], sizes[lv]) for lv in range(levels)]


def _bands_dtype(bands: Sequence[Tensor | None], like: Tensor) -> torch.dtype:
    present = [b for b in bands if b is not None]
    _check_float(*present)
    dtype = like.dtype
    for band in present:
        if band.device != like.device:
            raise WaveletError(f"bands are on different devices: {like.device} and {band.device}")
        dtype = torch.promote_types(dtype, band.dtype)
    return dtype


def _assemble_into(buf: Tensor, bands: Sequence[Tensor | None], spans: Sequence[Spans]) -> None:
    """Copy bands into the Mallat buffer ``buf`` (``None`` bands become zeros)
    after checking every band's shape."""
    shape = tuple(buf.shape)
    if any(b is None for b in bands):
        buf.zero_()
    for band, span in zip(bands, spans):
        if band is None:
            continue
        want = tuple(span[d][1] - span[d][0] if d in span else shape[d] for d in range(len(shape)))
        if tuple(band.shape) != want:
            raise WaveletError(
                f"bands do not fit together: a band of shape {tuple(band.shape)} where "
                f"{want} is expected for a signal of shape {shape}"
            )
        _band(buf, span).copy_(band)


class _Analysis(torch.autograd.Function):
    """Analysis by ``plan``; its backward is the transposed transform (same cost)."""

    @staticmethod
    def forward(ctx, x: Tensor, wavelet: str, plan: Plan, spans: Sequence[Spans]):
        ctx.meta = (wavelet, plan, spans, tuple(x.shape))
        buf = _analysis(x, wavelet, plan)
        return tuple(_band(buf, span) for span in spans)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor | None):
        wavelet, plan, spans, shape = ctx.meta
        return _synthesis(grads, spans, shape, wavelet, plan, "forward_t"), None, None, None


class _Synthesis(torch.autograd.Function):
    """Synthesis of bands placed by ``spans``; backward is its transpose."""

    @staticmethod
    def forward(ctx, wavelet: str, plan: Plan, spans: Sequence[Spans], shape, *bands: Tensor):
        ctx.meta = (wavelet, plan, spans, [b.dtype for b in bands])
        return _synthesis(bands, spans, shape, wavelet, plan)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        wavelet, plan, spans, dtypes = ctx.meta
        g = _analysis(grad, wavelet, plan, "inverse_t")
        return (None,) * 4 + tuple(_band(g, sp).to(dt) for sp, dt in zip(spans, dtypes))
