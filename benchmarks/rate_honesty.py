"""Rate honesty on all 24 Kodak images (issue 5): rANS payload bits / likelihood bits.

Trains ``tiny`` exactly as tests/conftest.py's ``train_tiny`` does (150 steps,
batch 4 x 64^2 photo crops; tests/test_model_rate.py checks every third image) and reports, per image, the
bits estimated from the likelihoods, the payload and header bits of the .3dmw
file and their ratio. Acceptance: payload <= 1.01 x estimate on every image.

Usage: PYTHONPATH=. python benchmarks/rate_honesty.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from harness.artefacts.bitstream import unpack
from harness.artefacts.coding import encode, to_tensor
from harness.pixels.images import load_rgb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from integer_path import trained_tiny  # noqa: E402  (the suite's trained tiny, one builder)


def main() -> None:
    torch.set_num_threads(1)
    model = trained_tiny()
    total_est = total_payload = 0.0
    worst = 0.0
    for path in sorted((REPO / "datasets" / "kodak").glob("*.png")):
        pixels = load_rgb(path).pixels
        with torch.no_grad():
            estimated = sum(float(-torch.log2(lk).sum()) for lk in model(to_tensor(pixels))["likelihoods"].values())
        data = encode(model, pixels)
        payload = 8 * sum(len(s) for s in unpack(data).streams)
        ratio = payload / estimated
        worst, total_est, total_payload = max(worst, ratio), total_est + estimated, total_payload + payload
        print(f"{path.name}: estimated {estimated:.0f} bits, payload {payload}, header {8 * len(data) - payload}, "
              f"ratio {ratio:.4f}, {8 * len(data) / pixels.shape[0] / pixels.shape[1]:.3f} bpp", flush=True)
    print(f"worst ratio {worst:.4f}, all images together {total_payload / total_est:.4f} (goal <= 1.01)")


if __name__ == "__main__":
    main()
