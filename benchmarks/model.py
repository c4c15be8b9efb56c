"""Speed of the network on CPU (issue 4).

1. One 3DM-WeConv down-sampling layer (default config: 9/7, 1 channel + 2 spatial
   DWT levels, 1x1 high-band convs), forward + backward, against CompressAI's
   plain residual down-sampling block with the same in/out channels
   (128 -> 128, batch 8, 64 x 64 input), interleaved in one run. Goal: <= 1.10x.
2. One training step (forward, loss, backward, Adam) of the default model at
   batch 8 x 256 x 256, reported as images/s.

Usage: PYTHONPATH=. python benchmarks/model.py [--threads N] [--repeats R] [--skip-train]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from compressai.layers import ResidualBlockWithStride

from harness.model.network import WeConvene
from harness.model.layers import WeConvDown
from harness.model.loss import LossConfig, RateDistortionLoss
from harness.zoo.variants import get_config


def _fwd_bwd(layer: torch.nn.Module, x: torch.Tensor) -> None:
    layer(x).square().mean().backward()


def layer_ratio(repeats: int) -> tuple[float, float]:
    c = get_config("3dm-weconvene")
    torch.manual_seed(0)
    weconv = WeConvDown(128, 128, c.wavelet, c.conv_channel_levels, c.conv_spatial_levels, c.conv_hf_kernel)
    plain = ResidualBlockWithStride(128, 128, stride=2)
    x = torch.rand(8, 128, 64, 64, requires_grad=True)
    for layer in (weconv, plain):
        for _ in range(2):
            _fwd_bwd(layer, x)
    times: dict[str, list[float]] = {"weconv": [], "plain": []}
    for _ in range(repeats):
        for name, layer in (("weconv", weconv), ("plain", plain)):
            start = time.perf_counter()
            _fwd_bwd(layer, x)
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["weconv"]), statistics.median(times["plain"])


def training_images_per_second(steps: int) -> float:
    torch.manual_seed(0)
    model = WeConvene(get_config("3dm-weconvene")).train()
    criterion = RateDistortionLoss(LossConfig(lmbda=0.013))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(8, 3, 256, 256)

    def step() -> None:
        optimizer.zero_grad()
        criterion(model(x), x)["loss"].backward()
        optimizer.step()

    step()
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        durations.append(time.perf_counter() - start)
    return 8 / statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s)")
    weconv, plain = layer_ratio(args.repeats)
    print(
        f"3DM-WeConv layer fwd+bwd (8x128x64x64 -> 32x32): {1e3 * weconv:.1f} ms, "
        f"plain residual down block {1e3 * plain:.1f} ms, ratio {weconv / plain:.2f}x (goal <= 1.10x)"
    )
    if not args.skip_train:
        print(f"default model training step, batch 8 x 256x256: {training_images_per_second(args.train_steps):.2f} images/s")


if __name__ == "__main__":
    main()
