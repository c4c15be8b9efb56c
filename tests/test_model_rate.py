"""Rate honesty: the rANS payload matches the likelihood estimate of a briefly trained model.

Acceptance (issue 5): file bytes x 8 <= 1.01 x (bits estimated from the float
likelihoods) + container header bits, on Kodak, with the integer entropy path's
means and scales. A model at initialisation predicts nearly empty latents, so the
``trained_tiny`` fixture (conftest) trains one first.

Every third Kodak image is tested (8 of 24, ~25 s); all 24 were measured once
for benchmarks/RESULTS.md (worst 1.0012).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.artefacts.bitstream import unpack
from harness.artefacts.coding import decode, encode, to_pixels, to_tensor
from harness.pixels.images import load_rgb

KODAK_SUBSET = [f"kodim{i:02d}.png" for i in range(1, 25, 3)]


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]


@pytest.mark.timeout(240)
def test_file_bits_within_one_percent_of_the_likelihood_estimate(trained_tiny, kodak_dir):
    ratios = {}
    for name in KODAK_SUBSET:
        pixels = load_rgb(kodak_dir / name).pixels
        with torch.no_grad():
            likelihoods = trained_tiny(to_tensor(pixels))["likelihoods"]
        estimated = sum(float(-torch.log2(lk).sum()) for lk in likelihoods.values())
        data = encode(trained_tiny, pixels)
        header = len(data) - sum(len(s) for s in unpack(data).streams)
        ratios[name] = (8 * len(data) - 8 * header) / estimated
        # A trained model codes real content: the payload is not a handful of flush bytes.
        assert estimated > 0.1 * pixels.shape[0] * pixels.shape[1]
    assert max(ratios.values()) <= 1.01, ratios


def test_trained_model_round_trip_is_bit_exact(trained_tiny, kodak_dir):
    pixels = load_rgb(kodak_dir / "kodim05.png").pixels[:200, :300]
    own = to_pixels(trained_tiny.compress(to_tensor(pixels), reconstruct=True)["x_hat"])
    assert np.array_equal(decode(trained_tiny, encode(trained_tiny, pixels)), own)
