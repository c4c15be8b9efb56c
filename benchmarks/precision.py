"""bf16 transforms against fp32 (issue 17): coding speed, quality cost, training throughput.

* ``speed``: compress and decompress of kodim01 with the default model (fresh,
  seed 0, tables updated) with fp32 and with bf16 transforms, and CompressAI's
  ``Elic2022Official`` in float32 as its users run it. The three run interleaved
  in one process on the same threads, after a warm-up on a 64x64 crop. Goals:
  bf16 at most 1.0x ELIC each way, and at least 3x faster than our fp32. The
  transforms alone (g_a + h_a to encode, g_s to decode) are timed too: they are
  what the precision changes; the integer entropy path is the same in both.
* ``quality``: the test suite's briefly trained ``tiny`` (tests/conftest.py) codes
  all 24 Kodak images in both precisions. It reports the mean PSNR-RGB of each
  precision's own reconstruction and the total bytes. Goals: |dPSNR| <= 0.05 dB
  and dbytes <= 0.3 %.
* ``train``: images per second of training steps (stage-1 loss, Adam, random
  batches) for fp32 and bf16, alternating, per variant. Goal: bf16 >= 2.5x fp32
  for the default variant.

Usage: PYTHONPATH=. python benchmarks/precision.py {speed,quality,train} [options]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from harness.artefacts.coding import decode, encode_reconstruct, to_tensor
from harness.leaderboard.quality import psnr_rgb
from harness.model.loss import LossConfig, RateDistortionLoss
from harness.model.precision import set_precision
from harness.pixels.images import load_rgb
from harness.zoo.factory import build_model

# Sibling benchmark scripts (this folder is on sys.path when a script here runs).
from bitstream import fresh_models, timed
from integer_path import trained_tiny

REPO = Path(__file__).resolve().parents[1]
KODAK = sorted((REPO / "datasets" / "kodak").glob("*.png"))


def _header(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s)")


def speed(args: argparse.Namespace) -> None:
    _header(args)
    ours, elic = fresh_models()
    x = to_tensor(load_rgb(REPO / "datasets" / "kodak" / "kodim01.png").pixels)

    def ours_round_trip(precision: str, image: torch.Tensor) -> tuple[float, float]:
        set_precision(ours, precision)
        encoded, enc = timed(ours.compress, image)
        _, dec = timed(ours.decompress, encoded["strings"], encoded["shape"], encoded["size"])
        return enc, dec

    def elic_round_trip(image: torch.Tensor) -> tuple[float, float]:
        encoded, enc = timed(elic.compress, image)
        _, dec = timed(elic.decompress, encoded["strings"], encoded["shape"])
        return enc, dec

    def transforms(precision: str, image: torch.Tensor) -> tuple[float, float]:
        set_precision(ours, precision)
        y, enc = timed(ours.g_a, ours.pad(image))
        codec = ours.latent_codec
        subbands = codec.analysis(y)
        _, hyper = timed(codec.h_a, torch.cat([subbands[name] for name in ours.config.subbands], dim=1))
        _, dec = timed(ours.g_s, torch.round(y))
        return enc + hyper, dec

    runs: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": [], "elic": [], "fp32 transforms": [],
                                                  "bf16 transforms": []}
    with torch.no_grad():
        small = x[..., :64, :64]
        for precision in ("fp32", "bf16"):
            ours_round_trip(precision, small)
        elic_round_trip(small)
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                runs[precision].append(ours_round_trip(precision, x))
                runs[f"{precision} transforms"].append(transforms(precision, x))
            runs["elic"].append(elic_round_trip(x))
    median = {key: tuple(statistics.median(r[i] for r in values) for i in (0, 1)) for key, values in runs.items()}
    for key, label in (("fp32", "3DM-WeConvene fp32"), ("bf16", "3DM-WeConvene bf16"), ("elic", "ELIC fp32"),
                       ("fp32 transforms", "  its g_a + h_a / g_s, fp32"), ("bf16 transforms", "  its g_a + h_a / g_s, bf16")):
        enc, dec = median[key]
        print(f"{label}: encode {enc:.2f} s, decode {dec:.2f} s (median of {args.repeats})")
    for way, i in (("encode", 0), ("decode", 1)):
        print(f"{way}: bf16 / ELIC {median['bf16'][i] / median['elic'][i]:.2f}x (goal <= 1.0x), "
              f"fp32 / bf16 {median['fp32'][i] / median['bf16'][i]:.2f}x (goal >= 3x), transforms alone fp32 / bf16 "
              f"{median['fp32 transforms'][i] / median['bf16 transforms'][i]:.2f}x; the rest (entropy path, rANS) "
              f"{median['bf16'][i] - median['bf16 transforms'][i]:.2f} s in bf16, "
              f"{median['fp32'][i] - median['fp32 transforms'][i]:.2f} s in fp32")


def quality(args: argparse.Namespace) -> None:
    _header(args)
    models = {"fp32": trained_tiny()}
    models["bf16"] = copy.deepcopy(models["fp32"])
    set_precision(models["bf16"], "bf16")
    totals = {key: {"bytes": 0, "psnr": []} for key in models}
    worst = 0
    with torch.inference_mode():
        for path in KODAK[: args.images]:
            pixels = load_rgb(path).pixels
            line = []
            for key, model in models.items():
                data, reconstruction = encode_reconstruct(model, pixels)
                assert np.array_equal(decode(model, data), reconstruction), f"{path.name}: {key} decode differs"
                totals[key]["bytes"] += len(data)
                totals[key]["psnr"].append(psnr_rgb(pixels, reconstruction))
                line.append(f"{key} {len(data)} bytes {totals[key]['psnr'][-1]:.3f} dB")
            cross = decode(models["fp32"], data)  # the bf16 file, decoded with fp32 g_s
            worst = max(worst, int(np.abs(cross.astype(int) - reconstruction).max()))
            print(f"{path.name}: {', '.join(line)}")
    mean = {key: statistics.fmean(t["psnr"]) for key, t in totals.items()}
    print(f"{len(totals['fp32']['psnr'])} images: mean PSNR fp32 {mean['fp32']:.4f} dB, bf16 {mean['bf16']:.4f} dB, "
          f"dPSNR {mean['bf16'] - mean['fp32']:+.4f} dB (goal |d| <= 0.05); bytes fp32 {totals['fp32']['bytes']}, "
          f"bf16 {totals['bf16']['bytes']}, dbytes {100 * (totals['bf16']['bytes'] / totals['fp32']['bytes'] - 1):+.3f} % "
          f"(goal <= 0.3 %); bf16 files decoded in fp32: every one, largest sample difference {worst}")


def train(args: argparse.Namespace) -> None:
    _header(args)
    loss = RateDistortionLoss(LossConfig(0.013, "mse", 1))
    for variant in args.variants:
        rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                torch.manual_seed(0)
                model = build_model(variant).train()
                set_precision(model, precision)
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
                x = torch.rand(args.batch, 3, args.patch, args.patch)

                def step() -> None:
                    out = loss(model(x), x)
                    optimizer.zero_grad()
                    out["loss"].backward()
                    optimizer.step()

                step()  # warm-up: allocator, kernels
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                rates[precision].append(args.steps * args.batch / (time.perf_counter() - start))
        median = {key: statistics.median(values) for key, values in rates.items()}
        print(f"{variant}, batch {args.batch} x {args.patch}^2, {args.steps} steps x {args.repeats}: "
              f"fp32 {median['fp32']:.2f} img/s, bf16 {median['bf16']:.2f} img/s, "
              f"bf16 / fp32 {median['bf16'] / median['fp32']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    sub = parser.add_subparsers(dest="command", required=True)
    fast = sub.add_parser("speed")
    fast.add_argument("--repeats", type=int, default=3)
    good = sub.add_parser("quality")
    good.add_argument("--images", type=int, default=24)
    training = sub.add_parser("train")
    training.add_argument("--variants", nargs="+", default=["tiny", "3dm-weconvene"])
    training.add_argument("--batch", type=int, default=2)
    training.add_argument("--patch", type=int, default=256)
    training.add_argument("--steps", type=int, default=2)
    training.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    {"speed": speed, "quality": quality, "train": train}[args.command](args)


if __name__ == "__main__":
    main()
