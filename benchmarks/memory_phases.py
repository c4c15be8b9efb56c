"""Peak memory of each phase of one coding, inside one process: what the memory model is fitted to.

Loads a checkpoint as ``harness compress`` does (precision set, float entropy networks dropped),
resizes a photo to the size asked, then compresses it in tiles (or decompresses a file) while a
thread samples the process's RSS every 2 ms. Each phase is labelled as it starts: g_a, the split
of the latent (its subbands into h_a's input and the slices, h_a), each slice's prediction and
refinement, the latent's synthesis and g_s. Prints each phase's peak over the RSS once the model
and the image are loaded, in GB and in bytes per image pixel (harness/artefacts/memory.py).

    PYTHONPATH=. .venv/bin/python benchmarks/memory_phases.py CHECKPOINT --size 3072x2048 --tile 256
    PYTHONPATH=. .venv/bin/python benchmarks/memory_phases.py CHECKPOINT --tile 256 --decode FILE

The labels come from wrapping the entropy model's methods in this process only.
"""

from __future__ import annotations

import argparse
import functools
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness.artefacts import coding
from harness.artefacts.bitstream import unpack
from harness.artefacts.checkpoint import fingerprint, load_checkpoint
from harness.model import entropy
from harness.model.precision import set_precision
from harness.process_memory import resident_bytes

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "001.png"

class Phases:
    """The peak RSS seen under each label, sampled every 2 ms and at every change of label."""

    def __init__(self) -> None:
        self.label, self.peaks, self.running = "g_a", {}, True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _note(self) -> None:
        self.peaks[self.label] = max(self.peaks.get(self.label, 0), resident_bytes())

    def _sample(self) -> None:
        while self.running:
            self._note()
            time.sleep(0.002)

    def enter(self, label: str) -> None:
        self._note()
        self.label = label

    def wrap(self, owner: type, method: str, label, after: str | None = None) -> None:
        """Label the time inside ``owner.method`` with ``label()``; after it returns, ``after`` (else
        that label + " done")."""
        inner = getattr(owner, method)

        @functools.wraps(inner)
        def labelled(*args, **kwargs):
            name = label()
            self.enter(name)
            try:
                return inner(*args, **kwargs)
            finally:
                self.enter(after or f"{name} done")

        setattr(owner, method, labelled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--size", default="3072x2048", help="WIDTHxHEIGHT of the photo, resized (compress)")
    parser.add_argument("--tile", type=int, default=256, help="g_a's and g_s's tiles (pixels)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--decode", type=Path, help="decompress this file instead")
    args = parser.parse_args()
    data = args.decode.read_bytes() if args.decode else None
    width, height = (int(v) for v in args.size.split("x"))
    if data is not None:
        container = unpack(data, str(args.decode))
        width, height = container.width, container.height
    model = load_checkpoint(args.checkpoint)
    set_precision(model, args.precision)
    digest = fingerprint(model)  # of the whole model, as the CLI takes it before dropping the float networks
    model.drop_float_prior()
    pixels = None
    if data is None:
        with Image.open(PHOTO) as photo:
            pixels = np.asarray(photo.convert("RGB").resize((width, height), Image.BICUBIC))
    phases, slices = Phases(), [0]

    def next_slice() -> str:
        slices[0] += 1
        return f"slice {slices[0]:2d} predict"

    phases.wrap(entropy.SliceNet, "predict", next_slice)
    phases.wrap(entropy.SliceNet, "refine", lambda: f"slice {slices[0]:2d} refine")
    phases.wrap(entropy.WeChARM, "split_subbands", lambda: "split")
    phases.wrap(entropy.WeChARM, "synthesis", lambda: "latent synthesis", after="g_s")
    base = resident_bytes()
    phases.label = "entropy model" if data is not None else "g_a"
    phases.thread.start()
    start = time.perf_counter()
    if data is not None:
        coding.decode(model, data, digest=digest, tile=args.tile)
    else:
        coding.encode(model, pixels, digest=digest, tile=args.tile)
    seconds = time.perf_counter() - start
    phases.enter("end")
    phases.running = False
    phases.thread.join()
    what = "decompress" if data is not None else "compress"
    print(f"{what} {width}x{height} in tiles of {args.tile} px ({args.precision}): {seconds:.0f} s, "
          f"RSS once loaded {base / 1e9:.2f} GB")
    print("| phase | peak over that (GB) | bytes per image pixel |\n|---|---|---|")
    for label, peak in phases.peaks.items():
        print(f"| {label} | {(peak - base) / 1e9:.3f} | {(peak - base) / (width * height):.1f} |")


if __name__ == "__main__":
    main()
