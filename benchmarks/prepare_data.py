"""prepare-data throughput: patches/s with 1 vs 2 Ray workers, and the cost of
Ray + sharding per patch against a bare single-process loop.

The bare loop does only the per-patch work (Pillow decode, resize/crop through
the recipe, PNG encode) on the same images with the same recipe; the Ray runs
do everything `harness prepare-data` does (hash and screen the sources, plan,
one Ray task per shard, tar writing, shard sha256, manifest after each shard).
Ray is started and its two workers warmed up before anything is timed; the
three measurements are interleaved over ``--repeats`` rounds and the median
is reported.

    PYTHONPATH=. python benchmarks/prepare_data.py [--photos DIR] [--images N] [--repeats R]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from harness.data.recipe import PatchRecipe, cut_patch, plan_patches
from harness.data.shards import PrepareConfig, run
from harness.hashing import sha256_file
from harness.pixels.images import load_rgb

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def bare_loop(paths: list[Path], recipe: PatchRecipe) -> int:
    patches = 0
    for path in paths:
        decoded = load_rgb(path)
        image = Image.fromarray(decoded.pixels, "RGB")
        sha = sha256_file(path)  # the recipe seeds each image by its hash
        for transform in plan_patches(recipe, decoded.width, decoded.height, sha, recipe.patches_per_image):
            buffer = io.BytesIO()
            cut_patch(image, transform, recipe.patch).save(buffer, format="PNG", optimize=False, compress_level=6)
            patches += 1
    return patches


def ray_run(folder: Path, recipe: PatchRecipe, workers: int, shard_patches: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as out:
        config = PrepareConfig(sources=(f"folder:{folder}",), out=Path(out), recipe=recipe, val_fraction=0.0,
                               shard_patches=shard_patches, workers=workers, progress=False)
        start = time.perf_counter()
        manifest = run(config)
        return manifest.totals["train_patches"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=SHARED / "data" / "photos")
    parser.add_argument("--images", type=int, default=24, help="first N photos")
    parser.add_argument("--patches-per-image", type=int, default=4)
    parser.add_argument("--shard-patches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    paths = sorted(args.photos.glob("*.png"))[: args.images]
    recipe = PatchRecipe(patches_per_image=args.patches_per_image)  # paper defaults: 2000x2000, 480 patches
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for path in paths:
            (folder / path.name).symlink_to(path.resolve())
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        try:
            warm = Path(tmp) / "warm"
            warm.mkdir()
            for path in paths[:2]:
                (warm / path.name).symlink_to(path.resolve())
            ray_run(warm, PatchRecipe(patches_per_image=1), 2, 1)  # start and warm both workers
            times: dict[str, list[float]] = {"bare": [], "ray1": [], "ray2": []}
            count = 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                count = bare_loop(paths, recipe)
                times["bare"].append(time.perf_counter() - start)
                for workers in (1, 2):
                    n, seconds = ray_run(folder, recipe, workers, args.shard_patches)
                    assert n == count, (n, count)
                    times[f"ray{workers}"].append(seconds)
        finally:
            ray.shutdown()

    median = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()
    print(f"prepare-data on {len(paths)} photos x {args.patches_per_image} patches = {count} patches "
          f"(resize 2000, patch 480), shards of {args.shard_patches}; median of {args.repeats} interleaved rounds; "
          f"load average {load[0]:.1f}/{load[1]:.1f}")
    print(f"  bare loop (1 process) {median['bare']:7.2f} s  {count / median['bare']:6.2f} patches/s  "
          f"{1000 * median['bare'] / count:6.1f} ms/patch")
    for workers in (1, 2):
        seconds = median[f"ray{workers}"]
        print(f"  Ray, {workers} worker{'s' if workers > 1 else ' '}      {seconds:7.2f} s  "
              f"{count / seconds:6.2f} patches/s  {1000 * seconds / count:6.1f} ms/patch")
    print(f"  speedup 2 vs 1 workers: {median['ray1'] / median['ray2']:.2f}x (goal >= 1.8)")
    print(f"  Ray 1 worker / bare loop per patch: {median['ray1'] / median['bare']:.3f}x (goal <= 1.15)")
    print("  all rounds (s): " + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))


if __name__ == "__main__":
    main()
