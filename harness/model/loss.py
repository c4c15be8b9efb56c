"""Rate-distortion loss of 3DM-WeConvene (paper §III-C, eqs. 1-2) with per-subband rates.

Stage 1 (eq. 1):  L = lambda * D + R(y) + R(z)
Stage 2 (eq. 2):  L = w1 * (R_LLL + R_HLL) + w2 * (six high subbands) + R(z) + lambda * D

Rates are in bits per pixel of the *original* image (before the model's padding).
D is 255^2 * MSE on [0, 1] images (CompressAI's convention, the one the paper's
lambda set {0.0025, ..., 0.05} is quoted in) or 1 - MS-SSIM (lambda in {5, ..., 64}).

Defaults w1 = 1.1, w2 = 0.9: the paper gives only w1 > w2. With the Kodak split
of its Table V (LLL + HLL = 42 % of the y bits) these weights change the total
weighted rate by under 2 %, so fine-tuning keeps stage 1's operating point for
the same lambda while shifting the trade-off between low and high subbands.
For the 2D WeChARM variant the spatial low band LL gets w1. CompressAI baselines
(likelihoods ``y`` and ``z`` only) have no subbands: their stage 2 is eq. 1 again,
a plain fine-tune, and a factorized prior's ``bpp_z`` is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from harness.errors import HarnessError
from harness.model.config import LOW_FREQUENCY_SUBBANDS
from harness.pixels.msssim import MS_SSIM_MIN_SIDE


@dataclass(frozen=True)
class LossConfig:
    lmbda: float = 0.013
    metric: Literal["mse", "ms-ssim"] = "mse"
    stage: int = 1
    w1: float = 1.1
    w2: float = 0.9

    def __post_init__(self) -> None:
        if self.metric not in ("mse", "ms-ssim"):
            raise HarnessError(f"unknown distortion metric {self.metric!r}: choose 'mse' or 'ms-ssim'")
        if self.stage not in (1, 2):
            raise HarnessError(f"training stage must be 1 or 2, got {self.stage}")
        if not (self.lmbda > 0 and self.w1 >= 0 and self.w2 >= 0):
            raise HarnessError(f"lambda must be > 0 and w1, w2 >= 0 (got {self.lmbda}, {self.w1}, {self.w2})")


def subband_bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> dict[str, Tensor]:
    """Estimated bits per pixel of each subband (and of z): -sum(log2 p) / pixels."""
    return {name: torch.log(lk).sum() / (-math.log(2) * num_pixels) for name, lk in likelihoods.items()}


class RateDistortionLoss(nn.Module):
    """Returns ``loss``, ``bpp``, ``bpp_y``, ``bpp_z``, ``bpp_<subband>``, ``mse``, ``psnr`` and ``ms_ssim`` when used."""

    def __init__(self, config: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.config = config

    def forward(self, output: dict, target: Tensor) -> dict[str, Tensor]:
        x_hat = output["x_hat"]
        if x_hat.shape != target.shape:
            raise HarnessError(f"reconstruction {tuple(x_hat.shape)} and target {tuple(target.shape)} differ in shape")
        n, _, height, width = target.shape
        rates = subband_bpp(output["likelihoods"], n * height * width)
        out: dict[str, Tensor] = {f"bpp_{name}": value for name, value in rates.items()}
        bpp_z = rates["z"] if "z" in rates else target.new_zeros(())  # a factorized prior has no z
        out["bpp_z"] = bpp_z
        low = sum(v for k, v in rates.items() if k in LOW_FREQUENCY_SUBBANDS)
        high = sum(v for k, v in rates.items() if k != "z" and k not in LOW_FREQUENCY_SUBBANDS)
        out["bpp_y"] = low + high
        out["bpp"] = out["bpp_y"] + bpp_z
        mse = torch.mean((x_hat - target) ** 2)
        out["mse"] = mse
        out["psnr"] = 10 * torch.log10(1 / mse.clamp_min(1e-10))
        if self.config.metric == "mse":
            distortion = 255**2 * mse
        else:
            if min(height, width) < MS_SSIM_MIN_SIDE:
                raise HarnessError(
                    f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE}, got {height}x{width}"
                )
            from pytorch_msssim import ms_ssim

            out["ms_ssim"] = ms_ssim(x_hat.clamp(0, 1), target, data_range=1.0)
            distortion = 1 - out["ms_ssim"]
        if self.config.stage == 1 or set(rates) <= {"y", "z"}:  # no subbands: stage 2 is eq. 1
            rate = out["bpp"]
        else:
            rate = self.config.w1 * low + self.config.w2 * high + bpp_z
        out["distortion"] = distortion
        out["loss"] = self.config.lmbda * distortion + rate
        return out
