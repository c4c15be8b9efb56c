"""Does a bitstream decode the same on this machine? The cross-machine check of ``.3dmw`` files.

``python -m harness.artefacts.decode_check [--device DEV] CHECKPOINT DIR [CHECKPOINT DIR ...]`` decodes every ``DIR/*.3dmw``
that has the encoder's own reconstruction beside it (``<stem>.ref.png``, written by
:func:`write_case`) in this process's setting (thread count, ``ONEDNN_MAX_CPU_ISA``,
``NUMBA_CPU_NAME``, device) and prints one JSON line per file: ``{"file", "status": "ok" | "error",
"max_diff", "identical", "error"}``. ``benchmarks/integer_path.py`` and the tests
run it in subprocesses under other settings: a decode is a mismatch when it fails
or any sample differs from the encoder's reconstruction by more than 2 (g_s's float
rounding may differ between settings; the latent may not).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from harness.artefacts.checkpoint import load_checkpoint
from harness.artefacts.coding import decode, encode_reconstruct
from harness.errors import HarnessError
from harness.model.network import WeConvene
from harness.model.precision import set_precision
from harness.pixels.images import load_rgb, save_png

# The settings the cross-machine check decodes under (tests and benchmarks/integer_path.py):
# other thread counts, oneDNN's kernels for older CPUs, and the numba kernels compiled for a
# baseline x86-64 (no AVX, no FMA).
SETTINGS: tuple[dict[str, str], ...] = (
    {"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "2"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, {"ONEDNN_MAX_CPU_ISA": "SSE41"}, {"NUMBA_CPU_NAME": "generic"},
)
TOLERANCE = 2  # g_s runs in float: its rounding may move a sample by this much, never more


def write_case(model: WeConvene, pixels: np.ndarray, stem: Path, integer: bool | None = None) -> None:
    """``stem.3dmw`` and the encoder's reconstruction ``stem.ref.png``, with ``model``'s transforms
    set to fp32, as :func:`main` decodes (in the layout ``harness compress`` runs fp32 in on the
    model's device)."""
    set_precision(model, "fp32")
    data, own = encode_reconstruct(model, pixels, integer=integer)
    stem.with_suffix(".3dmw").write_bytes(data)
    save_png(own, stem.with_suffix(".ref.png"))


def check(model: WeConvene, bitstream: Path) -> dict:
    reference = load_rgb(bitstream.with_suffix(".ref.png")).pixels.astype(np.int16)
    result = {"file": bitstream.name, "status": "ok", "max_diff": None, "identical": False, "error": None}
    try:
        pixels = decode(model, bitstream.read_bytes(), bitstream.name).astype(np.int16)
    except HarnessError as error:
        return {**result, "status": "error", "error": str(error)}
    diff = int(np.abs(pixels - reference).max())
    return {**result, "max_diff": diff, "identical": diff == 0,
            "status": "ok" if diff <= TOLERANCE else "error",
            "error": None if diff <= TOLERANCE else f"decoded image differs by up to {diff}"}


def main(argv: list[str]) -> int:
    device = "cpu"
    if argv[:1] == ["--device"] and len(argv) > 1:
        device, argv = argv[1], argv[2:]
    if not argv or len(argv) % 2:
        print("usage: python -m harness.artefacts.decode_check [--device DEV] CHECKPOINT DIR [CHECKPOINT DIR ...]",
              file=sys.stderr)
        return 2
    try:
        for checkpoint, folder in zip(argv[::2], argv[1::2]):
            model = load_checkpoint(checkpoint).to(device)
            set_precision(model, "fp32")  # the layout `harness decompress` runs fp32 in on this device
            for bitstream in sorted(Path(folder).glob("*.3dmw")):
                print(json.dumps({**check(model, bitstream), "dir": folder}), flush=True)
    except HarnessError as error:
        print(f"decode_check: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
