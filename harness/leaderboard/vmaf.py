"""VMAF of one decoded image through the libvmaf filter of the ffmpeg binary the
harness already ships (imageio-ffmpeg's static build, ``--enable-libvmaf``).

The two pictures go in as raw Y'CbCr planes the harness converted itself, so ffmpeg
does no colour conversion; the model is libvmaf's built-in ``vmaf_v0.6.1``, chosen
with ``model=version=...`` (compiled into the library: no model file is read and
nothing is downloaded). One frame, one thread; the score is libvmaf's pooled mean,
read from its JSON log.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.pixels.colour import YCbCrFormat, planes_to_bytes

VMAF_MODEL = "vmaf_v0.6.1"  # built into libvmaf: selected by version=, nothing is read or downloaded
VMAF_TIMEOUT_S = 120.0


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise HarnessError(f"VMAF needs ffmpeg with libvmaf (imageio-ffmpeg: {error})") from None


def vmaf_score(reference: list[np.ndarray], distorted: list[np.ndarray], fmt: YCbCrFormat,
               model: str = VMAF_MODEL) -> float:
    """VMAF of ``distorted`` against ``reference``, both [Y, Cb, Cr] planes of ``fmt``."""
    height, width = reference[0].shape
    exe = ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="harness-vmaf-") as scratch:
        work = Path(scratch)
        ref, dist, log = work / "ref.yuv", work / "dist.yuv", work / "vmaf.json"
        ref.write_bytes(planes_to_bytes(reference))
        dist.write_bytes(planes_to_bytes(distorted))
        raw = ["-f", "rawvideo", "-pix_fmt", fmt.ffmpeg_pix_fmt, "-s", f"{width}x{height}"]
        graph = f"[0:v][1:v]libvmaf=model=version={model}:n_threads=1:log_fmt=json:log_path={log}"
        argv = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", *raw, "-i", str(dist), *raw, "-i", str(ref),
                "-lavfi", graph, "-f", "null", "-"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=VMAF_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"VMAF timed out after {VMAF_TIMEOUT_S:g} s on a {width}x{height} image") from None
        if done.returncode != 0 or not log.is_file():
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise HarnessError(f"ffmpeg libvmaf failed (exit {done.returncode}): {tail[0][:300]}")
        return float(json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"])
