"""The memory coding one image takes: a measured model per variant, the tile size a budget
allows, and the peak a coding really reached.

A learned codec's transforms hold a few activations of N channels at the resolution they run on
(g_a's first layers, g_s's last ones; the wavelet layers' subbands beside them); the rest of the
coding (the image as floats, the latent, the entropy model on the whole latent, the decoded
image) grows with the image's pixels. :class:`MemoryModel` is those two slopes, fitted from
measurements; on top comes what the process holds already (the interpreter, torch, the model:
measured at run time, not estimated). A budget (``--max-memory``) bounds the whole process's
peak; :func:`plan_memory` picks the largest tile (:mod:`harness.model.tiling`) that keeps the
estimate within it, codes untiled when the whole image fits, and refuses in one line a budget
below one smallest tile. Without a budget the limit is what the machine (or its cgroup) has
available: the image is tiled only when coding it whole would not fit.

Calibration (fp32, one thread, a 2-core machine shared with other jobs, 2026-12-05; images
resized from ../shared/data/photos/001.png, freshly initialised checkpoints; peak from VmHWM
after writing 5 to /proc/self/clear_refs, less the RSS before; ``/tmp/h2/fit.py`` in the
harness's issue #34 notes, and ``benchmarks/memory.py`` for the whole command)::

    variant  image       tile   compress  decompress  (peak added, MiB)
    tiny     512x512     -        149        26
    tiny     1024x768    -        393        81
    tiny     1024x1024   -        512       184
    tiny     1024x1024   256      245       140
    tiny     2048x2048   256      297       168
    default  512x512     -        ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import HarnessError

MARGIN = 1.25  # bf16, other thread counts and the allocator's peaks vary around the fit
_MEMINFO = Path("/proc/meminfo")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_CGROUP_LIMITS = (  # (limit, usage) files of cgroup v2 and v1
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
)


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes coding adds to a process that holds the model: ``tile`` per pixel of the
    largest piece g_a or g_s runs on at once (a tile with its halo, or the whole padded image),
    ``image`` per pixel of the padded image (everything held whole)."""

    tile: float
    image: float


# Fitted to the calibration above (the larger of compress and decompress).
MEASURED = {
    "tiny": MemoryModel(tile=520.0, image=60.0),
    "3dm-weconvene": MemoryModel(tile=2200.0, image=150.0),
}
_REFERENCE = "3dm-weconvene"  # other widths scale from it: tile by N, image by M
GIB = 2**30
# The leaderboard's learned cells, per codec id, without --max-memory: what each cell's Ray actor
# reserves and its tiles stay within (the loaded model, ~1.1 GB tiny and ~2.2 GB the default, and
# tiles of about 1 MP for the default). Variants not listed take the default's.
CELL_BUDGETS = {"tiny": 2 * GIB, "3dm-weconvene": 4 * GIB}


def cell_budget(codec_id: str) -> int:
    """The memory a leaderboard cell of ``codec_id`` (a variant or compressai-NAME) is given by default."""
    return CELL_BUDGETS.get(codec_id, CELL_BUDGETS[_REFERENCE])


def memory_model(config) -> MemoryModel:
    """The variant's measured :class:`MemoryModel`; a variant not measured (an ablation, a
    CompressAI baseline) scales the default's by its widths (N for the transforms' activations,
    M for the latent's buffers), which is how the two measured variants differ."""
    if config.variant in MEASURED:
        return MEASURED[config.variant]
    reference = MEASURED[_REFERENCE]
    latent = config.M or config.N  # some CompressAI architectures have one width
    return MemoryModel(tile=reference.tile * config.N / 128, image=reference.image * latent / 320)


@dataclass(frozen=True)
class MemoryPlan:
    """How one image is coded: ``tile`` (pixels a side; None: whole), the estimated peak of the
    process ``need``, and ``notice``, one line for the user when the harness chose to tile."""

    tile: int | None
    need: int
    notice: str | None = None


def check_budget(budget: int | None) -> None:
    """The check of every ``max_memory`` field (compress, decompress, leaderboard): bytes, at least one."""
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise HarnessError(f"--max-memory must be a whole number of bytes of at least 1, got {budget!r}")


def size_text(value: int) -> str:
    """``value`` bytes as GiB or MiB, as users write budgets (2.0G, 512M)."""
    return f"{value / 2**30:.2f}G" if value >= 2**30 else f"{value / 2**20:.0f}M"


def resident_bytes(device: torch.device | str = "cpu") -> int:
    """What the process holds now: its RSS on the CPU, the tensors allocated on a GPU."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    return _status("VmRSS")


def reset_peak(device: torch.device | str = "cpu") -> None:
    """Start a new high-water mark: the peak of what follows, in a process that lives on (a Ray
    worker codes many cells), not of its whole life (which ``ru_maxrss`` would give)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass  # not Linux: the peak read is the process's whole life's, an upper bound


def peak_bytes(device: torch.device | str = "cpu") -> int | None:
    """The high-water mark since :func:`reset_peak`: peak RSS on the CPU (VmHWM), peak allocated
    on a GPU; None where neither can be read."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        return _status("VmHWM")
    except HarnessError:
        return None


def process_peak(pid: int) -> int | None:
    """The peak RSS so far of process ``pid`` (a codec's binary); None once it has exited."""
    try:
        return _status("VmHWM", Path(f"/proc/{pid}/status"))
    except HarnessError:
        return None


def _status(field: str, path: Path = _STATUS) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise HarnessError(f"cannot read {field} from {path}")


def available_bytes() -> int | None:
    """MemAvailable, or what the process's cgroup has left where that is lower; None where
    neither can be read (not Linux)."""
    values = []
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                values.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in _CGROUP_LIMITS:
        try:
            limit, usage = limit_file.read_text().strip(), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit():  # "max" (v2), or v1's huge number, when there is no limit
            values.append(max(int(limit) - usage, 0))
    return min(values) if values else None


def coding_bytes(model, height: int, width: int, tile: int | None = None, halo: int = 0) -> int:
    """Estimated peak bytes that coding a ``height`` x ``width`` image with ``model`` adds to the
    process: whole (``tile`` None) or in tiles of ``tile`` pixels with ``halo`` pixels around."""
    stride = model.stride
    padded_h, padded_w = (math.ceil(s / stride) * stride for s in (height, width))
    fit = memory_model(model.config)
    if tile is None:
        piece = padded_h * padded_w
    else:
        piece = min(tile + 2 * halo, padded_h) * min(tile + 2 * halo, padded_w)
    return int(MARGIN * (fit.tile * piece + fit.image * padded_h * padded_w))


def plan_memory(model, height: int, width: int, what: str, budget: int | None, halo: int | None,
                alignment: int, device: torch.device | str = "cpu") -> MemoryPlan:
    """The tile (or none) for coding ``what``, a ``height`` x ``width`` image, with ``model`` (loaded):
    within ``budget`` bytes for the whole process, or, without one, within what the machine has
    available. ``halo`` (pixels; None: the model cannot be tiled) and ``alignment`` come from the
    transform that will run tiled. Raises one line when no tile fits."""
    resident = resident_bytes(device)
    whole = resident + coding_bytes(model, height, width)
    if budget is None:
        have = available_bytes()
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
    smallest = resident + coding_bytes(model, height, width, alignment, halo)
    if smallest > limit:
        if budget is None:
            raise HarnessError(f"{what}: coding {width}x{height} needs ~{smallest / 1e9:.1f} GB even in "
                               f"{alignment}-pixel tiles, {limit_text}")
        raise HarnessError(f"{what}: --max-memory {size_text(budget)} is below the {size_text(smallest)} "
                           f"{model.config.variant} needs for {width}x{height} (the loaded model "
                           f"{size_text(resident)}, tiles of {alignment} px; whole: {size_text(whole)})")
    tile = alignment
    longest = max(height, width)
    while tile < longest and resident + coding_bytes(model, height, width, tile + alignment, halo) <= limit:
        tile += alignment
    need = resident + coding_bytes(model, height, width, tile, halo)
    notice = None
    if budget is None:
        notice = (f"{what}: coding {width}x{height} whole needs ~{whole / 1e9:.1f} GB, {limit_text}: "
                  f"in tiles of {tile} px (~{need / 1e9:.1f} GB)")
    return MemoryPlan(tile, need, notice)

