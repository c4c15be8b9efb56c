"""Exact lifting discrete wavelet transforms (Haar, LeGall 5/3, CDF 9/7) in PyTorch.

The 3DM-WeConv layers and the 3DWeChARM entropy model (Fu et al., 3DM-WeConvene,
Sec. III) apply a 1D DWT across channels and a multi-level 2D DWT over space.
This module provides those transforms for any tensor dimension, batched,
differentiable and device/dtype agnostic (only slicing and element-wise ops).

Filters and boundaries follow ITU-T T.800 (JPEG 2000) Annex F:

* ``"5/3"``: the reversible LeGall lifting (F.3.8.2, eq. F-5/F-6) computed in
  floating point, i.e. without the integer rounding: predict ``-1/2``,
  update ``+1/4``.
* ``"9/7"``: the irreversible CDF lifting (F.4.8.2, Table F.4): four steps with
  ``ALPHA, BETA, GAMMA, DELTA``, then the high band is multiplied by ``K`` and
  the low band by ``1/K``.
* ``"haar"``: one predict (``-1``) and one update (``+1/2``) step, so the low
  band is the pair mean and the high band the pair difference.

All three use the JPEG 2000 normalisation: the low-pass filter has gain 1 at DC
and the high-pass filter gain 2 at Nyquist. Relative to PyWavelets' analysis
filters (``haar``, ``bior2.2``, ``bior4.4``, ``dec_lo``/``dec_hi``, which
PyWavelets convolves with the signal) this means, for all three wavelets,

    low  =  pywt_low  / sqrt(2)
    high = -pywt_high * sqrt(2)

(``tests/test_wavelets.py`` checks this on impulse responses, and checks the
boundary coefficients against the filters applied to the extended signal).
T.800 gives the 9/7 constants to 15-16 digits, so 9/7 agrees with the exact
``bior4.4`` filters to about 1e-11 relative.

Sampling and boundaries: the signal starts at an even index, so the low band
holds the even samples' positions and gets ``ceil(n/2)`` coefficients, the
high band ``floor(n/2)``. 5/3 and 9/7 use whole-sample symmetric extension
(``x[-i] = x[i]``, ``x[n-1+i] = x[n-1-i]``, T.800 F.3.7). Haar uses half-sample
symmetric extension, which pairs an odd-length signal's last sample with itself:
its high coefficient is zero and not stored, its low coefficient is the sample.
A length-1 signal is passed through: low is the sample, high is empty (as in
T.800 F.3.7 for a single sample at an even index). The inverse takes the
length from the two bands: ``n = low.shape[dim] + high.shape[dim]``.
"""

from __future__ import annotations

import math
import threading
from typing import Mapping, Sequence

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
                _split_into(cur, d, dst)
                _lift_(dst, d, wavelet, mode)
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
                _lift_(cur, d, wavelet, mode)
                dst = tmp if cur is region else region
                _merge_into(cur, d, dst)
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


# --------------------------------------------------------------------------- 1D


def dwt(x: Tensor, wavelet: str, dim: int) -> tuple[Tensor, Tensor]:
    """One-level 1D DWT of ``x`` along ``dim``: returns ``(low, high)``.

    ``low`` has ``ceil(n/2)`` samples along ``dim``, ``high`` ``floor(n/2)``
    (empty for ``n == 1``); all other dimensions are batch dimensions. The two
    bands are views of one new buffer.
    """
    _check_wavelet(wavelet)
    _check_float(x)
    dim = _norm_dim(dim, x.dim())
    _check_size(x.shape[dim], 1, f"dimension {dim}", strict=False)
    low, (high,) = _spans(x.shape[dim], 1)
    return _Analysis.apply(x, wavelet, [((dim,), 1)], [{dim: low}, {dim: high}])


def idwt(
    low: Tensor, high: Tensor, wavelet: str, dim: int, length: int | None = None
) -> Tensor:
    """Inverse of :func:`dwt`: rebuilds ``low.shape[dim] + high.shape[dim]`` samples.

    ``length``, if given, must equal that sum (a guard against mismatched bands).
    """
    _check_wavelet(wavelet)
    _check_float(low, high)
    if low.dim() != high.dim():
        raise WaveletError(
            f"low and high bands differ in rank: {tuple(low.shape)} vs {tuple(high.shape)}"
        )
    dim = _norm_dim(dim, low.dim())
    ns, nd = low.shape[dim], high.shape[dim]
    other_low = low.shape[:dim] + low.shape[dim + 1 :]
    other_high = high.shape[:dim] + high.shape[dim + 1 :]
    if ns - nd not in (0, 1) or other_low != other_high or ns == 0:
        raise WaveletError(
            f"bands do not fit together along dim {dim}: low {tuple(low.shape)}, "
            f"high {tuple(high.shape)} (low must have as many samples as high or one more)"
        )
    n = ns + nd
    if length is not None and length != n:
        raise WaveletError(f"bands along dim {dim} rebuild {n} samples, not length={length}")
    shape = list(low.shape)
    shape[dim] = n
    return _Synthesis.apply(wavelet, [((dim,), 1)], [{dim: (0, ns)}, {dim: (ns, n)}], shape, low, high)


# --------------------------------------------------------------------------- multi-level


def channel_dwt(
    x: Tensor, wavelet: str, levels: int = 1, dim: int = 1, *, strict: bool = True
) -> list[Tensor]:
    """Multi-level 1D DWT along ``dim`` (channels by default), Mallat on the low band.

    Returns ``[L, H_levels, ..., H_2, H_1]``: the final low band first, then the
    high bands from coarsest to finest (``H_1`` is the first level's high band),
    as views of one buffer. With ``strict`` the size along ``dim`` must be at
    least ``2**(levels-1)+1`` so that every level has a non-empty high band.
    """
    _check_wavelet(wavelet)
    _check_float(x)
    _check_levels(levels, "levels")
    dim = _norm_dim(dim, x.dim())
    _check_size(x.shape[dim], levels, f"dimension {dim}", strict)
    low, highs = _spans(x.shape[dim], levels)
    spans = [{dim: span} for span in [low, *reversed(highs)]]
    return list(_Analysis.apply(x, wavelet, [((dim,), levels)], spans))


def channel_idwt(bands: Sequence[Tensor], wavelet: str, dim: int = 1) -> Tensor:
    """Inverse of :func:`channel_dwt` (``bands`` = ``[L, H_levels, ..., H_1]``)."""
    _check_wavelet(wavelet)
    if len(bands) < 2:
        raise WaveletError(f"need a low band and at least one high band, got {len(bands)} band(s)")
    _check_float(*bands)
    dim = _norm_dim(dim, bands[0].dim())
    levels = len(bands) - 1
    n = sum(b.shape[dim] for b in bands)
    low, highs = _spans(n, levels)
    shape = list(bands[0].shape)
    shape[dim] = n
    spans = [{dim: span} for span in [low, *reversed(highs)]]
    return _Synthesis.apply(wavelet, [((dim,), levels)], spans, shape, *bands)


def _spatial_layout(
    h: int, w: int, levels: int, hdim: int, wdim: int
) -> tuple[dict[int, tuple[int, int]], list[tuple[dict, dict, dict]]]:
    """Spans of LL and of (LH, HL, HH) per level (finest first) in a Mallat buffer."""
    (hl0, hl1), hh = _spans(h, levels)
    (wl0, wl1), wh = _spans(w, levels)
    ll = {hdim: (hl0, hl1), wdim: (wl0, wl1)}
    highs = []
    for lv in range(levels):
        h_low = (0, hh[lv][0])  # the low part along height at this level
        w_low = (0, wh[lv][0])
        highs.append(
            (
                {hdim: h_low, wdim: wh[lv]},
                {hdim: hh[lv], wdim: w_low},
                {hdim: hh[lv], wdim: wh[lv]},
            )
        )
    return ll, highs


def dwt2(
    x: Tensor, wavelet: str, levels: int = 1, *, strict: bool = True
) -> tuple[Tensor, list[Highs2D]]:
    """Multi-level 2D DWT over the last two dims (height ``-2``, width ``-1``).

    Returns ``(LL, [(LH, HL, HH) of level 1, ..., of level `levels`])`` with
    level 1 the finest. Band letters follow the dims: the first letter is the
    band along height, the second along width, so ``LH`` is low-pass along
    height and high-pass along width (PyWavelets' ``cV`` up to scale), ``HL``
    its transpose (``cH``), ``HH`` the diagonal band (``cD``).
    With ``strict`` height and width must be at least ``2**(levels-1)+1``.
    """
    _check_wavelet(wavelet)
    _check_float(x)
    _check_levels(levels, "levels")
    if x.dim() < 2:
        raise WaveletError(f"dwt2 needs a tensor with at least 2 dims, got {x.dim()}")
    h, w = x.shape[-2:]
    _check_size(h, levels, "height", strict)
    _check_size(w, levels, "width", strict)
    hdim, wdim = x.dim() - 2, x.dim() - 1
    ll, highs = _spatial_layout(h, w, levels, hdim, wdim)
    spans = [ll] + [span for level in highs for span in level]
    out = _Analysis.apply(x, wavelet, [((hdim, wdim), levels)], spans)
    return out[0], [tuple(out[1 + 3 * lv : 4 + 3 * lv]) for lv in range(levels)]


def idwt2(ll: Tensor, highs: Sequence[Highs2D], wavelet: str) -> Tensor:
    """Inverse of :func:`dwt2` (``highs`` finest level first, as returned)."""
    _check_wavelet(wavelet)
    if len(highs) < 1:
        raise WaveletError("idwt2 needs at least one level of (LH, HL, HH) bands")
    for level in highs:
        if len(level) != 3:
            raise WaveletError(f"each level needs 3 bands (LH, HL, HH), got {len(level)}")
    _check_float(ll, *(b for level in highs for b in level))
    if ll.dim() < 2:
        raise WaveletError(f"idwt2 needs bands with at least 2 dims, got {ll.dim()}")
    hdim, wdim = ll.dim() - 2, ll.dim() - 1
    levels = len(highs)
    h = ll.shape[hdim] + sum(level[1].shape[hdim] for level in highs)
    w = ll.shape[wdim] + sum(level[0].shape[wdim] for level in highs)
    ll_span, high_spans = _spatial_layout(h, w, levels, hdim, wdim)
    spans = [ll_span] + [span for level in high_spans for span in level]
    bands = [ll] + [band for level in highs for band in level]
    shape = list(ll.shape[:-2]) + [h, w]
    return _Synthesis.apply(wavelet, [((hdim, wdim), levels)], spans, shape, *bands)


# --------------------------------------------------------------------------- 3D


def _channel_names(levels: int) -> list[str]:
    if levels == 1:
        return ["L", "H"]
    return ["L"] + [f"H{i}" for i in range(levels, 0, -1)]


def _spatial_names(levels: int) -> list[str]:
    if levels == 1:
        return ["LL", "LH", "HL", "HH"]
    names = ["LL"]
    for i in range(levels, 0, -1):
        names += [f"LH{i}", f"HL{i}", f"HH{i}"]
    return names


def subband_names(channel_levels: int = 1, spatial_levels: int = 1) -> tuple[str, ...]:
    """Names of the 3D subbands in :func:`dwt3` order (low frequencies first).

    A name is the channel band followed by the spatial band. Channel bands are
    ``L`` (final low band) and ``H`` (or ``H<level>`` with level 1 the finest
    when ``channel_levels > 1``); spatial bands are ``LL`` and ``LH``/``HL``/``HH``
    (letters along height then width, suffixed with the level when
    ``spatial_levels > 1``). One level each gives exactly
    ``LLL, LLH, LHL, LHH, HLL, HLH, HHL, HHH``; two spatial levels give
    ``LLL, LLH2, LHL2, LHH2, LLH1, LHL1, LHH1, HLL, ...``; two channel levels
    ``LLL, ..., H2LL, ..., H1HH``.
    """
    _check_levels(channel_levels, "channel_levels")
    _check_levels(spatial_levels, "spatial_levels")
    return tuple(c + s for c in _channel_names(channel_levels) for s in _spatial_names(spatial_levels))


def _layout3(
    shape: Sequence[int], cdim: int, channel_levels: int, spatial_levels: int
) -> dict[str, dict[int, tuple[int, int]]]:
    """Spans of every named 3D subband in the Mallat buffer, in subband_names order."""
    hdim, wdim = len(shape) - 2, len(shape) - 1
    c_low, c_highs = _spans(shape[cdim], channel_levels)
    c_spans = [c_low, *reversed(c_highs)]
    ll, highs = _spatial_layout(shape[hdim], shape[wdim], spatial_levels, hdim, wdim)
    s_spans = [ll]
    for lv in range(spatial_levels - 1, -1, -1):
        s_spans += list(highs[lv])
    names = subband_names(channel_levels, spatial_levels)
    spans = [{cdim: c, **s} for c in c_spans for s in s_spans]
    return dict(zip(names, spans))


def _channel_dim3(ndim: int, channel_dim: int) -> int:
    if ndim < 3:
        raise WaveletError(f"the 3D transform needs a tensor with at least 3 dims, got {ndim}")
    cdim = _norm_dim(channel_dim, ndim)
    if cdim >= ndim - 2:
        raise WaveletError(
            f"channel_dim {channel_dim} must not be one of the last two (spatial) dims"
        )
    return cdim


def dwt3(
    x: Tensor,
    wavelet: str,
    channel_levels: int = 1,
    spatial_levels: int = 1,
    channel_dim: int = 1,
    *,
    strict: bool = True,
) -> dict[str, Tensor]:
    """3D DWT: ``channel_levels`` along ``channel_dim``, then ``spatial_levels`` 2D
    levels over the last two dims of every channel band (paper Sec. III-A).

    Returns a dict keyed by :func:`subband_names` in that order (lowest first);
    the bands are views of one buffer.
    """
    _check_wavelet(wavelet)
    _check_float(x)
    _check_levels(channel_levels, "channel_levels")
    _check_levels(spatial_levels, "spatial_levels")
    cdim = _channel_dim3(x.dim(), channel_dim)
    hdim, wdim = x.dim() - 2, x.dim() - 1
    _check_size(x.shape[cdim], channel_levels, f"channel dimension {cdim}", strict)
    _check_size(x.shape[hdim], spatial_levels, "height", strict)
    _check_size(x.shape[wdim], spatial_levels, "width", strict)
    layout = _layout3(x.shape, cdim, channel_levels, spatial_levels)
    plan = [((cdim,), channel_levels), ((hdim, wdim), spatial_levels)]
    return dict(zip(layout, _Analysis.apply(x, wavelet, plan, list(layout.values()))))


def idwt3(
    subbands: Mapping[str, Tensor],
    wavelet: str,
    channel_levels: int = 1,
    spatial_levels: int = 1,
    channel_dim: int = 1,
) -> Tensor:
    """Inverse of :func:`dwt3`; ``subbands`` must hold exactly the names of
    :func:`subband_names` for the given level counts."""
    _check_wavelet(wavelet)
    expected = subband_names(channel_levels, spatial_levels)
    if set(subbands) != set(expected):
        missing = sorted(set(expected) - set(subbands))
        extra = sorted(set(subbands) - set(expected))
        raise WaveletError(
            f"subbands do not match {channel_levels} channel / {spatial_levels} spatial "
            f"level(s): missing {missing}, unexpected {extra}"
        )
    _check_float(*subbands.values())
    first = subbands[expected[0]]
    cdim = _channel_dim3(first.dim(), channel_dim)
    hdim, wdim = first.dim() - 2, first.dim() - 1
    # full sizes: the final low band plus every level's high band along each dim
    c = first.shape[cdim] + sum(subbands[n + "LL"].shape[cdim] for n in _channel_names(channel_levels)[1:])
    h = first.shape[hdim] + sum(
        subbands[f"LHL{lv if spatial_levels > 1 else ''}"].shape[hdim] for lv in range(1, spatial_levels + 1)
    )
    w = first.shape[wdim] + sum(
        subbands[f"LLH{lv if spatial_levels > 1 else ''}"].shape[wdim] for lv in range(1, spatial_levels + 1)
    )
    shape = list(first.shape)
    shape[cdim], shape[hdim], shape[wdim] = c, h, w
    layout = _layout3(shape, cdim, channel_levels, spatial_levels)
    plan = [((cdim,), channel_levels), ((hdim, wdim), spatial_levels)]
    bands = [subbands[name] for name in layout]
    return _Synthesis.apply(wavelet, plan, list(layout.values()), shape, *bands)
