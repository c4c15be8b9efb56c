"""Cost of the quality metrics: seconds per metric per Kodak image (768×512), one thread as
in a Ray worker, on JPEG-decoded images; then the quick-profile Kodak leaderboard (the
classical codecs and jpegxl over the first N images, 2 local Ray workers, every cell
recomputed) with the core metrics only (what every run computed before --metrics), with
the default --metrics and with --metrics all. Prints the tables and appends them with the
command to benchmarks/RESULTS.md. ``--filters`` times instead the libraries' one-plane
filters on a Kodak-sized plane, as conv2d and in strips (harness.leaderboard.planes).

    PYTHONPATH=. python benchmarks/metrics.py --images 6
    PYTHONPATH=. python benchmarks/metrics.py --filters
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness.leaderboard.metrics import DEFAULT_METRICS, METRICS, resolve_metrics
from harness.leaderboard.quality import measure
from harness.pixels.images import load_rgb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bitstream import timed  # noqa: E402  (sibling benchmarks)
from leaderboard import measure as timed_leaderboard, publish  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"
CODECS = ("vvc", "hevc", "av1", "jpegxl", "jpeg2000", "webp", "jpeg")


def per_metric_seconds() -> dict[str, list[float]]:
    """Each metric alone through :func:`measure` (so its colour conversion and the strip
    convolutions the leaderboard runs it with are counted), per image."""
    import torch

    torch.set_num_threads(1)
    times: dict[str, list[float]] = {name: [] for name in METRICS}
    for path in sorted(KODAK.glob("*.png")):
        reference = load_rgb(path).pixels
        buffer = io.BytesIO()
        Image.fromarray(reference).save(buffer, format="JPEG", quality=50)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).copy()
        for name in METRICS:
            start = time.perf_counter()
            measure(reference, decoded, (name,))
            times[name].append(time.perf_counter() - start)
    return times


# (channels, window) of the depthwise filters the libraries run on a 768×512 plane: MS-SSIM's
# separable Gaussian on RGB and on Y, IW-SSIM's 11×11 and 3×3, VIFp's 17×17 and 9×9, NLPD's 5×5.
FILTERS = ((3, (11, 1)), (3, (1, 11)), (1, (11, 1)), (1, (11, 11)), (1, (3, 3)), (1, (17, 17)), (1, (9, 9)),
           (1, (5, 5)))


def filter_seconds(repeats: int = 7) -> list[str]:
    """Best-of-``repeats`` milliseconds per filter, plain conv2d against strips, one thread."""
    import torch
    import torch.nn.functional as F

    from harness.leaderboard.planes import strip_conv2d

    torch.set_num_threads(1)

    def best(call) -> tuple[float, torch.Tensor]:
        out = call()  # oneDNN builds its kernel on the first call
        return min(timed(call)[1] for _ in range(repeats)) * 1e3, out

    lines = ["| channels | window | conv2d ms | strips ms | speed-up | largest difference |", "|---|---|---|---|---|---|"]
    for channels, window in FILTERS:
        x = torch.rand(1, channels, 512, 768, generator=torch.Generator().manual_seed(0))
        weight = torch.rand(channels, 1, *window, generator=torch.Generator().manual_seed(1))
        plain, expected = best(lambda: F.conv2d(x, weight, groups=channels))
        strips, got = best(lambda: strip_conv2d(x, weight))
        difference = float((expected - got).abs().max())
        lines.append(f"| {channels} | {window[0]}×{window[1]} | {plain:.2f} | {strips:.2f} | {plain / strips:.1f}× | "
                     f"{difference:.1e} |")
    return lines


def leaderboard_seconds(metrics: tuple[str, ...], images: int, reports: Path, name: str) -> tuple[float, int]:
    return timed_leaderboard(2, images, reports, CODECS, metrics=metrics, run_name=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="Kodak images in the leaderboard part")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--filters", action="store_true", help="time the one-plane filters only")
    args = parser.parse_args()
    if args.filters:
        publish(["\n### One-plane filters, conv2d against strips (issue 20)\n",
                 f"`PYTHONPATH=. python benchmarks/metrics.py --filters` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
                 f", {platform.machine()}, one thread, a 768×512 plane, best of 7)\n", *filter_seconds(), ""],
                append=not args.no_append)
        return
    load_before = os.getloadavg()[0]
    times = per_metric_seconds()
    for name, values in times.items():  # shown now: the leaderboard part takes minutes
        print(f"{name}: median {statistics.median(values):.3f} s, mean {statistics.fmean(values):.3f} s", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, names in (("core only (before --metrics)", ()), ("default --metrics", DEFAULT_METRICS),
                             ("--metrics all", ("all",))):
            runs[label] = leaderboard_seconds(names, args.images, Path(scratch), f"m{len(runs)}")
            print(f"{label}: {runs[label][0]:.1f} s", flush=True)
    load = max(load_before, os.getloadavg()[0])
    core = runs["core only (before --metrics)"][0]
    lines = [
        "\n## Quality metrics: seconds per Kodak image, and the quick leaderboard with --metrics (issue 20)\n",
        f"`PYTHONPATH=. python benchmarks/metrics.py --images {args.images}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, 1-min load average up to {load:.1f})\n",
        "Per metric, 24 Kodak images (768×512) against their JPEG q50 decode, one torch thread:\n",
        "| metric | default | median s / image | mean s / image |\n|---|---|---|---|",
    ]
    for name, values in times.items():
        default = "always" if name == "core" else ("yes" if name in DEFAULT_METRICS else "no")
        lines.append(f"| `{name}` | {default} | {statistics.median(values):.3f} | {statistics.fmean(values):.3f} |")
    cells = next(iter(runs.values()))[1]
    lines += [
        f"\nLeaderboard, quick profile, {', '.join(CODECS)} over the first {args.images} Kodak images "
        f"({cells} cells), 2 Ray workers, encodes included:\n",
        "| metrics | wall s | vs core only |\n|---|---|---|",
        *(f"| {label} ({', '.join(resolve_metrics(names))}) | {wall:.1f} | {wall / core:.2f}× |"
          for (label, (wall, _)), names in zip(runs.items(), ((), DEFAULT_METRICS, ("all",)))),
        "",
    ]
    publish(lines, append=not args.no_append)


if __name__ == "__main__":
    main()
