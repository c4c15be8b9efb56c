"""The distortion metrics a leaderboard can record and the report's curves, by name: the columns
each metric fills, what it is computed on, which run by default, and the BD-rate axes. Names only,
so that the commands' options and the report read them without the metric libraries;
:mod:`harness.leaderboard.quality` computes them.

Always computed (the ``core`` pair, as CompressAI's ``compressai.utils.eval_model``
reports them): PSNR over all RGB samples per image, MS-SSIM (Wang et al. 2003, via
pytorch-msssim, five scales, Gaussian window 11, σ 1.5) on RGB with data range 255,
and MS-SSIM in dB, −10·log10(1 − MS-SSIM).

On request (``--metrics``), the JPEG AI set from maintained libraries: PSNR-Y/U/V and
their 6:1:1 mean, MS-SSIM on Y, IW-SSIM, VIFp and FSIM (piq), NLPD (IQA-pytorch),
PSNR-HVS-M (psnr-hvsm) and VMAF (libvmaf inside the bundled ffmpeg). :data:`METRICS`
is the registry: names, result columns, colour space, library and cost class.
Curves average the per-image values at each point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.pixels.msssim import ms_ssim_db

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Metric:
    """One selectable metric: the result columns it fills and what it is computed on."""

    name: str
    columns: tuple[str, ...]
    space: str
    source: str
    cheap: bool


# Always computed: CompressAI's pair, the columns every earlier run has.
CORE = "core"
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric(CORE, ("psnr_rgb", "ms_ssim", "ms_ssim_db"), "RGB", "numpy; pytorch-msssim", True),
    Metric("psnr_yuv", ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv"), "Y'CbCr 4:4:4", "numpy", True),
    Metric("ms_ssim_y", ("ms_ssim_y",), "Y", "pytorch-msssim", True),
    Metric("psnr_hvs_m", ("psnr_hvs_m",), "Y", "psnr-hvsm", True),
    Metric("nlpd", ("nlpd",), "Y", "IQA-pytorch", True),
    Metric("iw_ssim", ("iw_ssim",), "Y", "piq", False),
    Metric("vif", ("vif",), "Y", "piq", False),
    Metric("fsim", ("fsim",), "RGB", "piq", False),
    Metric("vmaf", ("vmaf",), "Y'CbCr 4:4:4, 8-bit limited range", "ffmpeg libvmaf", False),
)}
DEFAULT_METRICS: tuple[str, ...] = tuple(name for name, m in METRICS.items() if m.cheap and name != CORE)
ALL = "all"


def resolve_metrics(names: tuple[str, ...]) -> tuple[str, ...]:
    """``--metrics`` names (``all`` for every one) → the registry's names in its order, core first."""
    unknown = sorted(set(names) - set(METRICS) - {ALL})
    if unknown:
        raise HarnessError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(n for n in METRICS if n != CORE)}"
                           f" or {ALL}")
    wanted = set(METRICS) if ALL in names else {CORE, *names}
    return tuple(name for name in METRICS if name in wanted)


# ----------------------------------------------------------------------------- the report's curves
#
# BD-rate axes: key → (column of the report's table, axis label). A BD quality must grow with
# the rate: MS-SSIM-Y is taken in dB like MS-SSIM, and NLPD (lower is better) negated; the
# report derives those two columns (:func:`curve_columns`).
CURVES: dict[str, tuple[str, str]] = {
    "psnr": ("psnr_rgb", "PSNR-RGB (dB)"),
    "msssim": ("ms_ssim_db", "MS-SSIM (dB)"),
    "psnr_y": ("psnr_y", "PSNR-Y (dB)"),
    "psnr_u": ("psnr_u", "PSNR-U (dB)"),
    "psnr_v": ("psnr_v", "PSNR-V (dB)"),
    "psnr_yuv": ("psnr_yuv", "PSNR-YUV 6:1:1 (dB)"),
    "ms_ssim_y": ("ms_ssim_y_db", "MS-SSIM-Y (dB)"),
    "iw_ssim": ("iw_ssim", "IW-SSIM"),
    "vif": ("vif", "VIFp"),
    "fsim": ("fsim", "FSIM"),
    "nlpd": ("nlpd_neg", "−NLPD"),
    "psnr_hvs_m": ("psnr_hvs_m", "PSNR-HVS-M (dB)"),
    "vmaf": ("vmaf", "VMAF"),
}
# The JPEG AI common test conditions' objective metrics; the report's JPEG AI summary is the
# mean of their BD-rates (each of PSNR-Y, -U and -V counts once).
JPEG_AI_CURVES = ("psnr_y", "psnr_u", "psnr_v", "ms_ssim_y", "iw_ssim", "vif", "fsim", "nlpd", "psnr_hvs_m", "vmaf")


def curve_columns(frame: "pd.DataFrame") -> "pd.DataFrame":
    """``frame`` with the derived columns of :data:`CURVES` (MS-SSIM-Y in dB, −NLPD)."""
    return frame.assign(ms_ssim_y_db=ms_ssim_db(frame["ms_ssim_y"].to_numpy(dtype=float)),
                        nlpd_neg=-frame["nlpd"].astype(float))


def resolve_curves(names: tuple[str, ...], option: str) -> tuple[str, ...]:
    """Report curve keys (``all`` for every one) → keys in :data:`CURVES` order."""
    unknown = sorted(set(names) - set(CURVES) - {ALL})
    if unknown:
        raise HarnessError(f"{option}: unknown metric(s) {', '.join(unknown)}; known: {', '.join(CURVES)} or {ALL}")
    return tuple(key for key in CURVES if ALL in names or key in names)
