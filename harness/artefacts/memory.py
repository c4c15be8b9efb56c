"""The memory coding one image takes, checked against what the machine has before the work starts.

A learned codec's transforms hold a few full-resolution activations of N channels at once
(g_a's first layers, g_s's last ones; the wavelet layers' subbands beside them), so the peak
grows with the padded pixel count times N. :func:`coding_bytes` is that growth, fitted to
measurements; :func:`check_memory` refuses an image whose estimate exceeds what this machine
(or its cgroup) has available, in one line naming both, instead of letting the kernel kill
the process half-way (a later issue will code large images in tiles instead).

Calibration (fp32, one thread, peak RSS from ``/usr/bin/time -f "%M %e"``, images tiled from
kodim23, freshly initialised checkpoints, a 2-core machine shared with other jobs, 2026-12-04);
the fit is the growth between sizes, compress being the larger::

    OMP_NUM_THREADS=1 harness compress imgHxW.png -m M.pt -o x.3dmw --precision fp32
    OMP_NUM_THREADS=1 harness decompress x.3dmw -m M.pt -o x.png --precision fp32

    variant  N    image       compress         decompress     (peak RSS in GiB, wall time)
    tiny     32   256x256     1.12  6.7 s      1.11  6.2 s
    tiny     32   512x768     1.19 10.8 s      1.18 10.2 s
    tiny     32   1024x1024   1.49 11.7 s      1.26 10.6 s
    tiny     32   1536x2048   2.54 27.8 s      1.70 27.9 s
    default  128  256x256     2.19 30.5 s      2.19 16.2 s
    default  128  512x768     2.79 26.4 s      2.31 17.4 s
    default  128  1024x1024   4.14 45.1 s      2.88 19.0 s

Growth per padded pixel: tiny 492-534 bytes (compress), default 2132: 15.4-16.7 bytes a pixel
and channel of N, about four fp32 activations of N channels at full resolution.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.errors import HarnessError

BYTES_PER_PIXEL_AND_CHANNEL = 17  # fitted: see the calibration above
MARGIN = 1.25  # bf16, other thread counts and the allocator's peaks vary a little around the fit
_MEMINFO = Path("/proc/meminfo")
_CGROUP_LIMITS = (  # (limit, usage) files of cgroup v2 and v1
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
)


def coding_bytes(model, height: int, width: int) -> int:
    """Estimated peak bytes that compressing or decompressing a ``height`` x ``width`` image with
    ``model`` (3DM-WeConvene or a CompressAI baseline) adds to the process."""
    stride = model.stride
    pixels = math.ceil(height / stride) * stride * math.ceil(width / stride) * stride
    return int(MARGIN * BYTES_PER_PIXEL_AND_CHANNEL * model.config.N * pixels)


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


def check_memory(model, height: int, width: int, what: str) -> None:
    """Refuse to code an image that needs more memory than this machine has available now."""
    need, have = coding_bytes(model, height, width), available_bytes()
    if have is not None and need > have:
        raise HarnessError(f"{what}: coding {width}x{height} needs ~{need / 1e9:.1f} GB, this machine has "
                           f"{have / 1e9:.1f} GB available")
