"""Training sanity of the tiny model on a real photo crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.model.network import WeConvene
from harness.model.loss import LossConfig, RateDistortionLoss
from harness.zoo.variants import get_config

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_200_steps_overfit_a_photo_crop(photos_dir, torch_one_thread):
    torch.manual_seed(0)
    photo = sorted(photos_dir.glob("*.png"))[0]
    pixels = np.asarray(Image.open(photo).convert("RGB"))[100:164, 100:164]
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    model = WeConvene(get_config("tiny"))
    criterion = RateDistortionLoss(LossConfig(lmbda=0.05))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def psnr() -> float:
        model.eval()
        with torch.no_grad():
            value = criterion(model(x), x)["psnr"].item()
        model.train()
        return value

    start = psnr()
    for _ in range(200):
        optimizer.zero_grad()
        criterion(model(x), x)["loss"].backward()
        optimizer.step()
    assert psnr() >= start + 3.0
