"""Peak memory and time against image size (issue 34): whole images and tiles within a budget.

Images of 0.4, 2, 6, 12 and 33 MP (768x512 up to 7680x4320, 3:2 and 16:9) are resized from
``../shared/data/photos`` into a temporary folder. Each is compressed and decompressed with
``harness compress`` / ``harness decompress`` in a fresh process, whose peak RSS and wall time
``/usr/bin/time -f "%M %e"`` reports: once without a budget (the harness's default: whole, or
in tiles with a notice when the machine has not the memory) and once with ``--max-memory
BUDGET`` (tiles where the whole image does not fit it). Models: a freshly
initialised checkpoint of ``--variant`` (default: the paper's model) and of ``--baseline`` (a
CompressAI model, which codes whole images only: with a budget it is refused in one line,
reported as such). Prints one table and writes a plot (peak RSS and time against megapixels).

Usage: PYTHONPATH=. python benchmarks/memory.py [--sizes 0.4,2,6,12,33] [--budget 4G]
       [--variant 3dm-weconvene] [--baseline compressai:bmshj2018-hyperprior] [--precision fp32]
       [--threads 1] [--plot benchmarks/memory.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "photos"
SIDES = {0.4: (768, 512), 2: (1728, 1152), 6: (3072, 2048), 12: (4320, 2880), 33: (7680, 4320)}


def _image(folder: Path, megapixels: float) -> Path:
    """A photo resized (and cropped to the aspect) to the size of ``megapixels``."""
    width, height = SIDES[megapixels]
    path = folder / f"{megapixels:g}mp.png"
    with Image.open(sorted(PHOTOS.glob("*.png"))[0]) as photo:
        photo = photo.convert("RGB")
        scale = max(width / photo.width, height / photo.height)
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
        left, top = (photo.width - width) // 2, (photo.height - height) // 2
        photo.crop((left, top, left + width, top + height)).save(path)
    return path


def _run(args: list, threads: int) -> tuple[int, float, float, str]:
    """(exit status, peak RSS in GB, wall seconds, last line of output) of one harness command."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "harness", *map(str, args)],
                          capture_output=True, text=True, env=env)
    lines = done.stderr.strip().splitlines()
    peak_kib, seconds = lines[-1].split()
    message = (done.stdout.strip().splitlines() or [""])[-1] if done.returncode == 0 else " ".join(lines[:-1])
    return done.returncode, int(peak_kib) * 1024 / 1e9, float(seconds), message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.4,2,6,12,33", help="megapixels, of " + ",".join(map(str, SIDES)))
    parser.add_argument("--budget", default="4G", help="--max-memory of the tiled runs")
    parser.add_argument("--variant", default="3dm-weconvene")
    parser.add_argument("--baseline", default="compressai:bmshj2018-hyperprior")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=REPO / "benchmarks" / "memory.png")
    args = parser.parse_args()
    sizes = [float(s) if "." in s else int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="harness-memory-") as scratch:
        folder = Path(scratch)
        for model in (args.variant, args.baseline):
            checkpoint = folder / f"{model.replace(':', '-')}.pt"
            subprocess.run([sys.executable, "-m", "harness", "init-model", "--variant", model, "--out", checkpoint],
                           check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            for megapixels in sizes:
                image = _image(folder, megapixels)
                for budget in (None, args.budget):
                    flags = ["--precision", args.precision] + (["--max-memory", budget] if budget else [])
                    stream, out = folder / "x.3dmw", folder / "x.png"
                    enc = _run(["compress", image, "-m", checkpoint, "-o", stream, *flags], args.threads)
                    dec = _run(["decompress", stream, "-m", checkpoint, "-o", out, *flags], args.threads) \
                        if enc[0] == 0 else (1, float("nan"), float("nan"), "not encoded")
                    rows.append((model, megapixels, budget or "default", enc, dec))
                    status = "ok" if enc[0] == dec[0] == 0 else f"refused/failed: {(enc[3] or dec[3])[:150]}"
                    print(f"{model:<34} {megapixels:>5g} MP {budget or 'default':>7}  enc {enc[1]:6.2f} GB {enc[2]:7.1f} s"
                          f"  dec {dec[1]:6.2f} GB {dec[2]:7.1f} s  {status}", flush=True)
                    stream.unlink(missing_ok=True)
                    out.unlink(missing_ok=True)
    _plot(rows, args.plot)
    print(f"plot: {args.plot}")


def _plot(rows: list, path: Path) -> None:
    figure, (memory, seconds) = plt.subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(row[0] for row in rows):
        for budget in dict.fromkeys(row[2] for row in rows):
            mine = [row for row in rows if row[0] == model and row[2] == budget and row[3][0] == 0]
            if not mine:
                continue
            label = f"{model} ({'no budget' if budget == 'default' else 'max-memory ' + budget})"
            megapixels = [row[1] for row in mine]
            memory.plot(megapixels, [row[3][1] for row in mine], marker="o", label=f"{label} enc")
            memory.plot(megapixels, [row[4][1] for row in mine], marker="x", linestyle="--", label=f"{label} dec")
            seconds.plot(megapixels, [row[3][2] for row in mine], marker="o", label=f"{label} enc")
            seconds.plot(megapixels, [row[4][2] for row in mine], marker="x", linestyle="--", label=f"{label} dec")
    memory.set(xlabel="image (MP)", ylabel="peak RSS (GB)", title="peak memory")
    seconds.set(xlabel="image (MP)", ylabel="wall time (s)", title="time")
    memory.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
