"""The memory coding one image takes: a measured model per variant, the tile size a budget
allows, and the peak a coding really reached.

A learned codec's transforms hold a few activations of N channels at the resolution they run on
(g_a's full-resolution stem, g_s's last layers; the wavelet layers' subbands beside them): that
part grows with the piece they run on, a tile with its halo or the whole image. The entropy
model runs on the whole latent after g_a (before g_s), and the image, its float copy and the
latent are held whole. :class:`MemoryModel` is those slopes, fitted from measurements; on top
comes what the process holds already (the interpreter, torch, the model: measured at run time,
not estimated). A budget (``--max-memory``) bounds the whole process's peak; :func:`plan_memory`
picks the largest tile (:mod:`harness.model.tiling`) that keeps the estimate within it, codes
untiled when the whole image fits, and refuses in one line a budget below one smallest tile.
Without a budget the limit is what the machine (or its cgroup) has available: the image is
tiled only when coding it whole would not fit.

Calibration (fp32, one thread, a 2-core machine shared with three other jobs, 2026-12-05;
images resized from ../shared/data/photos/001.png, freshly initialised checkpoints; peak from
VmHWM after writing 5 to /proc/self/clear_refs, less the RSS before; in one process, so the
allocator's reuse can hide a little; the largest tile piece is the tile with its halos, clipped
at the image border)::

    variant  image       tile  piece      compress  decompress   (peak added, MiB)
    tiny     512x512     -     whole        149        26
    tiny     1024x768    -     whole        393        81
    tiny     1024x1024   -     whole        512       184
    tiny     1024x1024   256   640x640      245       140
    tiny     2048x2048   256   640x640      297       168
    default  512x512     -     whole        521        80
    default  1024x768    -     whole       1536       441
    default  1024x1024   -     whole       2057       679
    default  1024x1024   512   736x736     1058       602
    default  1024x1024   256   704x704      969       308

    the entropy model alone on a random latent (3 x a unit Gaussian), after a warm-up call, peak
    added (compress / decompress, MiB; 2026-12-05 ~08:50, quiet host, two threads, fp32):
    tiny     1024x1024  61 / 55     2048x1536  172 / 170     3072x2048  302 / 232
    default  1024x1024 278 / 244    2048x1536  532 / 479     3072x2048 1111 / 846

So g_a takes ~2050 bytes per pixel of its piece with the default model (four fp32 activations
of N=128 channels at full resolution), ~520 with tiny; g_s 650 and 200; the entropy model
~200 (default) and ~62 (tiny) per image pixel when encoding, ~160 and ~57 when decoding (from
2 MP on; 1 MP's 278 B/px, of which a fixed part, stays within the margin). The entropy model is
what grows with the whole image once g_a and g_s are tiled: the float64 context of every coded
slice and the hyper features, the int8 grids its convolutions quantise them into, and the rANS
writer's buffer (~3 bytes a symbol, :class:`harness.model.rans.RansWriter`). Its convolutions
read their parts in place and make their im2col rows and sums a bounded chunk at a time
(:mod:`harness.model.exact_cpu`); the widest tensor, the attention's output as wide as the
context, is made where it is read, a chunk at a time (:func:`harness.model.exact.widen`); the
heap is trimmed between slices (:mod:`harness.process_memory`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness import process_memory
from harness.errors import HarnessError
from harness.model.tiling import spans
from harness.process_memory import GIB, size_text
from harness.zoo.registry import is_baseline

MARGIN = 1.25  # bf16, other thread counts and the allocator's peaks vary around the fit


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes coding adds to a process that holds the model, per pixel: g_a's (``analysis``)
    or g_s's (``synthesis``) activations per pixel of the largest piece they run on at once (a
    tile with its halo, or the whole padded image); the entropy model's on the whole latent
    (``encode``, ``decode``), which runs after g_a's activations are freed and before g_s's; and
    what is ``held`` whole throughout (the image, its float copy, the latent), per image pixel.
    Peak = max(transform x piece, entropy x image) + held x image."""

    analysis: float
    synthesis: float
    encode: float
    decode: float
    held: float

    def coding(self, transform: str, piece: int, image: int) -> float:
        """Peak bytes for ``transform`` (g_a: compress, g_s: decompress) on ``piece`` pixels at once, of ``image``."""
        activations, entropy = (self.analysis, self.encode) if transform == "g_a" else (self.synthesis, self.decode)
        return max(activations * piece, entropy * image) + self.held * image


# Fitted to the calibration above.
MEASURED = {
    "tiny": MemoryModel(analysis=520.0, synthesis=200.0, encode=62.0, decode=57.0, held=50.0),
    "3dm-weconvene": MemoryModel(analysis=2050.0, synthesis=650.0, encode=200.0, decode=160.0, held=60.0),
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


def memory_model(config) -> MemoryModel:
    """The variant's measured :class:`MemoryModel`; a variant not measured (an ablation) scales
    the default's by its widths (N for the transforms' activations, M for the latent's buffers),
    which is how the two measured variants differ; a CompressAI baseline scales the one
    measured baseline's by N."""
    if config.variant in MEASURED:
        return MEASURED[config.variant]
    if is_baseline(config.variant):
        wide = config.N / _BASELINE_N
        return MemoryModel(_BASELINE.analysis * wide, _BASELINE.synthesis * wide, 0.0, 0.0, 0.0)
    ref = MEASURED[_REFERENCE]
    wide, latent = config.N / 128, (config.M or config.N) / 320  # some CompressAI architectures have one width
    return MemoryModel(ref.analysis * wide, ref.synthesis * wide, ref.encode * latent, ref.decode * latent,
                       ref.held * latent)


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
    return int(MARGIN * memory_model(model.config).coding(transform, piece, padded_h * padded_w))


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

