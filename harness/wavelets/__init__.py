"""Exact lifting discrete wavelet transforms (Haar, LeGall 5/3, CDF 9/7) in PyTorch.

The 3DM-WeConv layers and the 3DWeChARM entropy model (Fu et al., 3DM-WeConvene,
Sec. III) apply a 1D DWT across channels and a multi-level 2D DWT over space.
This module provides those transforms for any tensor dimension, batched,
differentiable and device/dtype agnostic (slicing and element-wise lifting steps;
on the CPU a compiled kernel runs each level in one pass, see
:mod:`harness.wavelets.cpu`).

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

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor

from harness.wavelets import cpu
from harness.wavelets.lifting import (
    WAVELETS,
    Analysis,
    Highs2D,
    Synthesis,
    WaveletError,
    WaveletTypeError,
    band_spans,
    check_float,
    check_levels,
    check_size,
    check_wavelet,
    format_order,
    min_size,
    norm_dim,
    release_workspace,
)

__all__ = [
    "WAVELETS", "WaveletError", "WaveletTypeError", "min_size", "dwt", "idwt", "channel_dwt", "channel_idwt",
    "dwt2", "idwt2", "subband_names", "dwt3", "idwt3", "portable", "release_workspace",
]


@contextlib.contextmanager
def portable() -> Iterator[None]:
    """On this thread, run every transform on the torch path with unfused steps.

    Each lifting step is then a multiply and an add, each correctly rounded, in one
    fixed order: the same bits on every CPU, thread count and GPU (the compiled
    kernels and ``add_(alpha=...)`` need not be). The integer entropy path
    (:mod:`harness.model.exact`) runs its 3DM-WeConv layers under it."""
    previous = cpu.portable_active()
    cpu.PORTABLE.on = True
    try:
        yield
    finally:
        cpu.PORTABLE.on = previous


# --------------------------------------------------------------------------- 1D


def dwt(x: Tensor, wavelet: str, dim: int) -> tuple[Tensor, Tensor]:
    """One-level 1D DWT of ``x`` along ``dim``: returns ``(low, high)``.

    ``low`` has ``ceil(n/2)`` samples along ``dim``, ``high`` ``floor(n/2)``
    (empty for ``n == 1``); all other dimensions are batch dimensions. The two
    bands are views of one new buffer.
    """
    check_wavelet(wavelet)
    check_float(x)
    dim = norm_dim(dim, x.dim())
    check_size(x.shape[dim], 1, f"dimension {dim}", strict=False)
    low, (high,) = band_spans(x.shape[dim], 1)
    return Analysis.apply(x, wavelet, [((dim,), 1)], [{dim: low}, {dim: high}])


def idwt(
    low: Tensor, high: Tensor, wavelet: str, dim: int, length: int | None = None
) -> Tensor:
    """Inverse of :func:`dwt`: rebuilds ``low.shape[dim] + high.shape[dim]`` samples.

    ``length``, if given, must equal that sum (a guard against mismatched bands).
    """
    check_wavelet(wavelet)
    check_float(low, high)
    if low.dim() != high.dim():
        raise WaveletError(
            f"low and high bands differ in rank: {tuple(low.shape)} vs {tuple(high.shape)}"
        )
    dim = norm_dim(dim, low.dim())
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
    return Synthesis.apply(wavelet, [((dim,), 1)], [{dim: (0, ns)}, {dim: (ns, n)}], shape, None, low, high)


# --------------------------------------------------------------------------- multi-level


def channel_dwt(
    x: Tensor, wavelet: str, levels: int = 1, dim: int = 1, *, strict: bool = True, joined: bool = False
) -> list[Tensor] | Tensor:
    """Multi-level 1D DWT along ``dim`` (channels by default), Mallat on the low band.

    Returns ``[L, H_levels, ..., H_2, H_1]``: the final low band first, then the
    high bands from coarsest to finest (``H_1`` is the first level's high band),
    as views of one buffer; with ``joined``, that buffer, x's shape (what
    ``torch.cat`` of the list along ``dim`` would copy). With ``strict`` the size
    along ``dim`` must be at least ``2**(levels-1)+1`` so that every level has a
    non-empty high band.
    """
    check_wavelet(wavelet)
    check_float(x)
    check_levels(levels, "levels")
    dim = norm_dim(dim, x.dim())
    check_size(x.shape[dim], levels, f"dimension {dim}", strict)
    if joined:
        return Analysis.apply(x, wavelet, [((dim,), levels)], [{}])[0]
    low, highs = band_spans(x.shape[dim], levels)
    spans = [{dim: span} for span in [low, *reversed(highs)]]
    return list(Analysis.apply(x, wavelet, [((dim,), levels)], spans))


def channel_idwt(
    bands: Sequence[Tensor], wavelet: str, dim: int = 1, *, memory_format: torch.memory_format = torch.contiguous_format
) -> Tensor:
    """Inverse of :func:`channel_dwt` (``bands`` = ``[L, H_levels, ..., H_1]``), laid out in
    ``memory_format`` (``torch.channels_last`` for 4-D bands)."""
    check_wavelet(wavelet)
    if len(bands) < 2:
        raise WaveletError(f"need a low band and at least one high band, got {len(bands)} band(s)")
    check_float(*bands)
    dim = norm_dim(dim, bands[0].dim())
    levels = len(bands) - 1
    n = sum(b.shape[dim] for b in bands)
    low, highs = band_spans(n, levels)
    shape = list(bands[0].shape)
    shape[dim] = n
    spans = [{dim: span} for span in [low, *reversed(highs)]]
    order = format_order(memory_format, len(shape))
    return Synthesis.apply(wavelet, [((dim,), levels)], spans, shape, order, *bands)


def _spatial_layout(
    h: int, w: int, levels: int, hdim: int, wdim: int
) -> tuple[dict[int, tuple[int, int]], list[tuple[dict, dict, dict]]]:
    """Spans of LL and of (LH, HL, HH) per level (finest first) in a Mallat buffer."""
    (hl0, hl1), hh = band_spans(h, levels)
    (wl0, wl1), wh = band_spans(w, levels)
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
    check_wavelet(wavelet)
    check_float(x)
    check_levels(levels, "levels")
    if x.dim() < 2:
        raise WaveletError(f"dwt2 needs a tensor with at least 2 dims, got {x.dim()}")
    h, w = x.shape[-2:]
    check_size(h, levels, "height", strict)
    check_size(w, levels, "width", strict)
    hdim, wdim = x.dim() - 2, x.dim() - 1
    ll, highs = _spatial_layout(h, w, levels, hdim, wdim)
    spans = [ll] + [span for level in highs for span in level]
    out = Analysis.apply(x, wavelet, [((hdim, wdim), levels)], spans)
    return out[0], [tuple(out[1 + 3 * lv : 4 + 3 * lv]) for lv in range(levels)]


def idwt2(
    ll: Tensor, highs: Sequence[Highs2D], wavelet: str, *, memory_format: torch.memory_format = torch.contiguous_format
) -> Tensor:
    """Inverse of :func:`dwt2` (``highs`` finest level first, as returned), laid out in
    ``memory_format`` (``torch.channels_last`` for 4-D bands)."""
    check_wavelet(wavelet)
    if len(highs) < 1:
        raise WaveletError("idwt2 needs at least one level of (LH, HL, HH) bands")
    for level in highs:
        if len(level) != 3:
            raise WaveletError(f"each level needs 3 bands (LH, HL, HH), got {len(level)}")
    check_float(ll, *(b for level in highs for b in level))
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
    order = format_order(memory_format, len(shape))
    return Synthesis.apply(wavelet, [((hdim, wdim), levels)], spans, shape, order, *bands)


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
    check_levels(channel_levels, "channel_levels")
    check_levels(spatial_levels, "spatial_levels")
    return tuple(c + s for c in _channel_names(channel_levels) for s in _spatial_names(spatial_levels))


def _layout3(
    shape: Sequence[int], cdim: int, channel_levels: int, spatial_levels: int
) -> dict[str, dict[int, tuple[int, int]]]:
    """Spans of every named 3D subband in the Mallat buffer, in subband_names order."""
    hdim, wdim = len(shape) - 2, len(shape) - 1
    c_low, c_highs = band_spans(shape[cdim], channel_levels)
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
    cdim = norm_dim(channel_dim, ndim)
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
    check_wavelet(wavelet)
    check_float(x)
    check_levels(channel_levels, "channel_levels")
    check_levels(spatial_levels, "spatial_levels")
    cdim = _channel_dim3(x.dim(), channel_dim)
    hdim, wdim = x.dim() - 2, x.dim() - 1
    check_size(x.shape[cdim], channel_levels, f"channel dimension {cdim}", strict)
    check_size(x.shape[hdim], spatial_levels, "height", strict)
    check_size(x.shape[wdim], spatial_levels, "width", strict)
    layout = _layout3(x.shape, cdim, channel_levels, spatial_levels)
    plan = [((cdim,), channel_levels), ((hdim, wdim), spatial_levels)]
    return dict(zip(layout, Analysis.apply(x, wavelet, plan, list(layout.values()))))


def idwt3(
    subbands: Mapping[str, Tensor],
    wavelet: str,
    channel_levels: int = 1,
    spatial_levels: int = 1,
    channel_dim: int = 1,
) -> Tensor:
    """Inverse of :func:`dwt3`; ``subbands`` must hold exactly the names of
    :func:`subband_names` for the given level counts."""
    check_wavelet(wavelet)
    expected = subband_names(channel_levels, spatial_levels)
    if set(subbands) != set(expected):
        missing = sorted(set(expected) - set(subbands))
        extra = sorted(set(subbands) - set(expected))
        raise WaveletError(
            f"subbands do not match {channel_levels} channel / {spatial_levels} spatial "
            f"level(s): missing {missing}, unexpected {extra}"
        )
    check_float(*subbands.values())
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
    return Synthesis.apply(wavelet, plan, list(layout.values()), shape, None, *bands)
