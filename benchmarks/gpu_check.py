"""One command for a GPU machine: CUDA tests, Kodak coding times, training speed, a 4-minute
training curve, and GPU <-> CPU decodes (issues 16 and 17).

On the GPU machine (Python 3.12 with torch and numpy already installed, no network),
with the wheels this harness needs downloaded beforehand for that Python::

    # on a machine with network, once:
    pip download --only-binary=:all: --python-version 3.12 --no-deps -d wheels \\
        compressai==1.2.8 webdataset braceexpand 'ray[default,tune]==2.60.0' pandas 'pyarrow<22' \\
        scipy pillow pytest matplotlib pytorch-msssim imageio-ffmpeg tqdm
    # on the GPU machine (this file's folder's parent is the repository):
    bash benchmarks/gpu_check.sh wheels        # installs with --no-deps, then runs this file

or, where the packages are already there, ``python benchmarks/gpu_check.py``. In about
8 minutes it writes ``--out`` (default ``benchmarks/gpu-check/``): ``gpu_check.json``
(every number), ``train_curve.csv`` and ``train_curve.png`` (loss, PSNR and bpp against
steps and seconds), and a Markdown summary on stdout for benchmarks/RESULTS.md:

1. the CUDA tests of the suite (``pytest -k cuda``);
2. Kodak encode and decode of the default model (fresh, seed 0), fp32 and bf16, every
   image, synchronised, after a warm-up, next to the paper's 0.256 s / 0.259 s (RTX 4090);
3. training images/s at batch 8 x 256^2, fp32 and bf16;
4. ~4 minutes of bf16 training of the default model on photo shards (prepare-data's
   shards of ``--photos``), the curve written as it goes;
5. the 24 Kodak images encoded on the GPU decoded on the CPU (a subprocess that sees no GPU),
   and encoded on the CPU decoded on the GPU: decode errors (the latent check) and the
   largest sample difference.

``--device cpu --dry-run`` runs every step at toy sizes on the CPU (the ``tiny`` variant,
a few crops, seconds of training): the suite runs it, so the script works the first time
it meets a GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.artefacts.checkpoint import save_checkpoint  # noqa: E402  (the repository on the path first)
from harness.artefacts.coding import to_tensor  # noqa: E402
from harness.artefacts.decode_check import write_case  # noqa: E402
from harness.model.loss import LossConfig, RateDistortionLoss  # noqa: E402
from harness.model.precision import set_precision  # noqa: E402
from harness.pixels.images import load_rgb  # noqa: E402
from harness.provenance import cpu_name  # noqa: E402
from harness.zoo.factory import build_model  # noqa: E402

KODAK = sorted((REPO / "datasets" / "kodak").glob("*.png"))
PAPER_S = {"encode": 0.256, "decode": 0.259}  # Table I, RTX 4090, Kodak


@dataclass(frozen=True)
class Sizes:
    variant: str
    images: int
    crop: int | None  # None: whole Kodak images
    batch: int
    patch: int
    speed_steps: int
    train_s: float
    shard_patch: int


FULL = Sizes("3dm-weconvene", 24, None, 8, 256, 20, 240.0, 256)
DRY = Sizes("tiny", 2, 128, 2, 64, 2, 5.0, 64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(sizes: Sizes) -> list[np.ndarray]:
    images = [load_rgb(path).pixels for path in KODAK[: sizes.images]]
    return [np.ascontiguousarray(p[: sizes.crop, : sizes.crop]) if sizes.crop else p for p in images]


def cuda_tests(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "tests"], cwd=REPO,
                          capture_output=True, text=True)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return {"exit": done.returncode, "summary": summary}


def coding_times(device: torch.device, sizes: Sizes) -> dict:
    torch.manual_seed(0)
    model = build_model(sizes.variant).eval()
    model.update(force=True)
    model.to(device)
    out = {}
    with torch.inference_mode():
        tensors = [to_tensor(p).to(device) for p in _images(sizes)]
        for precision in ("fp32", "bf16"):
            set_precision(model, precision)
            warm = model.compress(tensors[0])
            model.decompress(warm["strings"], warm["shape"], warm["size"])
            enc, dec = [], []
            for x in tensors:
                _sync(device)
                start = time.perf_counter()
                encoded = model.compress(x)
                _sync(device)
                enc.append(time.perf_counter() - start)
                model.decompress(encoded["strings"], encoded["shape"], encoded["size"])
                _sync(device)
                dec.append(time.perf_counter() - start - enc[-1])
            out[precision] = {"encode_s": statistics.fmean(enc), "decode_s": statistics.fmean(dec), "images": len(enc)}
    return out


def training_speed(device: torch.device, sizes: Sizes) -> dict:
    loss = RateDistortionLoss(LossConfig(0.013))
    out = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(sizes.variant).to(device).train()
        set_precision(model, precision)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.rand(sizes.batch, 3, sizes.patch, sizes.patch, device=device)
        for step in range(sizes.speed_steps + 2):  # two warm-up steps: allocator, cuDNN's choice of kernels
            if step == 2:
                _sync(device)
                start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss(model(x), x)["loss"].backward()
            optimizer.step()
        _sync(device)
        out[precision] = {"images_per_s": sizes.speed_steps * sizes.batch / (time.perf_counter() - start)}
        del model, optimizer
    return out


def make_shards(photos: Path, work: Path, sizes: Sizes) -> Path:
    shards = work / "shards"
    subprocess.run([sys.executable, "-m", "harness", "prepare-data", "--source", f"folder:{photos}", "--out",
                    str(shards), "--patch", str(sizes.shard_patch), "--patches-per-image", "8", "--val-fraction",
                    "0.1", "--no-progress"], cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return shards


def training_curve(device: torch.device, sizes: Sizes, shards: Path, out_dir: Path) -> dict:
    from harness.data.stream import train_loader

    torch.manual_seed(0)
    model = build_model(sizes.variant).to(device).train()
    set_precision(model, "bf16")
    loss = RateDistortionLoss(LossConfig(0.013))
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, lr=1e-4), torch.optim.Adam(aux, lr=1e-3)
    rows, step, start = [], 0, time.perf_counter()
    with open(out_dir / "train_curve.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "seconds", "loss", "psnr", "bpp"])
        writer.writeheader()
        for batch in train_loader(shards, sizes.patch, sizes.batch):
            batch = batch.to(device, non_blocking=True)
            result = loss(model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            result["loss"].backward()
            torch.nn.utils.clip_grad_norm_(main, 1.0)
            optimizer.step()
            aux_optimizer.zero_grad(set_to_none=True)
            model.aux_loss().backward()
            aux_optimizer.step()
            step += 1
            elapsed = time.perf_counter() - start
            if step % 10 == 0 or elapsed >= sizes.train_s:
                rows.append({"step": step, "seconds": round(elapsed, 2), "loss": result["loss"].item(),
                             "psnr": result["psnr"].item(), "bpp": result["bpp"].item()})
                writer.writerow(rows[-1])
                handle.flush()
            if elapsed >= sizes.train_s:
                break
    _plot(rows, out_dir / "train_curve.png")
    model.update(force=True)
    save_checkpoint(model.cpu().eval(), out_dir / "trained.pt")
    return {"steps": step, "seconds": rows[-1]["seconds"], "images_per_s": step * sizes.batch / rows[-1]["seconds"],
            "first": rows[0], "last": rows[-1]}


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for axis, key in zip(axes, ("loss", "psnr", "bpp")):
        axis.plot([r["step"] for r in rows], [r[key] for r in rows])
        axis.set_xlabel("step")
        axis.set_title(key)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def cross_device(device: torch.device, sizes: Sizes, checkpoint: Path, work: Path) -> dict:
    """Encode where ``device`` is and decode on the CPU, and the reverse; fp32 transforms with TF32
    off, so g_s's rounding is the only difference left and the latent must match exactly."""
    from harness.artefacts.checkpoint import load_checkpoint

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    results = {}
    images = _images(sizes)
    for writer, reader in dict.fromkeys(((device.type, "cpu"), ("cpu", device.type))):
        folder = work / f"{writer}-to-{reader}"
        folder.mkdir()
        model = load_checkpoint(checkpoint).to(writer)
        with torch.inference_mode():
            for index, pixels in enumerate(images):
                write_case(model, pixels, folder / f"image{index:02d}")
        env = {**os.environ, "PYTHONPATH": str(REPO), **({"CUDA_VISIBLE_DEVICES": ""} if reader == "cpu" else {})}
        done = subprocess.run([sys.executable, "-m", "harness.artefacts.decode_check", "--device", reader,
                               str(checkpoint), str(folder)], cwd=REPO, env=env, capture_output=True, text=True)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        results[f"{writer} -> {reader}"] = {
            "images": len(images), "decoded": len(lines),
            "latent_errors": sum(r["error"] is not None and "latent" in r["error"] for r in lines),
            "mismatches": sum(r["status"] != "ok" for r in lines) + len(images) - len(lines),
            "max_diff": max((r["max_diff"] for r in lines if r["max_diff"] is not None), default=None),
            **({"stderr": done.stderr.strip().splitlines()[-1]} if done.returncode else {}),
        }
    return results


def markdown(report: dict) -> str:
    lines = [f"GPU check ({report['device']}, torch {report['torch']}, {report['when']}, {report['wall_s']:.0f} s)", ""]
    lines.append(f"- CUDA tests: {report['cuda_tests'].get('summary', report['cuda_tests'].get('skipped'))}")
    for precision, row in report["coding"].items():
        lines.append(f"- Kodak {precision}: encode {row['encode_s']:.3f} s, decode {row['decode_s']:.3f} s per image "
                     f"({row['images']} images; paper, RTX 4090: {PAPER_S['encode']} / {PAPER_S['decode']} s)")
    speed = report["training_speed"]
    lines.append(f"- training, batch {report['sizes']['batch']} x {report['sizes']['patch']}^2: fp32 "
                 f"{speed['fp32']['images_per_s']:.1f} img/s, bf16 {speed['bf16']['images_per_s']:.1f} img/s")
    curve = report["training_curve"]
    lines.append(f"- bf16 training for {curve['seconds']:.0f} s: {curve['steps']} steps; PSNR {curve['first']['psnr']:.2f}"
                 f" -> {curve['last']['psnr']:.2f} dB, bpp {curve['first']['bpp']:.3f} -> {curve['last']['bpp']:.3f}")
    for way, row in report["cross_device"].items():
        lines.append(f"- {way}: {row['mismatches']} mismatches of {row['images']} ({row['latent_errors']} latent "
                     f"errors), largest sample difference {row['max_diff']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes (the tiny variant, seconds of training)")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "photos",
                        help="training photos (default ../shared/data/photos; Kodak when that is missing)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu-check")
    args = parser.parse_args()
    device, sizes = torch.device(args.device), DRY if args.dry_run else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    photos = args.photos if args.photos.is_dir() else REPO / "datasets" / "kodak"
    started = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
              "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "sizes": sizes.__dict__, "photos": str(photos)}

    def step(name: str, function, *function_args) -> None:
        begin = time.perf_counter()
        report[name] = function(*function_args)
        print(f"gpu_check: {name} done in {time.perf_counter() - begin:.0f} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        step("cuda_tests", cuda_tests, device)
        step("coding", coding_times, device, sizes)
        step("training_speed", training_speed, device, sizes)
        shards = make_shards(photos, work, sizes)
        step("training_curve", training_curve, device, sizes, shards, args.out)
        step("cross_device", cross_device, device, sizes, args.out / "trained.pt", work)
    report["wall_s"] = time.perf_counter() - started
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(markdown(report))
    failed = report["cuda_tests"].get("exit", 0) or any(r["mismatches"] for r in report["cross_device"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
