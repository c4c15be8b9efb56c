"""Leaderboard scaling: the classical codecs (quick profile) over the first N
Kodak images with a local Ray instance of 1 and then 2 CPUs, same process,
every cell recomputed (--force). Prints wall seconds, cells/s and the speedup,
and appends them with the command to benchmarks/RESULTS.md.

    PYTHONPATH=. python benchmarks/leaderboard.py --images 6
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from harness.leaderboard.config import LeaderboardConfig
from harness.leaderboard.plan import plan
from harness.leaderboard.run import execute

REPO = Path(__file__).resolve().parents[1]
CLASSICAL = ("vvc", "hevc", "av1", "jpeg2000", "webp", "jpeg")


def measure(workers: int, images: int, reports: Path, codecs: tuple[str, ...] = CLASSICAL, **options) -> tuple[float, int]:
    """Wall seconds and cells of one leaderboard run (every cell recomputed, warm worker pool);
    ``options``: further LeaderboardConfig fields (e.g. ``metrics``, ``run_name``)."""
    import ray

    options = {"run_name": f"w{workers}", **options}
    config = LeaderboardConfig(datasets=("kodak",), codecs=codecs, reports_dir=reports, max_images=images, force=True,
                               num_cpus=workers, progress=False, **options)
    plan_ = plan(config)
    ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        # Warm the worker pool so that start-up is not part of the timing.
        ray.get([ray.remote(num_cpus=1)(lambda: None).remote() for _ in range(workers)])
        start = time.perf_counter()
        rows = execute(plan_, config)
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    failed = [r["error"] for r in rows if r["status"] != "ok"]
    if failed:
        sys.exit(f"{len(failed)} cells failed, e.g. {failed[0]}")
    return elapsed, len(rows)


def publish(lines: list[str], append: bool) -> None:
    """Print a result section and append it to benchmarks/RESULTS.md."""
    text = "\n".join(lines)
    print(text)
    if append:
        with open(REPO / "benchmarks" / "RESULTS.md", "a") as out:
            out.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        one, cells = measure(1, args.images, Path(scratch))
        two, _ = measure(2, args.images, Path(scratch))
    load = max(load_before, os.getloadavg()[0])
    cores = os.cpu_count() or 1
    lines = [
        f"\n## leaderboard: 1 vs 2 Ray workers, classical codecs, {args.images} Kodak images ({cells} cells)\n",
        f"`PYTHONPATH=. python benchmarks/leaderboard.py --images {args.images}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{cores} cores, 1-min load average up to {load:.1f})\n",
        "| Ray workers | wall s | cells/s |\n|---|---|---|",
        f"| 1 | {one:.1f} | {cells / one:.2f} |",
        f"| 2 | {two:.1f} | {cells / two:.2f} |",
        f"\nSpeedup 2 vs 1 workers: **{one / two:.2f}×** (goal ≥ 1.8×).\n",
    ]
    publish(lines, append=not args.no_append)


if __name__ == "__main__":
    main()
