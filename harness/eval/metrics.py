"""Distortion metrics on decoded 8-bit RGB, as the learned-compression field
reports them (CompressAI's ``compressai.utils.eval_model``): PSNR over all RGB
samples per image, MS-SSIM (Wang et al. 2003, via pytorch-msssim, five scales,
Gaussian window 11, σ 1.5) on RGB with data range 255, and MS-SSIM in dB,
−10·log10(1 − MS-SSIM). Curves average the per-image values at each point.
"""

from __future__ import annotations

import math

import numpy as np

from harness.errors import HarnessError

# pytorch-msssim downsamples 4 times with an 11-tap window: the short side must exceed (11 − 1)·2⁴.
# The one home of this limit: evaluation, the training loss and the sweep's patch check use it.
MS_SSIM_MIN_SIDE = 161


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
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    to_tensor = lambda a: torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]  # noqa: E731
    with torch.no_grad():
        value = _ms_ssim(to_tensor(reference), to_tensor(decoded), data_range=255.0, size_average=True)
    return float(value)


def ms_ssim_db(value):
    """MS-SSIM in dB, −10·log10(1 − MS-SSIM), as CompressAI plots it; ``inf`` at 1, NaN stays NaN.
    A number gives a float, an array (a published curve) an array."""
    values = np.asarray(value, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.where(values >= 1.0, np.inf, -10.0 * np.log10(1.0 - values))
    return float(db) if db.ndim == 0 else db
