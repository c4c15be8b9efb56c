"""Bjøntegaard delta (BD) rate and BD quality between two rate-distortion curves.

Model. Each curve is a set of (rate, quality) points: rate in bits per pixel,
quality in dB (PSNR-RGB, or MS-SSIM as ``-10·log10(1 - MS-SSIM)``).

* BD-rate: log10(rate) is interpolated as a function of quality for both
  curves; the mean difference over the quality range covered by *both* curves
  is converted to a percentage, ``(10**mean - 1) * 100`` (negative = the test
  codec needs fewer bits for the same quality).
* BD-quality (BD-PSNR for PSNR): quality as a function of log10(rate), mean
  difference in dB over the common log-rate range.

Interpolation: ``"pchip"`` (default) is piecewise cubic Hermite interpolation
through the points, as in the current JVET/JCT-VC common test conditions and
in the ``bjontegaard`` package (Herglotz et al., "The Bjøntegaard Bible", IEEE
TIP 2024); ``"cubic"`` is the original least-squares cubic polynomial fit of
G. Bjøntegaard, VCEG-M33 (2001); ``"akima"`` is Akima's spline through the points
(``scipy.interpolate.Akima1DInterpolator``, the ``bjontegaard`` package's third method).
The report prints all three beside each other, so a reader sees when the method matters.

Reliability. A BD number is only meaningful for well-formed curves, so every
pair is checked: at least 4 points per curve, finite values and positive
rates, quality strictly increasing with rate, and overlapping ranges on the
integration axis. A pair that fails a check gets flags instead of an
exception; hard failures leave the value NaN, a small overlap keeps the value
but marks it unreliable. Bootstrap confidence intervals resample *images*
(not points) and recompute the per-point averaged curves, because the
uncertainty of a leaderboard comes from the choice of test images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.interpolate import Akima1DInterpolator

if TYPE_CHECKING:
    import pandas as pd

Method = Literal["pchip", "cubic", "akima"]
Kind = Literal["rate", "quality"]

METHODS: tuple[str, ...] = ("pchip", "cubic", "akima")
MIN_POINTS = 4
# Overlap is measured against the shorter curve: a test curve lying wholly
# inside the anchor's range is fully compared (overlap 1), while two curves
# that share only a sliver of their ranges give a number about that sliver.
MIN_OVERLAP = 0.75

# Flag codes. Curve flags are prefixed with "anchor:" or "test:".
FEW_POINTS = "few-points"
INVALID_VALUES = "invalid-values"
NON_MONOTONIC = "non-monotonic"
NO_OVERLAP = "no-overlap"
LOW_OVERLAP = "low-overlap"


@dataclass(frozen=True)
class RDCurve:
    """Rate-distortion points of one codec configuration (any order)."""

    rate: np.ndarray
    quality: np.ndarray

    @classmethod
    def of(cls, rate, quality) -> "RDCurve":
        return cls(np.asarray(rate, dtype=float).ravel(), np.asarray(quality, dtype=float).ravel())


@dataclass(frozen=True)
class BDResult:
    """One BD value with its reliability.

    ``value`` is percent for ``kind="rate"`` and dB for ``kind="quality"``; it is
    NaN when a hard check failed. ``overlap`` is the common range on the
    integration axis as a fraction of the shorter curve's range, ``span`` that range itself
    (quality in dB for ``kind="rate"``, log10 of the rate for ``kind="quality"``).
    """

    value: float
    kind: Kind
    method: str
    flags: tuple[str, ...] = ()
    overlap: float = float("nan")
    span: tuple[float, float] = (float("nan"), float("nan"))  # the common range integrated over

    @property
    def reliable(self) -> bool:
        return not self.flags and math.isfinite(self.value)

    @property
    def flag_text(self) -> str:
        return ", ".join(self.flags)


def curve_flags(curve: RDCurve) -> list[str]:
    """Problems that make a curve unusable for a BD computation (empty = fine)."""
    rate, quality = curve.rate, curve.quality
    if rate.shape != quality.shape:
        return [INVALID_VALUES]
    flags: list[str] = []
    if rate.size < MIN_POINTS:
        flags.append(FEW_POINTS)
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(quality)) and np.all(rate > 0)):
        flags.append(INVALID_VALUES)
        return flags
    order = np.argsort(rate, kind="stable")
    if np.any(np.diff(rate[order]) <= 0) or np.any(np.diff(quality[order]) <= 0):
        flags.append(NON_MONOTONIC)
    return flags


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Monotone derivatives at the knots (F. N. Fritsch and J. Butland, SIAM J.
    Sci. Stat. Comput. 5(2), 1984), row-wise over (B, n) arrays with x strictly
    increasing and n >= 3: the derivatives of ``scipy.interpolate.PchipInterpolator``
    (interior: weighted harmonic mean of the neighbouring secant slopes, zero
    at a local extremum; ends: one-sided three-point estimate clipped to keep
    the shape). Reimplemented vectorised so the bootstrap's thousand curves are
    one numpy pass; the tests pin it to scipy via the ``bjontegaard`` package."""
    h = np.diff(x, axis=1)
    m = np.diff(y, axis=1) / h
    d = np.zeros_like(y)
    w1 = 2.0 * h[:, 1:] + h[:, :-1]
    w2 = h[:, 1:] + 2.0 * h[:, :-1]
    same_sign = (np.sign(m[:, :-1]) * np.sign(m[:, 1:])) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / m[:, :-1] + w2 / m[:, 1:])
    d[:, 1:-1] = np.where(same_sign, harmonic, 0.0)
    for end, (h0, h1, m0, m1) in ((0, (h[:, 0], h[:, 1], m[:, 0], m[:, 1])), (-1, (h[:, -1], h[:, -2], m[:, -1], m[:, -2]))):
        edge = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        edge = np.where(np.sign(edge) != np.sign(m0), 0.0, edge)
        edge = np.where((np.sign(m0) != np.sign(m1)) & (np.abs(edge) > 3.0 * np.abs(m0)), 3.0 * m0, edge)
        d[:, end] = edge
    return d


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Row-wise integral over [lo, hi] of the PCHIP interpolant of y(x), for
    (B, n) arrays; closed form of the cubic Hermite pieces, so a thousand
    bootstrap curves cost one vectorised pass."""
    d = _pchip_slopes(x, y)
    x0, x1 = x[:, :-1], x[:, 1:]
    h = x1 - x0
    y0, y1, d0, d1 = y[:, :-1], y[:, 1:], d[:, :-1] * h, d[:, 1:] * h

    def primitive(t: np.ndarray) -> np.ndarray:
        # Integral from x0 to t (clipped into each piece) of the Hermite cubic.
        s = (np.clip(t[:, None], x0, x1) - x0) / h
        s2, s3, s4 = s * s, s**3, s**4
        return h * (
            y0 * (s - s3 + s4 / 2.0)
            + d0 * (s2 / 2.0 - 2.0 * s3 / 3.0 + s4 / 4.0)
            + y1 * (s3 - s4 / 2.0)
            + d1 * (s4 / 4.0 - s3 / 3.0)
        )

    return (primitive(hi) - primitive(lo)).sum(axis=1)


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """Integral over [lo, hi] of the interpolant of y(x); x strictly increasing."""
    if method == "pchip":
        return float(_pchip_integral(x[None, :], y[None, :], np.array([lo]), np.array([hi]))[0])
    if method == "cubic":
        with warnings.catch_warnings():
            # A cubic through exactly 4 points is exact, numpy calls that "poorly conditioned".
            warnings.simplefilter("ignore", np.RankWarning)
            poly = np.polynomial.Polynomial.fit(x, y, 3).integ()
        return float(poly(hi) - poly(lo))
    if method == "akima":
        return float(Akima1DInterpolator(x, y).integrate(lo, hi))
    raise ValueError(f"unknown BD interpolation method {method!r}; use one of {', '.join(METHODS)}")


def _bd(anchor: RDCurve, test: RDCurve, kind: Kind, method: str, min_overlap: float) -> BDResult:
    if method not in METHODS:
        raise ValueError(f"unknown BD interpolation method {method!r}; use one of {', '.join(METHODS)}")
    flags = [f"anchor:{f}" for f in curve_flags(anchor)] + [f"test:{f}" for f in curve_flags(test)]
    if flags:
        return BDResult(float("nan"), kind, method, tuple(flags))

    def axes(curve: RDCurve) -> tuple[np.ndarray, np.ndarray]:
        log_rate = np.log10(curve.rate)
        x, y = (curve.quality, log_rate) if kind == "rate" else (log_rate, curve.quality)
        order = np.argsort(x)
        return x[order], y[order]

    xa, ya = axes(anchor)
    xt, yt = axes(test)
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    shorter = min(xa[-1] - xa[0], xt[-1] - xt[0])
    overlap = max(hi - lo, 0.0) / shorter if shorter > 0 else 0.0
    if overlap <= 0.0:
        return BDResult(float("nan"), kind, method, (NO_OVERLAP,), 0.0)
    mean_diff = (_integral(xt, yt, lo, hi, method) - _integral(xa, ya, lo, hi, method)) / (hi - lo)
    value = (10.0**mean_diff - 1.0) * 100.0 if kind == "rate" else mean_diff
    soft = (LOW_OVERLAP,) if overlap < min_overlap else ()
    if not math.isfinite(value):
        return BDResult(float("nan"), kind, method, (INVALID_VALUES,), overlap, (lo, hi))
    return BDResult(value, kind, method, soft, overlap, (lo, hi))


def bd_rate(anchor: RDCurve, test: RDCurve, method: str = "pchip", min_overlap: float = MIN_OVERLAP) -> BDResult:
    """BD-rate of ``test`` against ``anchor`` in percent (negative = bit savings)."""
    return _bd(anchor, test, "rate", method, min_overlap)


def bd_quality(anchor: RDCurve, test: RDCurve, method: str = "pchip", min_overlap: float = MIN_OVERLAP) -> BDResult:
    """BD-quality (BD-PSNR for PSNR) of ``test`` against ``anchor`` in dB (positive = better)."""
    return _bd(anchor, test, "quality", method, min_overlap)


def _mean_curves(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-point means for each row of resample ``counts`` (B × images) over
    ``values`` (images × points, NaN where an image has no ok result).

    Only NaN is missing: an infinite value (a lossless reconstruction's PSNR) makes its
    point's mean infinite, so the curve fails the finite-values check (``invalid-values``)
    instead of averaging its rate over one set of images and its quality over another."""
    present = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(present, values, 0.0)) / (counts @ present)


@dataclass(frozen=True)
class PerImageCurves:
    """Per-image results of one codec configuration: rows = images (shared
    order between anchor and test), columns = quality points; NaN = missing."""

    rate: np.ndarray
    quality: np.ndarray

    def mean_curve(self) -> RDCurve:
        ones = np.ones((1, self.rate.shape[0]))
        return RDCurve.of(_mean_curves(ones, self.rate)[0], _mean_curves(ones, self.quality)[0])

    def image_curve(self, row: int) -> RDCurve:
        # Drop missing points only: an infinite PSNR must still flag the curve.
        keep = ~np.isnan(self.rate[row]) & ~np.isnan(self.quality[row])
        return RDCurve.of(self.rate[row][keep], self.quality[row][keep])


def per_image_curves(rows: "pd.DataFrame", images: list[str], column: str) -> PerImageCurves:
    """The rows of one curve as a PerImageCurves: ``images`` in this order, ``column`` as quality."""
    qualities = sorted(rows["quality"].unique())

    def matrix(values: str) -> np.ndarray:
        table = rows.pivot_table(index="image", columns="quality", values=values, aggfunc="mean", dropna=False)
        return table.reindex(index=images, columns=qualities).to_numpy(dtype=float)

    rate, quality = matrix("bpp"), matrix(column)
    # A point averages the images that have both numbers, so rate and quality
    # always describe the same set of images.
    both = np.isfinite(rate) & ~np.isnan(quality)
    return PerImageCurves(np.where(both, rate, np.nan), np.where(both, quality, np.nan))


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile interval of a BD value over image resamples."""

    low: float
    high: float
    resamples: int
    valid: int = 0

    @property
    def stable(self) -> bool:
        # Many failed replicates mean the curves sit close to a check's edge.
        return self.valid >= 0.9 * self.resamples


def bootstrap_ci(
    anchor: PerImageCurves,
    test: PerImageCurves,
    kind: Kind = "rate",
    method: str = "pchip",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapCI:
    """Paired bootstrap over images: the same image draw feeds anchor and test.

    Each replicate draws ``n_images`` images with replacement, averages each
    quality point over the drawn images that have it, and recomputes the BD
    value; the interval is the central ``level`` percentile range of the
    replicates that pass the curve checks.
    """
    n_images = anchor.rate.shape[0]
    if test.rate.shape[0] != n_images:
        raise ValueError("anchor and test per-image curves must share the same image rows")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(resamples, n_images))
    counts = np.zeros((resamples, n_images))
    np.add.at(counts, (np.repeat(np.arange(resamples), n_images), draws.ravel()), 1.0)
    means = [_mean_curves(counts, m) for m in (anchor.rate, anchor.quality, test.rate, test.quality)]
    if method == "pchip":
        values = _bootstrap_pchip(*means, kind)
    else:
        values = np.array([
            _bd(RDCurve.of(means[0][b], means[1][b]), RDCurve.of(means[2][b], means[3][b]), kind, method, 0.0).value
            for b in range(resamples)
        ])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return BootstrapCI(float("nan"), float("nan"), resamples, 0)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return BootstrapCI(float(low), float(high), resamples, int(values.size))


def _bootstrap_pchip(rate_a, quality_a, rate_t, quality_t, kind: Kind) -> np.ndarray:
    """BD values of (B, n) replicate curves at once; NaN for a replicate that
    fails the same checks as :func:`curve_flags` or has no overlap."""

    def prepare(rate: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(rate, axis=1)
        rate = np.take_along_axis(rate, order, axis=1)
        quality = np.take_along_axis(quality, order, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (
                np.all(np.isfinite(rate) & np.isfinite(quality) & (rate > 0), axis=1)
                & np.all(np.diff(rate, axis=1) > 0, axis=1)
                & np.all(np.diff(quality, axis=1) > 0, axis=1)
            )
            log_rate = np.log10(np.where(ok[:, None], rate, 1.0))
        quality = np.where(ok[:, None], quality, np.arange(rate.shape[1], dtype=float))
        # Monotone curves sort the same way on both axes, so one order serves.
        x, y = (quality, log_rate) if kind == "rate" else (log_rate, quality)
        return x, np.where(ok[:, None], y, 0.0), ok

    xa, ya, ok_a = prepare(rate_a, quality_a)
    xt, yt, ok_t = prepare(rate_t, quality_t)
    values = np.full(xa.shape[0], np.nan)
    if xa.shape[1] < MIN_POINTS or xt.shape[1] < MIN_POINTS:
        return values
    lo = np.maximum(xa[:, 0], xt[:, 0])
    hi = np.minimum(xa[:, -1], xt[:, -1])
    ok = ok_a & ok_t & (hi > lo)
    if not ok.any():
        return values
    lo, hi = lo[ok], hi[ok]
    mean_diff = (_pchip_integral(xt[ok], yt[ok], lo, hi) - _pchip_integral(xa[ok], ya[ok], lo, hi)) / (hi - lo)
    values[ok] = (10.0**mean_diff - 1.0) * 100.0 if kind == "rate" else mean_diff
    return values
