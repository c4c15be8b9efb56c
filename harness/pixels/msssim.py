"""MS-SSIM's size limit and its dB scale: the one home of both, shared by the training loss, the
sweep's patch check, the leaderboard's metrics and the report's published curves."""

from __future__ import annotations

import numpy as np

# pytorch-msssim downsamples 4 times with an 11-tap window: the short side must exceed (11 − 1)·2⁴.
MS_SSIM_MIN_SIDE = 161


def ms_ssim_db(value):
    """MS-SSIM in dB, −10·log10(1 − MS-SSIM), as CompressAI plots it; ``inf`` at 1, NaN stays NaN.
    A number gives a float, an array (a published curve) an array."""
    values = np.asarray(value, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = np.where(values >= 1.0, np.inf, -10.0 * np.log10(1.0 - values))
    return float(db) if db.ndim == 0 else db
