"""What a user waits for (issue 33): kodim01 with the default model against CompressAI's ELIC.

One command, every figure from the same machine in the same run:

* **whole process**: ``harness compress`` and ``harness decompress`` of kodim01, each a fresh
  process charged its whole start-up, next to a process that imports CompressAI, builds
  ``Elic2022Official`` (freshly initialised from seed 0, fp32, the way its users run it),
  updates its tables and codes the same direction. Run interleaved (ours, ELIC, ours, ELIC,
  ...); medians, ratios and each process's peak RSS (``wait4``). Goal: <= 1.15x each way.
* **fixed cost**: ``harness compress`` of a 64x64 crop against ``python -c "import torch,
  compressai"`` (goal: <= 0.8 s more), ``harness --help`` against ``python -c "import torch"``
  (goal: <= 0.5x); peak RSS of the kodim01 decode (goal: <= 1.5 GB).
* **in process**: ``model.compress`` / ``model.decompress`` of kodim01 against ELIC's, both
  models loaded once, interleaved. Goals: encode <= 1.0x, decode <= 0.8x ELIC fp32.
* **transforms**: g_a, h_a, g_s and h_s (both branches, float) of kodim01, each timed in the
  precision coding uses and its GFLOP (torch's FlopCounterMode) over the time, next to the rate
  of a 3x3 channels-last convolution of N channels measured here in bf16 and in fp32. Goal:
  g_a and g_s at >= 60 % of the bf16 rate (on an AMX host, where bf16 is the coding precision).

``--precision auto`` (the default) is bf16 where the CPU has AMX and fp32 elsewhere, as
``harness compress`` chooses; the header says which, and whether this CPU has AMX. This process
asks torch for huge pages as ``harness`` does (:func:`harness.process_memory.huge_pages_for_torch`),
so the in-process figures are the CLI's; the processes it starts, ELIC's among them, run in the
environment it was given (the header says what torch was told, and the kernel's THP mode).

Usage: PYTHONPATH=. python benchmarks/speed.py [--repeats 3] [--model default.pt] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.process_memory import huge_pages_for_torch

USER_ENVIRONMENT = dict(os.environ)  # every process started here runs in it: ELIC's as its users run it
huge_pages_for_torch()  # this process codes in process as `harness compress` does: set before torch is imported

import torch  # noqa: E402
from compressai.models import Elic2022Official  # noqa: E402
from PIL import Image  # noqa: E402

from harness.artefacts.checkpoint import load_checkpoint
from harness.artefacts.coding import to_tensor
from harness.model.precision import bf16_is_fast, resolve, set_precision
from harness.pixels.images import load_rgb
from harness.precisions import AUTO, CHOICES

# Sibling benchmark scripts (this folder is on sys.path when a script here runs).
from bitstream import gflop, timed

REPO = Path(__file__).resolve().parents[1]
KODIM01 = REPO / "datasets" / "kodak" / "kodim01.png"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

# ELIC as its users run it: CompressAI's model, freshly initialised (seed 0: the decoder builds
# the same tables), fp32, its own compress/decompress. argv: compress IMAGE OUT | decompress IN PNG
ELIC = """
import pickle, sys
import numpy as np, torch
from PIL import Image
from compressai.models import Elic2022Official
torch.manual_seed(0)
model = Elic2022Official().eval()
model.update(force=True)
with torch.no_grad():
    if sys.argv[1] == "compress":
        pixels = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
        out = model.compress(x)
        with open(sys.argv[3], "wb") as f:
            pickle.dump({"strings": out["strings"], "shape": out["shape"]}, f)
    else:
        with open(sys.argv[2], "rb") as f:
            coded = pickle.load(f)
        x_hat = model.decompress(coded["strings"], coded["shape"])["x_hat"]
        pixels = (x_hat[0] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(sys.argv[3])
"""


def run(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one process, which must succeed; anything it prints on
    stderr is noted. The RSS comes from /usr/bin/time, which forks from a small process: a child
    forked from this one would count this process's pages in its peak until it execs."""
    env = {**USER_ENVIRONMENT, "PYTHONPATH": str(REPO)}  # `harness` asks for huge pages itself
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        # in the repository's root: `python -m harness` imports from the working directory first,
        # so from another checkout's root it would time that checkout's code
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        wall = time.perf_counter() - start
        kilobytes = int(peak.read().split()[-1])
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
    if done.stderr.strip():
        print(f"  note: {' '.join(argv[1:4])[:60]} wrote to stderr: {done.stderr.strip().splitlines()[-1]}")
    return wall, kilobytes / 1e6


def interleaved(runs: dict[str, list[str]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median wall time and largest peak RSS of each command, run A B C A B C ..."""
    times: dict[str, list[float]] = {key: [] for key in runs}
    peaks: dict[str, float] = {key: 0.0 for key in runs}
    for _ in range(repeats):
        for key, argv in runs.items():
            wall, peak = run(argv)
            times[key].append(wall)
            peaks[key] = max(peaks[key], peak)
    return {key: (statistics.median(values), peaks[key]) for key, values in times.items()}


def whole_process(args: argparse.Namespace, model: Path, work: Path) -> None:
    py, harness = sys.executable, [sys.executable, "-m", "harness"]
    small = work / "small.png"
    Image.open(KODIM01).crop((0, 0, 64, 64)).save(small)
    precision = ["--precision", args.precision]
    # one untimed round first: the files decompress reads, a warm page cache for every run, and
    # numba's kernels compiled for every type these runs meet (cached on disk; `make setup`
    # compiles most of them, but some types depend on the data)
    run([*harness, "compress", str(KODIM01), "-m", str(model), "-o", str(work / "ours.3dmw"), *precision])
    run([*harness, "decompress", str(work / "ours.3dmw"), "-m", str(model), "-o", str(work / "o.png"), *precision])
    run([*harness, "compress", str(small), "-m", str(model), "-o", str(work / "s.3dmw"), *precision])
    run([py, "-c", ELIC, "compress", str(KODIM01), str(work / "elic.pkl")])
    coded = interleaved({
        "ours compress": [*harness, "compress", str(KODIM01), "-m", str(model), "-o", str(work / "o.3dmw"), *precision],
        "ELIC compress": [py, "-c", ELIC, "compress", str(KODIM01), str(work / "e.pkl")],
        "ours decompress": [*harness, "decompress", str(work / "ours.3dmw"), "-m", str(model), "-o",
                            str(work / "o.png"), *precision],
        "ELIC decompress": [py, "-c", ELIC, "decompress", str(work / "elic.pkl"), str(work / "e.png")],
    }, args.repeats)
    print(f"\nwhole process, kodim01 (median of {args.repeats}, interleaved; peak RSS):")
    for key, (wall, peak) in coded.items():
        print(f"  {key:16s} {wall:6.2f} s  {peak:5.2f} GB")
    for way in ("compress", "decompress"):
        print(f"  {way}: ours / ELIC {coded[f'ours {way}'][0] / coded[f'ELIC {way}'][0]:.2f}x (goal <= 1.15x)")
    fixed = interleaved({
        "harness compress 64x64": [*harness, "compress", str(small), "-m", str(model), "-o", str(work / "s.3dmw"),
                                   *precision],
        "import torch, compressai": [py, "-c", "import torch, compressai"],
        "harness --help": [*harness, "--help"],
        "import torch": [py, "-c", "import torch"],
    }, args.repeats)
    print(f"\nfixed cost (median of {args.repeats}, interleaved; peak RSS):")
    for key, (wall, peak) in fixed.items():
        print(f"  {key:24s} {wall:6.2f} s  {peak:5.2f} GB")
    extra = fixed["harness compress 64x64"][0] - fixed["import torch, compressai"][0]
    print(f"  compress 64x64 - import torch, compressai: {extra:+.2f} s (goal <= 0.8 s)")
    print(f"  --help / import torch: {fixed['harness --help'][0] / fixed['import torch'][0]:.2f}x (goal <= 0.5x)")
    print(f"  peak RSS of the kodim01 decode: {coded['ours decompress'][1]:.2f} GB (goal <= 1.5 GB); of "
          f"import torch, compressai alone: {fixed['import torch, compressai'][1]:.2f} GB")


def conv_rate(dtype: torch.dtype, channels: int, height: int, width: int, repeats: int) -> float:
    """GFLOP/s of a channels-last 3x3 convolution, ``channels`` in and out, stride 1, padding 1."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.rand(1, channels, height, width).to(dtype=dtype, memory_format=torch.channels_last)
    flops = 2 * channels * channels * 9 * height * width / 1e9
    with torch.no_grad():
        conv(x)
        return flops / statistics.median(timed(conv, x)[1] for _ in range(repeats))


def in_process(args: argparse.Namespace, model_path: Path) -> None:
    ours = load_checkpoint(model_path)
    precision = set_precision(ours, args.precision)
    torch.manual_seed(0)
    elic = Elic2022Official().eval()
    elic.update(force=True)
    x = to_tensor(load_rgb(KODIM01).pixels)
    runs: dict[str, list[float]] = {"ours encode": [], "ours decode": [], "ELIC encode": [], "ELIC decode": []}
    with torch.no_grad():
        small = x[..., :64, :64]
        ours.decompress(**_decode_args(ours.compress(small)))
        elic.decompress(**_decode_args(elic.compress(small), elic=True))
        for _ in range(args.repeats):
            for key, model in (("ours", ours), ("ELIC", elic)):
                encoded, enc = timed(model.compress, x)
                _, dec = timed(lambda: model.decompress(**_decode_args(encoded, elic=model is elic)))
                runs[f"{key} encode"].append(enc)
                runs[f"{key} decode"].append(dec)
    median = {key: statistics.median(values) for key, values in runs.items()}
    print(f"\nin process, kodim01, ours in {precision} (median of {args.repeats}, interleaved):")
    for key, value in median.items():
        print(f"  {key:12s} {value:6.2f} s")
    print(f"  encode: ours / ELIC {median['ours encode'] / median['ELIC encode']:.2f}x (goal <= 1.0x); decode: "
          f"{median['ours decode'] / median['ELIC decode']:.2f}x (goal <= 0.8x)")
    transforms(args, ours, x)


def _decode_args(encoded: dict, elic: bool = False) -> dict:
    if elic:
        return {"strings": encoded["strings"], "shape": encoded["shape"]}
    return {"strings": encoded["strings"], "shape": encoded["shape"], "size": encoded["size"]}


def transforms(args: argparse.Namespace, ours, x: torch.Tensor) -> None:
    codec = ours.latent_codec
    with torch.no_grad():
        y = ours.g_a(ours.pad(x))
        subbands = codec.analysis(y)
        hyper_in = torch.cat([subbands[name] for name in ours.config.subbands], dim=1)
        z = torch.round(codec.h_a(hyper_in))
        y_hat = torch.round(y)
        calls = {
            "g_a": (ours.g_a, ours.pad(x)),
            "h_a": (codec.h_a, hyper_in),
            "g_s": (ours.g_s, y_hat),
            "h_s": (lambda t: (codec.h_s_mean(t), codec.h_s_scale(t)), z),
        }
        rates = {}
        for name, (function, tensor) in calls.items():
            flops = gflop(function, tensor)
            function(tensor)  # warm-up
            seconds = statistics.median(timed(function, tensor)[1] for _ in range(args.repeats))
            rates[name] = (flops, seconds)
        height, width = x.shape[-2] // 2, x.shape[-1] // 2
        bf16 = conv_rate(torch.bfloat16, ours.config.N, height, width, args.repeats)
        fp32 = conv_rate(torch.float32, ours.config.N, height, width, args.repeats)
    print(f"\ntransforms on kodim01 (g_a, h_a, g_s in {ours.precision}; h_s float32, as its float networks; "
          f"median of {args.repeats}):")
    print(f"  3x3 channels-last convolution, {ours.config.N} channels at {width}x{height}: bf16 {bf16:.0f} GFLOP/s, "
          f"fp32 {fp32:.0f} GFLOP/s")
    for name, (flops, seconds) in rates.items():
        rate = flops / seconds
        goal = " (goal: >= 60 % of bf16's)" if name in ("g_a", "g_s") else ""
        print(f"  {name}: {flops:7.1f} GFLOP in {seconds:6.3f} s = {rate:6.0f} GFLOP/s, {100 * rate / bf16:5.1f} % of "
              f"bf16's rate, {100 * rate / fp32:5.1f} % of fp32's{goal}")


def machine(precision: str) -> str:
    """The line this benchmark and paper_tables.py open with: torch, the processor, CPUs and
    threads, whether AMX's bf16 is there, and what ``--precision`` resolves to."""
    amx = bf16_is_fast("cpu")
    return (f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
            f"{torch.get_num_threads()} thread(s); AMX bf16 {'available' if amx else 'NOT available'}"
            f"; --precision {precision} = {resolve(precision)}; tensors on huge pages (THP_MEM_ALLOC_ENABLE) "
            f"{os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, kernel THP mode {_thp_mode()}")


def _thp_mode() -> str:
    try:
        return THP_MODE.read_text().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, help="checkpoint of the default variant (default: harness init-model, "
                        "seed 0, in a temporary folder)")
    parser.add_argument("--precision", default=AUTO, choices=CHOICES)
    args = parser.parse_args()
    print(machine(args.precision))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = args.model
        if model is None:
            model = work / "default.pt"
            run([sys.executable, "-m", "harness", "init-model", "--out", str(model), "--seed", "0"])
        whole_process(args, model, work)
        in_process(args, model)


if __name__ == "__main__":
    main()
