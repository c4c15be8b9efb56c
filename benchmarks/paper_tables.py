"""The paper's Tables II-IV measured on this machine (issue 33): encode and decode time of kodim01
and parameters of ``3dm-weconvene`` against the ablations it is compared with, as ratios beside
the paper's (../shared/data/reference/published/3dm-weconvene-ablations.csv, RTX 4090, Kodak).

* Table II: 3DM-WeConv (``3dm-weconvene``) against WeConv (``weconv2d``) and 3x3 convolutions
  in the high subbands (``hf3x3``).
* Table III: two spatial DWT levels (``3dm-weconvene``) against one (``levels1``).
* Table IV: 3DWeChARM (``3dm-weconvene``) against WeChARM (``wecharm2d``); the paper: +22 %
  encode, +17 % decode, -25 % parameters.

Every model is freshly initialised (seed 0, tables and integer path built) and codes kodim01
with ``compress``/``decompress`` (the integer entropy path), all variants interleaved in one
process, medians of ``--repeats``. Times in absolute terms are this CPU's, not a GPU's: the
ratios are what compares. Parameters are the trainable ones (``harness model-info``).

Usage: PYTHONPATH=. python benchmarks/paper_tables.py [--repeats 3] [--precision auto]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import torch

from harness.artefacts.coding import to_tensor
from harness.model.precision import set_precision
from harness.pixels.images import load_rgb
from harness.precisions import AUTO, CHOICES
from harness.zoo.factory import build_model

# Sibling benchmark scripts (this folder is on sys.path when a script here runs).
from bitstream import timed
from speed import machine

REPO = Path(__file__).resolve().parents[1]
KODIM01 = REPO / "datasets" / "kodak" / "kodim01.png"
PUBLISHED = REPO.parent / "shared" / "data" / "reference" / "published" / "3dm-weconvene-ablations.csv"

# (table, variant here, its row in the paper's csv, reference variant here, the reference's row)
COMPARISONS = (
    ("II", "weconv2d", "WeConv (2D DWT) instead of 3DM-WeConv", "3dm-weconvene", "3DM-WeConv (1x1 in HF subbands)"),
    ("II", "hf3x3", "3x3 in HF subbands", "3dm-weconvene", "3DM-WeConv (1x1 in HF subbands)"),
    ("III", "3dm-weconvene", "two spatial DWT levels", "levels1", "one spatial DWT level"),
    ("IV", "3dm-weconvene", "3DWeChARM entropy model", "wecharm2d", "WeChARM (2D) entropy model"),
)
VARIANTS = ("3dm-weconvene", "weconv2d", "hf3x3", "levels1", "wecharm2d")


def published() -> dict[tuple[str, str], tuple[float, float, float]]:
    """(table, row) -> (encode s, decode s, M parameters) on Kodak, from the paper's tables."""
    with PUBLISHED.open() as file:
        rows = csv.DictReader(line for line in file if not line.startswith("#"))
        return {(r["table"], r["variant"]): (float(r["enc_s"]), float(r["dec_s"]), float(r["params_m"]))
                for r in rows if r["dataset"] == "kodak"}


def measure(args: argparse.Namespace) -> dict[str, tuple[float, float, float]]:
    """variant -> (median encode s, median decode s, M parameters) on kodim01."""
    x = to_tensor(load_rgb(KODIM01).pixels)
    models = {}
    for variant in VARIANTS:
        torch.manual_seed(0)
        model = build_model(variant).eval()
        model.update(force=True)
        set_precision(model, args.precision)
        models[variant] = model
    times: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    with torch.no_grad():
        for model in models.values():  # warm-up: kernels, allocator
            small = model.compress(x[..., :64, :64])
            model.decompress(small["strings"], small["shape"], small["size"])
        for _ in range(args.repeats):
            for variant, model in models.items():
                encoded, enc = timed(model.compress, x)
                _, dec = timed(model.decompress, encoded["strings"], encoded["shape"], encoded["size"])
                times[variant].append((enc, dec))
    return {variant: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs),
                      sum(p.numel() for p in models[variant].parameters()) / 1e6)
            for variant, runs in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default=AUTO, choices=CHOICES)
    args = parser.parse_args()
    print(machine(args.precision))
    ours, paper = measure(args), published()
    print(f"\nkodim01, median of {args.repeats}, interleaved:")
    for variant, (enc, dec, params) in ours.items():
        print(f"  {variant:14s} encode {enc:6.2f} s  decode {dec:6.2f} s  {params:6.2f} M parameters")
    print("\nratio variant / reference: here (paper)")
    for table, variant, row, reference, reference_row in COMPARISONS:
        here = [a / b for a, b in zip(ours[variant], ours[reference])]
        there = [a / b for a, b in zip(paper[(table, row)], paper[(table, reference_row)])]
        cells = "  ".join(f"{what} {h:.2f}x ({t:.2f}x)" for what, h, t in zip(("encode", "decode", "params"), here, there))
        print(f"  Table {table:3s} {variant} / {reference}: {cells}")


if __name__ == "__main__":
    main()
