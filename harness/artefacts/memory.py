"""The memory coding one image takes: a measured model per variant, the tile size a budget
allows, and the peak a coding really reached.

A learned codec's transforms hold a few activations of N channels at the resolution they run on
(g_a's full-resolution stem, g_s's last layers; the wavelet layers' subbands beside them): that
part grows with the piece they run on, a tile with its halo or the whole image. The entropy
model runs on the whole latent after g_a (before g_s), and the image and the latent are held
whole. :class:`MemoryModel` is those slopes, fitted from measurements; on top
comes what the process holds already (the interpreter, torch, the model: measured at run time,
not estimated). A budget (``--max-memory``) bounds the whole process's peak; :func:`plan_memory`
picks the largest tile (:mod:`harness.model.tiling`) that keeps the estimate within it, codes
untiled when the whole image fits, and refuses in one line a budget below one smallest tile.
Without a budget the limit is what the machine (or its cgroup) has available: the image is
tiled only when coding it whole would not fit.

Calibration (2026-12-05 ~16:30-16:50 UTC, a 2-core VM without AMX, two threads; images resized
from ../shared/data/photos/001.png; freshly initialised checkpoints; the ``harness`` commands
themselves, in tiles of 256 px, each phase's peak RSS sampled every 5 ms,
less the RSS once the model is loaded, ~1.12 GB default and ~1.00 GB tiny)::

    variant  precision  image      g_a     entropy   |  entropy  g_s      (peak added, GB)
                                   compress          |  decompress
    default  bf16       1728x1152  0.68    0.27      |  0.21     0.75
    default  bf16       3072x2048  0.86    0.72      |  0.60     0.99
    default  fp32       1728x1152  1.20    0.31      |  0.21     1.07
    tiny     fp32       1728x1152  0.31    0.12      |  0.07     0.28
    tiny     fp32       3072x2048  0.38    0.25      |  0.12     0.33

The entropy model of the default model in bf16, refitted (2026-12-05 ~21:30-22:20 UTC, a 2-core
host with AMX, two threads, the same checkpoint, g_a and g_s in tiles of 256 px at 6 MP and of
512 px at 33 MP; peaks over the RSS once the model and the image are loaded, sampled every 2 ms
as ``benchmarks/memory_phases.py`` does) after the image came to the model in uint8, the rANS
buffer to 2 bytes a symbol and h_a's input to bf16::

    image       entropy, compress   entropy, decompress    (peak added, GB)
    3072x2048   0.58                0.57
    7680x4320   2.42                2.49

(at 33 MP the encoder's peak is the split of the latent into h_a's input and the slices, 2.42 GB,
its slices' walk 2.14-2.26)

The transforms in fp32, refitted (2026-12-06 ~17:30-18:15 UTC, a 2-core AVX2 host without AMX,
two threads, ``benchmarks/memory_phases.py`` at 1728x1152 in tiles of 256 px, fresh checkpoints)
once fp32 on the CPU ran them channels-last and the 3DM-WeConv layers freed their inputs and
overwrote their bands (:mod:`harness.model.precision`, :mod:`harness.model.layers`); the same probe
of the code before those changes (3a95e6c) in brackets::

    variant  image      g_a (compress)   g_s (decompress)     (peak added, GB)
    default  1728x1152  0.87 (1.15)      0.63 (0.86)
    tiny     1728x1152  0.25             0.24

The largest tile piece (the tile with its halos, clipped at the image border) is 704x704 for
the default model's g_a and 896x896 for its g_s (halos of 224 and 320 px), 640x640 and 768x768
for tiny's. Less what is held whole meanwhile (35 bytes per image pixel), g_a takes up to ~2300
bytes per pixel of its piece with the default model in fp32 and ~1300 in bf16, ~600 with tiny;
g_s 1250, 960 and 360 (as first fitted; refitted in fp32: g_a 1650 and 450, g_s 700 and 290;
the bf16 figures, measured before the layers' changes, now over-estimate). The entropy model takes ~107 (default, fp32 as first fitted; 69 in bf16
as refitted) and ~30 (tiny) bytes per image pixel when encoding, ~92 (72 in bf16) and ~12 when
decoding, plus ~0.1 GB (0.18 refitted) and ~0.06 GB whatever the size. It is what grows with
the whole image once g_a and g_s are tiled: the context of every coded slice and the hyper
features (2 bytes an element, :func:`harness.model.exact.hold`), the int8 grids its convolutions
quantise them into, the latent's slices not yet coded (float32), the decoder's coded slices
(float32), and the rANS writer's buffer (2 bytes a symbol,
:class:`harness.model.rans.RansWriter`). Its convolutions read their parts in
place and make their im2col rows and sums a bounded chunk at a time
(:mod:`harness.model.exact_cpu`); the widest tensor, the attention's output as wide as the
context, is made where it is read, a chunk at a time (:func:`harness.model.exact.widen`). When
coding in tiles, the heap is trimmed before each of its convolutions
(:func:`harness.model.exact_cpu.frugal`; :mod:`harness.process_memory`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness import process_memory
from harness.errors import HarnessError
from harness.model.precision import precision_of
from harness.model.tiling import spans
from harness.process_memory import GIB, size_text
from harness.zoo.registry import is_baseline

# Each figure below is the largest a measured peak asked for; run to run, the same command's peak
# moved by ~1 % (the default model's 6 MP encoder: 1.84 and 1.85 GB), other thread counts more.
MARGIN = 1.1


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes coding adds to a process that holds the model, per pixel, in the larger of its
    two phases: a transform, g_a (compress) or g_s (decompress), holds its activations,
    ``analysis`` or ``synthesis`` per pixel of the largest piece it runs on at once (a tile with its
    halo, or the whole padded image), beside what is whole meanwhile, ``held`` per image pixel (the
    image, the latent); the entropy model, on the whole latent, holds
    ``encode`` or ``decode`` per image pixel, everything then alive included (the latent's slices,
    their context, the rANS buffer, the image or the reconstructed latent), and ``fixed`` bytes
    whatever the image (its networks' workspaces)."""

    analysis: float
    synthesis: float
    encode: float
    decode: float
    held: float
    fixed: float = 0.0

    def coding(self, transform: str, piece: int, image: int) -> float:
        """Peak bytes for ``transform`` (g_a: compress, g_s: decompress) on ``piece`` pixels at once, of ``image``."""
        activations, entropy = (self.analysis, self.encode) if transform == "g_a" else (self.synthesis, self.decode)
        return max(activations * piece + self.held * image, entropy * image + self.fixed)


# Fitted to the calibration above, per precision of the transforms (the entropy model is the same
# integer path in both); a precision not measured for a variant takes its fp32 figures.
MEASURED = {
    "tiny": {"fp32": MemoryModel(analysis=450.0, synthesis=290.0, encode=30.0, decode=12.0, held=35.0, fixed=60e6)},
    "3dm-weconvene": {
        "fp32": MemoryModel(analysis=1650.0, synthesis=700.0, encode=107.0, decode=92.0, held=35.0, fixed=100e6),
        "bf16": MemoryModel(analysis=1300.0, synthesis=960.0, encode=69.0, decode=72.0, held=35.0, fixed=180e6),
    },
}
_REFERENCE = "3dm-weconvene"  # other widths scale from it: tile by N, image by M
# CompressAI's baselines (whole images only; g_a's first layer has stride 2, so ~3x less than
# ours per pixel): compressai:bmshj2018-hyperprior (N=192, M=320), whole, peak RSS over
# 0.4 -> 2 MP (benchmarks/memory.py, fp32): compress 1.31 -> 2.32 GB, decompress 1.41 -> 2.46 GB.
_BASELINE = MemoryModel(analysis=650.0, synthesis=680.0, encode=0.0, decode=0.0, held=0.0)
_BASELINE_N = 192
# The leaderboard's learned cells, per codec id, without --max-memory: what each cell's Ray actor
# reserves and its tiles stay within (the loaded model, ~1.1 GB tiny and ~2.2 GB the default, and
# tiles of about 1 MP for the default). Variants not listed take the default's.
CELL_BUDGETS = {"tiny": 2 * GIB, "3dm-weconvene": 4 * GIB}


def cell_budget(codec_id: str) -> int:
    """The memory a leaderboard cell of ``codec_id`` (a variant or compressai-NAME) is given by default."""
    return CELL_BUDGETS.get(codec_id, CELL_BUDGETS[_REFERENCE])


def memory_model(config, precision: str = "fp32") -> MemoryModel:
    """The variant's measured :class:`MemoryModel` for its transforms' ``precision``; a variant not
    measured (an ablation) scales the default's by its widths (N for the transforms' activations,
    M for the latent's buffers), which is how the two measured variants differ; a CompressAI
    baseline scales the one measured baseline's by N."""
    if is_baseline(config.variant):
        wide = config.N / _BASELINE_N
        return MemoryModel(_BASELINE.analysis * wide, _BASELINE.synthesis * wide, 0.0, 0.0, 0.0)
    measured = MEASURED.get(config.variant, MEASURED[_REFERENCE])
    model = measured.get(precision, measured["fp32"])
    if config.variant in MEASURED:
        return model
    wide, latent = config.N / 128, (config.M or config.N) / 320  # some CompressAI architectures have one width
    return MemoryModel(model.analysis * wide, model.synthesis * wide, model.encode * latent,
                       model.decode * latent, model.held * latent, model.fixed * latent)


@dataclass(frozen=True)
class MemoryPlan:
    """How one image is coded: ``tile`` (pixels a side; None: whole), the estimated peak of the
    process ``need``, and ``notice``, one line for the user when the harness chose to tile."""

    tile: int | None
    need: int
    notice: str | None = None


def coding_bytes(model, height: int, width: int, transform: str = "g_a", tile: int | None = None,
                 halo: int = 0) -> int:
    """Estimated peak bytes that coding a ``height`` x ``width`` image with ``model`` adds to the
    process, compressing (``transform`` g_a) or decompressing (g_s): whole (``tile`` None) or in
    tiles of ``tile`` pixels with ``halo`` pixels around."""
    stride = model.stride
    padded_h, padded_w = (math.ceil(s / stride) * stride for s in (height, width))
    piece = padded_h * padded_w
    if tile is not None:
        piece = _longest_piece(padded_h, tile, halo) * _longest_piece(padded_w, tile, halo)
    precision = precision_of(model)
    return int(MARGIN * memory_model(model.config, precision).coding(transform, piece, padded_h * padded_w))


def _longest_piece(length: int, tile: int, halo: int) -> int:
    """The most samples one tile with its halo spans along a side of ``length`` (the border clips halos)."""
    return max(min(stop + halo, length) - max(start - halo, 0) for start, stop in spans(length, tile))


def plan_memory(model, height: int, width: int, what: str, budget: int | None, halo: int | None,
                alignment: int, device: torch.device | str = "cpu", transform: str = "g_a") -> MemoryPlan:
    """The tile (or none) for coding ``what``, a ``height`` x ``width`` image, with ``model`` (loaded):
    within ``budget`` bytes for the whole process, or, without one, within what the machine has
    available. ``halo`` (pixels; None: the model cannot be tiled) and ``alignment`` come from the
    transform that will run tiled, ``transform`` (g_a or g_s). Raises one line when no tile fits."""
    resident = process_memory.resident_bytes(device)
    whole = resident + coding_bytes(model, height, width, transform)
    if budget is None:
        have = process_memory.available_bytes()
        if have is None or whole - resident <= have:
            return MemoryPlan(None, whole)
        limit, limit_text = resident + have, f"this machine has {have / 1e9:.1f} GB available"
    else:
        if whole <= budget:
            return MemoryPlan(None, whole)
        limit, limit_text = budget, f"--max-memory {size_text(budget)}"
    if halo is None:
        raise HarnessError(f"{what}: coding {width}x{height} needs ~{whole / 1e9:.1f} GB and "
                           f"{model.config.variant} codes whole images only (its layers are not tiled): {limit_text}")
    smallest = resident + coding_bytes(model, height, width, transform, alignment, halo)
    if smallest > limit:
        if budget is None:
            raise HarnessError(f"{what}: coding {width}x{height} needs ~{smallest / 1e9:.1f} GB even in "
                               f"{alignment}-pixel tiles, {limit_text}")
        raise HarnessError(f"{what}: --max-memory {size_text(budget)} is below the {size_text(smallest)} "
                           f"{model.config.variant} needs for {width}x{height} (the loaded model "
                           f"{size_text(resident)}, tiles of {alignment} px; whole: {size_text(whole)})")
    tile = alignment
    longest = max(height, width)
    while tile < longest and resident + coding_bytes(model, height, width, transform, tile + alignment, halo) <= limit:
        tile += alignment
    need = resident + coding_bytes(model, height, width, transform, tile, halo)
    notice = None
    if budget is None:
        notice = (f"{what}: coding {width}x{height} whole needs ~{whole / 1e9:.1f} GB, {limit_text}: "
                  f"in tiles of {tile} px (~{need / 1e9:.1f} GB)")
    return MemoryPlan(tile, need, notice)

