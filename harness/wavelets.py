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
filters (``haar``, ``bior2.2``, ``bior4.4``) this means

    low  = pywt_low  / sqrt(2)
    high = -pywt_high * sqrt(2)     (5/3 and 9/7; for ``haar`` +sqrt(2))

away from the boundaries (``tests/test_wavelets.py`` checks this).

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

from typing import Mapping, Sequence

import torch
from torch import Tensor

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


# --------------------------------------------------------------------------- 1D lifting


def _predict(odd: Tensor, even: Tensor, c: float, dim: int) -> Tensor:
    """``odd[k] + c * (even[k] + even[k+1])`` with whole-sample symmetric extension."""
    nd, ns = odd.shape[dim], even.shape[dim]
    out = torch.add(odd, even.narrow(dim, 0, nd), alpha=c)
    inner = min(nd, ns - 1)
    if inner:
        out.narrow(dim, 0, inner).add_(even.narrow(dim, 1, inner), alpha=c)
    if inner < nd:  # even length: even[nd] mirrors to even[nd-1]
        out.narrow(dim, nd - 1, 1).add_(even.narrow(dim, ns - 1, 1), alpha=c)
    return out


def _update(even: Tensor, odd: Tensor, c: float, dim: int) -> Tensor:
    """``even[k] + c * (odd[k-1] + odd[k])`` with whole-sample symmetric extension."""
    ns, nd = even.shape[dim], odd.shape[dim]
    if nd == ns:
        out = torch.add(even, odd, alpha=c)
    else:  # odd length: even has one more sample, odd[nd] mirrors to odd[nd-1]
        out = even.clone()
        out.narrow(dim, 0, nd).add_(odd, alpha=c)
        out.narrow(dim, nd, 1).add_(odd.narrow(dim, nd - 1, 1), alpha=c)
    out.narrow(dim, 1, ns - 1).add_(odd.narrow(dim, 0, ns - 1), alpha=c)
    out.narrow(dim, 0, 1).add_(odd.narrow(dim, 0, 1), alpha=c)  # odd[-1] mirrors to odd[0]
    return out


def _strided(ndim: int, dim: int, start: int) -> tuple[slice, ...]:
    return (slice(None),) * dim + (slice(start, None, 2),)


def dwt(x: Tensor, wavelet: str, dim: int) -> tuple[Tensor, Tensor]:
    """One-level 1D DWT of ``x`` along ``dim``: returns ``(low, high)``.

    ``low`` has ``ceil(n/2)`` samples along ``dim``, ``high`` ``floor(n/2)``
    (empty for ``n == 1``); all other dimensions are batch dimensions.
    """
    _check_wavelet(wavelet)
    _check_float(x)
    dim = _norm_dim(dim, x.dim())
    n = x.shape[dim]
    _check_size(n, 1, f"dimension {dim}", strict=False)
    even = x[_strided(x.dim(), dim, 0)]
    odd = x[_strided(x.dim(), dim, 1)]
    if n == 1:
        return even.clone(), odd.clone()
    if wavelet == "haar":
        high = torch.sub(odd, even.narrow(dim, 0, odd.shape[dim]))
        low = even.clone()
        low.narrow(dim, 0, high.shape[dim]).add_(high, alpha=0.5)
        return low, high
    steps, scale = _LIFTING[wavelet]
    low, high = even, odd
    for is_predict, c in steps:
        if is_predict:
            high = _predict(high, low, c, dim)
        else:
            low = _update(low, high, c, dim)
    if scale != 1.0:
        low = low * (1.0 / scale)
        high = high * scale
    return low, high


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
    if low.dtype != high.dtype or low.device != high.device:
        raise WaveletError(
            f"low and high bands differ in dtype/device: {low.dtype}/{low.device} "
            f"vs {high.dtype}/{high.device}"
        )
    if nd == 0:
        return low.clone()
    if wavelet == "haar":
        even = low.clone()
        even.narrow(dim, 0, nd).sub_(high, alpha=0.5)
        odd = torch.add(even.narrow(dim, 0, nd), high)
    else:
        steps, scale = _LIFTING[wavelet]
        even, odd = low, high
        if scale != 1.0:
            even = even * scale
            odd = odd * (1.0 / scale)
        for is_predict, c in reversed(steps):
            if is_predict:
                odd = _predict(odd, even, -c, dim)
            else:
                even = _update(even, odd, -c, dim)
    shape = list(low.shape)
    shape[dim] = n
    out = low.new_empty(shape)
    out[_strided(out.dim(), dim, 0)] = even
    out[_strided(out.dim(), dim, 1)] = odd
    return out


# --------------------------------------------------------------------------- multi-level


def channel_dwt(
    x: Tensor, wavelet: str, levels: int = 1, dim: int = 1, *, strict: bool = True
) -> list[Tensor]:
    """Multi-level 1D DWT along ``dim`` (channels by default), Mallat on the low band.

    Returns ``[L, H_levels, ..., H_2, H_1]``: the final low band first, then the
    high bands from coarsest to finest (``H_1`` is the first level's high band).
    With ``strict`` the size along ``dim`` must be at least ``2**(levels-1)+1``
    so that every level has a non-empty high band.
    """
    _check_wavelet(wavelet)
    _check_float(x)
    _check_levels(levels, "levels")
    dim = _norm_dim(dim, x.dim())
    _check_size(x.shape[dim], levels, f"dimension {dim}", strict)
    highs: list[Tensor] = []
    low = x
    for _ in range(levels):
        low, high = dwt(low, wavelet, dim)
        highs.append(high)
    return [low, *reversed(highs)]


def channel_idwt(bands: Sequence[Tensor], wavelet: str, dim: int = 1) -> Tensor:
    """Inverse of :func:`channel_dwt` (``bands`` = ``[L, H_levels, ..., H_1]``)."""
    if len(bands) < 2:
        raise WaveletError(f"need a low band and at least one high band, got {len(bands)} band(s)")
    low = bands[0]
    for high in bands[1:]:
        low = idwt(low, high, wavelet, dim)
    return low


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
    _check_size(x.shape[-2], levels, "height", strict)
    _check_size(x.shape[-1], levels, "width", strict)
    highs: list[Highs2D] = []
    ll = x
    for _ in range(levels):
        low_h, high_h = dwt(ll, wavelet, -2)
        ll, lh = dwt(low_h, wavelet, -1)
        hl, hh = dwt(high_h, wavelet, -1)
        highs.append((lh, hl, hh))
    return ll, highs


def idwt2(ll: Tensor, highs: Sequence[Highs2D], wavelet: str) -> Tensor:
    """Inverse of :func:`dwt2` (``highs`` finest level first, as returned)."""
    if len(highs) < 1:
        raise WaveletError("idwt2 needs at least one level of (LH, HL, HH) bands")
    for level in reversed(highs):
        if len(level) != 3:
            raise WaveletError(f"each level needs 3 bands (LH, HL, HH), got {len(level)}")
        lh, hl, hh = level
        low_h = idwt(ll, lh, wavelet, -1)
        high_h = idwt(hl, hh, wavelet, -1)
        ll = idwt(low_h, high_h, wavelet, -2)
    return ll


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
    ``LLL, LLH, LHL, LHH, HLL, HLH, HHL, HHH``; two spatial levels give e.g.
    ``LLL, LLH2, LHL2, LHH2, LLH1, ...``; two channel levels ``LLL, ..., H2LL, ..., H1HH``.
    """
    _check_levels(channel_levels, "channel_levels")
    _check_levels(spatial_levels, "spatial_levels")
    return tuple(c + s for c in _channel_names(channel_levels) for s in _spatial_names(spatial_levels))


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

    Returns a dict keyed by :func:`subband_names` in that order (lowest first).
    """
    _check_wavelet(wavelet)
    _check_float(x)
    _check_levels(spatial_levels, "spatial_levels")
    if x.dim() < 3:
        raise WaveletError(f"dwt3 needs a tensor with at least 3 dims, got {x.dim()}")
    cdim = _norm_dim(channel_dim, x.dim())
    if cdim >= x.dim() - 2:
        raise WaveletError(
            f"channel_dim {channel_dim} must not be one of the last two (spatial) dims"
        )
    _check_size(x.shape[-2], spatial_levels, "height", strict)
    _check_size(x.shape[-1], spatial_levels, "width", strict)
    groups = channel_dwt(x, wavelet, channel_levels, cdim, strict=strict)
    out: dict[str, Tensor] = {}
    for cname, group in zip(_channel_names(channel_levels), groups):
        ll, highs = dwt2(group, wavelet, spatial_levels, strict=strict)
        out[cname + "LL"] = ll
        suffix = spatial_levels > 1
        for level in range(spatial_levels, 0, -1):
            tag = str(level) if suffix else ""
            lh, hl, hh = highs[level - 1]
            out[f"{cname}LH{tag}"] = lh
            out[f"{cname}HL{tag}"] = hl
            out[f"{cname}HH{tag}"] = hh
    return out


def idwt3(
    subbands: Mapping[str, Tensor],
    wavelet: str,
    channel_levels: int = 1,
    spatial_levels: int = 1,
    channel_dim: int = 1,
) -> Tensor:
    """Inverse of :func:`dwt3`; ``subbands`` must hold exactly the names of
    :func:`subband_names` for the given level counts."""
    expected = subband_names(channel_levels, spatial_levels)
    if set(subbands) != set(expected):
        missing = sorted(set(expected) - set(subbands))
        extra = sorted(set(subbands) - set(expected))
        raise WaveletError(
            f"subbands do not match {channel_levels} channel / {spatial_levels} spatial "
            f"level(s): missing {missing}, unexpected {extra}"
        )
    suffix = spatial_levels > 1
    groups = []
    for cname in _channel_names(channel_levels):
        highs = []
        for level in range(1, spatial_levels + 1):
            tag = str(level) if suffix else ""
            highs.append(
                (
                    subbands[f"{cname}LH{tag}"],
                    subbands[f"{cname}HL{tag}"],
                    subbands[f"{cname}HH{tag}"],
                )
            )
        groups.append(idwt2(subbands[cname + "LL"], highs, wavelet))
    return channel_idwt(groups, wavelet, channel_dim)
