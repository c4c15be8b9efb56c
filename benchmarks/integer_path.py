"""The integer entropy path (issue 16): cross-machine decodes, rate cost, speed.

* ``cross-machine``: a fresh ``tiny`` (seed 0) and one briefly trained as
  tests/conftest.py's ``train_tiny`` code every Kodak image in this process on both
  paths (files naming "integer-2" or "float"); a subprocess per setting
  (1 and 2 threads, oneDNN limited to AVX2, AVX512_CORE, SSE41, numba compiled for a
  baseline x86-64) decodes them all
  with ``harness.artefacts.decode_check``. A mismatch is a failed decode or a sample off
  the encoder's reconstruction by more than 2. Goal: 0 on the integer path.
* ``rate``: the trained ``tiny`` on all 24 images: file bytes on the integer path
  against the bits the float likelihoods estimate (goal: at most 0.5 % more) and
  against the float path's files.
* ``speed``: compress and decompress of kodim01 with the default model (fresh,
  seed 0), integer and float path interleaved in one process. Goal: integer at most
  1.15x float each way.
* ``kept``: the same codings on the integer path, each preparing its GEMMs' weights as
  the CLI does, interleaved with codings whose weights were prepared once and kept
  (``keep_gemm_weights``, as a leaderboard worker does); ``--variant`` (default: the
  default model). Prints the medians and the memory the kept weights hold.
* ``gemms``: a coding's limb GEMMs on every GEMM this CPU offers (see :func:`gemms`).

Usage: PYTHONPATH=. python benchmarks/integer_path.py {cross-machine,rate,speed,kept,gemms} [options]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.artefacts.bitstream import unpack
from harness.artefacts.checkpoint import load_checkpoint, run_init, save_checkpoint
from harness.artefacts.config import InitModelConfig
from harness.artefacts.coding import encode, to_tensor
from harness.artefacts.decode_check import SETTINGS, write_case
from harness.model import exact_cpu
from harness.model.network import WeConvene
from harness.pixels.images import load_rgb
from harness.zoo.variants import get_config

REPO = Path(__file__).resolve().parents[1]
KODAK = sorted((REPO / "datasets" / "kodak").glob("*.png"))


def trained_tiny() -> WeConvene:
    """The test suite's briefly trained tiny (150 steps on photo crops), built by the same code."""
    spec = importlib.util.spec_from_file_location("conftest", REPO / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return conftest.train_tiny_on_photos(REPO.parent / "shared" / "data" / "photos")


def cross_machine(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="integer-path-"))
    fresh = work / "fresh.pt"
    run_init(InitModelConfig(out=fresh, variant="tiny", seed=0))
    trained = work / "trained.pt"
    save_checkpoint(trained_tiny(), trained)
    images = KODAK[: args.images]
    pairs = []
    for label, path in (("fresh", fresh), ("trained", trained)):
        folder = work / label
        folder.mkdir()
        model = load_checkpoint(path)
        for image in images:
            pixels = load_rgb(image).pixels
            for integer in (True, False):
                write_case(model, pixels, folder / f"{image.stem}-{'integer' if integer else 'float'}", integer)
        pairs += [str(path), str(folder)]
        print(f"{label}: {len(images)} images coded on both paths", flush=True)
    print("| setting | model | integer mismatches | float mismatches |\n|---|---|---|---|")
    for setting in SETTINGS:
        done = subprocess.run([sys.executable, "-m", "harness.artefacts.decode_check", *pairs], capture_output=True,
                              text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **setting})
        if done.returncode:
            raise SystemExit(done.stderr)
        results = [json.loads(line) for line in done.stdout.splitlines()]
        label = " ".join(f"{k}={v}" for k, v in setting.items())
        for model in ("fresh", "trained"):
            mine = [r for r in results if r["dir"].endswith(model)]
            counts = {path: sum(r["status"] == "error" for r in mine if r["file"].endswith(f"-{path}.3dmw"))
                      for path in ("integer", "float")}
            print(f"| {label} | {model} | {counts['integer']} of {len(images)} | {counts['float']} of {len(images)} |",
                  flush=True)


def rate(args: argparse.Namespace) -> None:
    model = trained_tiny()
    estimated = integer_bits = float_bits = headers = 0.0
    for image in KODAK:
        pixels = load_rgb(image).pixels
        with torch.no_grad():
            estimate = sum(float(-torch.log2(lk).sum()) for lk in model(to_tensor(pixels))["likelihoods"].values())
        sizes = {}
        for integer in (True, False):
            data = encode(model, pixels, integer=integer)
            sizes[integer] = 8 * len(data)
            header = 8 * (len(data) - sum(len(s) for s in unpack(data).streams))
        estimated, integer_bits, float_bits = estimated + estimate, integer_bits + sizes[True], float_bits + sizes[False]
        headers += header
        print(f"{image.name}: likelihoods {estimate:.0f} bits, integer file {sizes[True]}, float file {sizes[False]} "
              f"(header {header})", flush=True)
    print(f"24 images: integer payload / float likelihoods = {(integer_bits - headers) / estimated:.4f}, "
          f"integer files / float likelihoods = {integer_bits / estimated:.4f}, "
          f"integer files / float files = {integer_bits / float_bits:.4f} (goal: at most 0.5 % more)")


def speed(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = WeConvene(get_config("3dm-weconvene")).eval()
    model.update(force=True)
    start = time.perf_counter()
    model.latent_codec.build_integer_path()
    build = time.perf_counter() - start
    x = to_tensor(load_rgb(REPO / "datasets" / "kodak" / "kodim01.png").pixels)
    times: dict[str, list[float]] = {key: [] for key in ("integer enc", "integer dec", "float enc", "float dec")}
    with torch.no_grad():
        for integer in (True, False):  # warm-up: allocator, numba kernels, tables
            model.decompress(**_strings(model.compress(x, integer=integer)), integer=integer)
        for _ in range(args.repeats):
            for integer in (True, False):
                path = "integer" if integer else "float"
                start = time.perf_counter()
                encoded = model.compress(x, integer=integer)
                times[f"{path} enc"].append(time.perf_counter() - start)
                start = time.perf_counter()
                model.decompress(**_strings(encoded), integer=integer)
                times[f"{path} dec"].append(time.perf_counter() - start)
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {args.repeats} repeats; "
          f"building the integer path took {build:.2f} s")
    for key, values in times.items():
        print(f"{key}: median {median[key]:.3f} s ({', '.join(f'{v:.3f}' for v in values)})")
    print(f"integer / float: compress {median['integer enc'] / median['float enc']:.3f}x, "
          f"decompress {median['integer dec'] / median['float dec']:.3f}x (goal <= 1.15x)")


def kept(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = WeConvene(get_config(args.variant)).eval()
    model.update(force=True)
    x = to_tensor(load_rgb(REPO / "datasets" / "kodak" / "kodim01.png").pixels)
    times: dict[str, list[float]] = {f"{key}{part}": [] for key in ("prepared per coding", "kept")
                                     for part in ("", ": compress", ": decompress")}
    with torch.no_grad():
        model.decompress(**_strings(model.compress(x)))  # warm-up: allocator, numba kernels, tables
        for _ in range(args.repeats):
            for keep in (False, True):
                model.latent_codec.build_integer_path()  # anew: nothing kept
                if keep:
                    model.keep_gemm_weights()
                key = "kept" if keep else "prepared per coding"
                start = time.perf_counter()
                encoded = model.compress(x)
                middle = time.perf_counter()
                model.decompress(**_strings(encoded))
                end = time.perf_counter()
                times[key].append(end - start)
                times[f"{key}: compress"].append(middle - start)
                times[f"{key}: decompress"].append(end - middle)
    weights = model.integer_state()["int8"].numel()  # every int8 value is a weight of an integer convolution
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {args.variant}, "
          f"{args.repeats} repeats; GEMM: {exact_cpu._gemm()}; kept: {weights / 1e6:.1f} M int8 weights, packed")
    for key, values in sorted(times.items()):
        print(f"{key}: median {statistics.median(values):.3f} s ({', '.join(f'{v:.3f}' for v in values)})")
    saved = statistics.median(times["prepared per coding"]) - statistics.median(times["kept"])
    print(f"kept saves {saved:.3f} s a compress + decompress")


def gemms(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = WeConvene(get_config("3dm-weconvene")).eval()
    model.update(force=True)
    model.latent_codec.build_integer_path()
    x = to_tensor(load_rgb(REPO / "datasets" / "kodak" / "kodim01.png").pixels)
    calls: list[tuple[int, int, int]] = []
    first: list[bool] = []  # whether a call is its convolution's first (the chunks after it share its weight)
    product, held = exact_cpu.limb_product, []

    def recorded(limbs: torch.Tensor, weight) -> torch.Tensor:
        columns = weight.shape[1] if isinstance(weight, torch.Tensor) else weight[0].shape[1]
        calls.append((limbs.shape[0], limbs.shape[1], columns))
        first.append(not held or held[-1] is not weight)
        held[:] = [weight]  # held, so that the next convolution's weight cannot take its id
        return product(limbs, weight)

    exact_cpu.limb_product = recorded
    try:
        with torch.no_grad():
            model.compress(x)
    finally:
        exact_cpu.limb_product = product
    g = torch.Generator().manual_seed(0)
    operands = {shape: (torch.randint(-64, 65, shape[:2], generator=g).to(torch.int8),
                        torch.randint(-64, 65, shape[1:], generator=g).to(torch.int8)) for shape in set(calls)}
    chosen = exact_cpu._gemm
    paths = {exact_cpu.INT_MM: [exact_cpu.INT_MM, exact_cpu.ONEDNN, exact_cpu.FLOAT32],
             exact_cpu.ONEDNN: [exact_cpu.ONEDNN, exact_cpu.FLOAT32], exact_cpu.FLOAT32: [exact_cpu.FLOAT32]}[chosen()]
    operations = sum(2 * m * k * n for m, k, n in calls)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; this CPU's choice: "
          f"{chosen()}; {len(calls)} GEMMs, {operations / 1e9:.1f} GOP (multiply-adds x 2)")
    try:
        for path in paths:
            exact_cpu._gemm = lambda: path
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for shape, new in zip(calls, first):
                    limbs, weight = operands[shape]
                    if new:
                        prepared = exact_cpu.gemm_weight(weight)
                    exact_cpu.limb_product(limbs, prepared)
                times.append(time.perf_counter() - start)
            best = min(times)
            print(f"  {path:18s} {best:7.3f} s  {operations / best / 1e9:6.1f} GOP/s  "
                  f"(each of {args.repeats}: {', '.join(f'{t:.3f}' for t in times)})")
        same = True
        for limbs, weight in operands.values():
            expected = limbs.long() @ weight.long()
            for path in paths:
                exact_cpu._gemm = lambda: path
                same &= torch.equal(exact_cpu.limb_product(limbs, weight).long(), expected)
    finally:
        exact_cpu._gemm = chosen
    print(f"every path gives the exact integers: {same}")


def _strings(encoded: dict) -> dict:
    return {"strings": encoded["strings"], "shape": encoded["shape"], "size": encoded["size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cross = sub.add_parser("cross-machine")
    cross.add_argument("--images", type=int, default=24)
    sub.add_parser("rate")
    fast = sub.add_parser("speed")
    fast.add_argument("--repeats", type=int, default=5)
    keeping = sub.add_parser("kept")
    keeping.add_argument("--variant", default="3dm-weconvene")
    keeping.add_argument("--repeats", type=int, default=5)
    products = sub.add_parser("gemms")
    products.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    {"cross-machine": cross_machine, "rate": rate, "speed": speed, "kept": kept, "gemms": gemms}[args.command](args)


if __name__ == "__main__":
    main()
