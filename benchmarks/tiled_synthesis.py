"""How far g_s in tiles lands from g_s on the whole latent, per precision (issue 34's ±1).

A photo of ``../shared/data/photos`` resized to WIDTHxHEIGHT is analysed once in fp32 (g_a,
rounded: a real latent); g_s then synthesises it whole and in tiles of ``--tile`` pixels
(:func:`harness.model.tiling.synthesise`, the decoder's path) in fp32 and in bf16. Prints, per
precision, the largest difference of the two 8-bit images and how many samples differ.

In fp32 the tiles compute every output sample from the same inputs in the same order as the
whole image; in bf16, oneDNN's convolution kernels round each layer's output to bfloat16 and
may sum in another order for another tensor shape.

Usage: PYTHONPATH=. python benchmarks/tiled_synthesis.py --model M.pt [--size 1536x1024] [--tile 384]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.artefacts.checkpoint import load_checkpoint
from harness.artefacts.coding import to_pixels, to_tensor
from harness.model.precision import set_precision
from harness.model.tiling import G_A_STRIDE, synthesis_halo, synthesise

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "photos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a 3DM-WeConvene checkpoint")
    parser.add_argument("--size", default="1536x1024", help="WIDTHxHEIGHT of the photo")
    parser.add_argument("--tile", type=int, default=384, help="tile side in pixels")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    photo = Image.open(sorted(PHOTOS.glob("*.png"))[0]).convert("RGB").resize((width, height), Image.LANCZOS)
    x = to_tensor(np.asarray(photo))
    model = load_checkpoint(args.model).eval()
    with torch.inference_mode():
        y = torch.round(model.g_a(x))
        print(f"{width}x{height}, latent {tuple(y.shape)}, tiles of {args.tile} px, {torch.get_num_threads()} threads")
        for precision in ("fp32", "bf16"):
            set_precision(model, precision)
            halo = synthesis_halo(model.g_s, model.config)
            whole = to_pixels(model.g_s(y)).astype(np.int16)
            tiled = to_pixels(synthesise(model.g_s, y, args.tile // G_A_STRIDE, halo)).astype(np.int16)
            differ = int((whole != tiled).sum())
            print(f"  {precision}: largest difference {int(np.abs(whole - tiled).max())} grey levels, "
                  f"{differ} of {whole.size} samples differ ({100 * differ / whole.size:.2f} %)")


if __name__ == "__main__":
    main()
