"""Cost of the 3D DWT next to a convolution (issue 3; paper's "negligible complexity" claim).

Times forward + inverse 3D DWT (1 channel level, 2 spatial levels) against one
3x3 convolution 320->320 (padding 1) on the same float32 tensor, both in
inference mode, interleaved in one run, and prints the median and minimum
times and their ratios (goal: <= 0.25). On a shared machine the minimum is the
better estimate of the uncontended cost: the DWT is memory-bound and suffers
more than the convolution from other processes' memory traffic.

    PYTHONPATH=. python benchmarks/wavelets.py [--wavelet 9/7] [--device cpu] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness.wavelets import WAVELETS, dwt3, idwt3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wavelet", default="9/7", choices=WAVELETS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="8,320,64,64", help="N,C,H,W")
    parser.add_argument("--channel-levels", type=int, default=1)
    parser.add_argument("--spatial-levels", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--backward", action="store_true",
        help="also time training: both sides forward + backward of sum() under autograd",
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    n, c, h, w = (int(v) for v in args.shape.split(","))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, c, h, w, generator=gen).to(device)
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device)

    def transform() -> None:
        bands = dwt3(x, args.wavelet, args.channel_levels, args.spatial_levels)
        idwt3(bands, args.wavelet, args.channel_levels, args.spatial_levels)

    def convolve() -> None:
        conv(x)

    with torch.inference_mode():
        transform(), convolve()  # warm-up: allocator, kernels, oneDNN/cuDNN plans
        t_dwt, t_conv = [], []
        for _ in range(args.repeats):
            t_dwt.append(_time(transform, device))
            t_conv.append(_time(convolve, device))
    dwt_s, conv_s = statistics.median(t_dwt), statistics.median(t_conv)
    dwt_min, conv_min = min(t_dwt), min(t_conv)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu, {torch.get_num_threads()} threads"
    )
    print(
        f"{args.wavelet} 3D DWT fwd+inv ({args.channel_levels} channel + {args.spatial_levels} "
        f"spatial levels) on float32 {n}x{c}x{h}x{w} [{where}, torch {torch.__version__}]"
    )
    print(f"  DWT fwd+inv      median {dwt_s * 1e3:8.1f} ms, min {dwt_min * 1e3:8.1f} ms")
    print(f"  conv3x3 {c}->{c} median {conv_s * 1e3:8.1f} ms, min {conv_min * 1e3:8.1f} ms")
    print(
        f"  ratio DWT/conv: median {dwt_s / conv_s:.3f}, min {dwt_min / conv_min:.3f} "
        f"(goal <= 0.25; {args.repeats} interleaved repeats)"
    )
    if not args.backward:
        return
    xg = x.detach().requires_grad_()

    def transform_train() -> None:
        bands = dwt3(xg, args.wavelet, args.channel_levels, args.spatial_levels)
        idwt3(bands, args.wavelet, args.channel_levels, args.spatial_levels).sum().backward()

    def convolve_train() -> None:
        conv(xg).sum().backward()

    transform_train(), convolve_train()
    t_dwt, t_conv = [], []
    for _ in range(args.repeats):
        t_dwt.append(_time(transform_train, device))
        t_conv.append(_time(convolve_train, device))
    dwt_s, conv_s = statistics.median(t_dwt), statistics.median(t_conv)
    print(
        f"  training (fwd+bwd of sum): DWT median {dwt_s * 1e3:.1f} ms, conv median "
        f"{conv_s * 1e3:.1f} ms, ratio median {dwt_s / conv_s:.3f}, "
        f"min {min(t_dwt) / min(t_conv):.3f}"
    )


if __name__ == "__main__":
    main()
