"""The distortion metrics of :mod:`harness.leaderboard.metrics`, computed on a decoded 8-bit RGB
image and its reference with the libraries named there: :func:`measure` fills every column of the
metrics asked for."""

from __future__ import annotations

import math
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from harness.errors import HarnessError
from harness.leaderboard.metrics import CORE
from harness.leaderboard.planes import strip_convolutions
from harness.leaderboard.vmaf import vmaf_score
from harness.pixels.colour import YCbCrFormat, rgb_to_ycbcr
from harness.pixels.msssim import MS_SSIM_MIN_SIDE, ms_ssim_db


def _check(reference: np.ndarray, decoded: np.ndarray) -> None:
    if reference.shape != decoded.shape or reference.ndim != 3 or reference.shape[2] != 3:
        raise HarnessError(f"metric inputs must be equal H×W×3 arrays, got {reference.shape} and {decoded.shape}")
    if reference.dtype != np.uint8 or decoded.dtype != np.uint8:
        raise HarnessError("metric inputs must be uint8 RGB")


def psnr_rgb(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB over all R, G, B samples (peak 255); ``inf`` for identical images."""
    _check(reference, decoded)
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM on RGB, data range 255; NaN when the image is too small for five scales."""
    _check(reference, decoded)
    if min(reference.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    from pytorch_msssim import ms_ssim as _ms_ssim

    to_tensor = lambda a: torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]  # noqa: E731
    with torch.no_grad():
        value = _ms_ssim(to_tensor(reference), to_tensor(decoded), data_range=255.0, size_average=True)
    return float(value)


# ----------------------------------------------------------------------------- the JPEG AI set
#
# Colour spaces follow the JPEG AI common test conditions: Y'CbCr for the PSNRs, the luma for
# MS-SSIM-Y, IW-SSIM, VIF, NLPD and PSNR-HVS-M, RGB for FSIM and 4:4:4 Y'CbCr for VMAF. The
# Y'CbCr is the harness's own H.273 conversion (harness.pixels.colour) of the 8-bit RGB, so no
# library picks a matrix or range of its own.

# PSNR-Y/U/V and every luma metric: BT.709, full range, 10-bit code values, 4:4:4 (peak 1023);
# luma metrics see Y/1023 in [0, 1].
YUV_FORMAT = YCbCrFormat("bt709", full_range=True, bit_depth=10, chroma="444")
# VMAF's models were trained on 8-bit limited-range video: BT.709, 4:4:4, codes 16-235 / 16-240.
VMAF_FORMAT = YCbCrFormat("bt709", full_range=False, bit_depth=8, chroma="444")
YUV_WEIGHTS = (6.0, 1.0, 1.0)  # (6·Y + U + V) / 8, the video-coding convention
# Smallest short side each multi-scale metric accepts (measured on these library versions):
# below it the value is NaN, as for MS-SSIM. piq's IW-SSIM and VIFp state theirs; NLPD's six
# pyramid levels need ≥ 3 samples at the coarsest with reflection padding; libvmaf crashes under 17.
IW_SSIM_MIN_SIDE = 161
VIF_MIN_SIDE = 41
NLPD_MIN_SIDE = 65
VMAF_MIN_SIDE = 17


class Pair:
    """A reference and a decoded 8-bit RGB image with the views the metrics share, each made once."""

    def __init__(self, reference: np.ndarray, decoded: np.ndarray) -> None:
        _check(reference, decoded)
        self.reference, self.decoded = reference, decoded

    @cached_property
    def yuv(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return rgb_to_ycbcr(self.reference, YUV_FORMAT), rgb_to_ycbcr(self.decoded, YUV_FORMAT)

    @cached_property
    def luma(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Y/1023 as 1×1×H×W float32 tensors in [0, 1]."""
        peak = float((1 << YUV_FORMAT.bit_depth) - 1)
        return tuple(torch.from_numpy(planes[0].astype(np.float32) / peak)[None, None] for planes in self.yuv)

    @cached_property
    def rgb(self) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB/255 as 1×3×H×W float32 tensors in [0, 1]."""
        return tuple(torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
                     for a in (self.reference, self.decoded))

    @property
    def min_side(self) -> int:
        return min(self.reference.shape[:2])


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def psnr_yuv(pair: Pair) -> dict[str, float]:
    """PSNR of Y, Cb and Cr (peak 1023) and their 6:1:1 weighted mean of the three PSNRs."""
    peak = float((1 << YUV_FORMAT.bit_depth) - 1)
    values = [_psnr(r, d, peak) for r, d in zip(*pair.yuv)]
    weighted = sum(w * v for w, v in zip(YUV_WEIGHTS, values)) / sum(YUV_WEIGHTS)
    return {"psnr_y": values[0], "psnr_u": values[1], "psnr_v": values[2], "psnr_yuv": weighted}


def ms_ssim_y(pair: Pair) -> dict[str, float]:
    if pair.min_side < MS_SSIM_MIN_SIDE:
        return {"ms_ssim_y": math.nan}
    from pytorch_msssim import ms_ssim as _ms_ssim

    with torch.no_grad():
        return {"ms_ssim_y": float(_ms_ssim(*pair.luma, data_range=1.0, size_average=True))}


def iw_ssim(pair: Pair) -> dict[str, float]:
    if pair.min_side < IW_SSIM_MIN_SIDE:
        return {"iw_ssim": math.nan}
    import piq

    return {"iw_ssim": float(piq.information_weighted_ssim(*pair.luma, data_range=1.0))}


def vif(pair: Pair) -> dict[str, float]:
    if pair.min_side < VIF_MIN_SIDE:
        return {"vif": math.nan}
    import piq

    return {"vif": float(piq.vif_p(*pair.luma, data_range=1.0))}


def fsim(pair: Pair) -> dict[str, float]:
    """FSIM_C: the chromatic FSIM on RGB (piq converts to YIQ itself)."""
    import piq

    return {"fsim": float(piq.fsim(*pair.rgb, data_range=1.0, chromatic=True))}


def nlpd(pair: Pair) -> dict[str, float]:
    """Normalised Laplacian pyramid distance (Laparra et al. 2016) on Y, IQA-pytorch's
    six-level model; 0 for identical images, lower is better."""
    from IQA_pytorch import NLPD

    if pair.min_side < NLPD_MIN_SIDE:
        return {"nlpd": math.nan}
    reference, decoded = pair.luma
    with torch.no_grad():
        return {"nlpd": float(NLPD(channels=1)(decoded, reference, as_loss=False)[0])}


def psnr_hvs_m(pair: Pair) -> dict[str, float]:
    """PSNR-HVS-M (Ponomarenko et al. 2007) on Y in [0, 1], psnr-hvsm's C++ back end, over the
    whole 8×8 blocks (as the authors' reference code; partial edge blocks are left out, and the
    C++ back end aborts on them); ``inf`` for identical images (the library caps at 100 dB)."""
    height, width = (side - side % 8 for side in pair.reference.shape[:2])
    if not (height and width):
        return {"psnr_hvs_m": math.nan}
    reference, decoded = (np.ascontiguousarray(t[0, 0, :height, :width].numpy(), dtype=np.float64) for t in pair.luma)
    if np.array_equal(reference, decoded):  # one library call fewer than asking it for the MSE first
        return {"psnr_hvs_m": math.inf}
    _, value = _psnr_hvsm_backend()["psnr_hvs_hvsm"](reference, decoded)
    return {"psnr_hvs_m": float(value)}


def _psnr_hvsm_backend() -> dict:
    import contextlib
    import io

    # The package prints a hint about its optional PyTorch back end on import; we use the C++ one.
    with contextlib.redirect_stdout(io.StringIO()):
        import psnr_hvsm
    return psnr_hvsm.BACKENDS["cpp"] if "cpp" in psnr_hvsm.BACKENDS else psnr_hvsm.BACKENDS["numpy"]


def vmaf(pair: Pair) -> dict[str, float]:
    """VMAF (model vmaf_v0.6.1) of the 8-bit limited-range 4:4:4 Y'CbCr pictures."""
    if pair.min_side < VMAF_MIN_SIDE:
        return {"vmaf": math.nan}
    return {"vmaf": vmaf_score(rgb_to_ycbcr(pair.reference, VMAF_FORMAT), rgb_to_ycbcr(pair.decoded, VMAF_FORMAT),
                               VMAF_FORMAT)}


def core(pair: Pair) -> dict[str, float]:
    """The always-computed pair: PSNR-RGB and MS-SSIM (:func:`measure` adds MS-SSIM in dB)."""
    return {"psnr_rgb": psnr_rgb(pair.reference, pair.decoded), "ms_ssim": ms_ssim(pair.reference, pair.decoded)}


# How each metric of the registry is computed, by its name there.
COMPUTE: dict[str, Callable[[Pair], dict[str, float]]] = {
    CORE: core, "psnr_yuv": psnr_yuv, "ms_ssim_y": ms_ssim_y, "psnr_hvs_m": psnr_hvs_m, "nlpd": nlpd,
    "iw_ssim": iw_ssim, "vif": vif, "fsim": fsim, "vmaf": vmaf,
}


def measure(reference: np.ndarray, decoded: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """Every column of the named metrics for one image pair, the libraries' one-plane filters
    run over row strips (:mod:`harness.leaderboard.planes`)."""
    pair = Pair(reference, decoded)
    values: dict[str, float] = {}
    with strip_convolutions():
        for name in names:
            values.update(COMPUTE[name](pair))
    if "ms_ssim" in values:
        values["ms_ssim_db"] = ms_ssim_db(values["ms_ssim"])
    return values
