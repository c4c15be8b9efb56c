"""One cell of the leaderboard, (image, codec config, quality), and its work on a Ray worker:
encode to a real bitstream, decode, measure (quality, seconds and peak memory of each call: the
worker's RSS high-water mark reset per call, as the worker lives on for other cells, or the
codec binary's own). A failure becomes an ``error`` row; it never stops other cells. Every cell's bitstream is kept under ``<run>/bitstreams/`` (:mod:`harness.leaderboard.kept`),
so a rerun that asks for more metrics decodes it again instead of encoding.

While a cell holds its reconstruction it can also keep a crop of it (:data:`CROP_SIDE` pixels
square from the image's centre, at full resolution, lossless WebP) under ``<run>/crops/``
(:func:`~harness.leaderboard.kept.crop_path`), for the web report's
side-by-side view; :func:`crop_points` chooses which points of a ladder keep one.
"""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from PIL import Image

from harness.codecs.base import Codec
from harness.codecs.config import CodecConfig
from harness.errors import HarnessError
from harness.leaderboard.quality import measure
from harness.pixels.images import load_rgb
from harness.process_memory import peak_bytes, reset_peak
from harness.provenance import cpu_name


@dataclass(frozen=True)
class Cell:
    dataset: str
    image: str
    image_sha256: str
    codec: CodecConfig
    quality: float


@dataclass(frozen=True)
class Job:
    """One task for a worker: a cell to encode, or (``row`` set) the stored bitstream of that
    reused row to decode and measure again."""

    cell: Cell
    row: dict[str, Any] | None = None


CROP_SIDE = 128  # pixels; at most 3 per image and curve keep the Kodak demo's run folder under 40 MB


def crop_points(ladder: tuple[float, ...], budget: int) -> frozenset[float]:
    """The ladder points that keep a crop: ``budget`` of them spread from the lowest to the highest."""
    points = sorted(ladder)
    if budget <= 0 or not points:
        return frozenset()
    picks = np.linspace(0, len(points) - 1, min(budget, len(points))).round().astype(int)
    return frozenset(points[i] for i in picks)


def crop_webp(pixels: np.ndarray) -> bytes:
    """The centre :data:`CROP_SIDE` square (or less, for a smaller image) as lossless WebP bytes."""
    height, width = pixels.shape[:2]
    top, left = max(0, (height - CROP_SIDE) // 2), max(0, (width - CROP_SIDE) // 2)
    crop = np.ascontiguousarray(pixels[top:top + CROP_SIDE, left:left + CROP_SIDE])
    out = io.BytesIO()
    Image.fromarray(crop).save(out, "WEBP", lossless=True, method=4)
    return out.getvalue()


def row_metrics(row: dict[str, Any]) -> set[str]:
    """The metrics a stored ok row was measured with (every ok row records them)."""
    return set(row["metrics"].split(","))


_PROBED: dict[tuple[str, str], str] = {}


def evaluate_cell(image_bytes: bytes, name: str, codec: CodecConfig, quality: float,
                  metrics: tuple[str, ...] = ("core",), bitstream: bytes | None = None,
                  crop: bool = False, make: Callable[[CodecConfig], Codec] = CodecConfig.instance) -> dict[str, Any]:
    """Encode, decode and measure one cell of the image ``image_bytes``, the dataset's file
    ``name`` (its suffix tells the format; errors and notices name it) (``metrics``: names of
    :data:`harness.leaderboard.metrics.METRICS`); with ``bitstream``, decode and measure that
    stored stream instead of encoding. Failures become an ``error`` row. The row carries
    the bitstream under ``_bitstream`` for the driver to store, and with ``crop`` the crops
    of the reconstruction and of the original under ``_crop`` and ``_original_crop``. ``make``
    builds the codec: a classical one here, a learned one on its actor (:mod:`.workers`)."""
    row: dict[str, Any] = {"device": cpu_name(), "status": "error", "error": None}
    try:
        instance = make(codec)
        instance.subject = name
        key = (codec.codec, codec.settings_json, codec.curve)
        if key not in _PROBED:
            _PROBED[key] = instance.probe()
        row["codec_version"] = instance.version_at(_PROBED[key], quality)
        row["params"] = instance.params
        row["device"] = instance.device or row["device"]
        row["precision"] = instance.precision
        instance.prepare(quality)
        with tempfile.TemporaryDirectory(prefix="harness-cell-") as scratch:
            workdir = Path(scratch)
            source = workdir / f"image{Path(name).suffix}"
            source.write_bytes(image_bytes)
            try:
                image = load_rgb(source)
            except HarnessError as error:  # the worker's copy is no file the user knows
                raise HarnessError(str(error).replace(str(source), name)) from None
            original = image.pixels
            height, width = original.shape[:2]
            row.update(width=width, height=height, conversion=image.notice)
            if bitstream is None:
                start = _start(instance)
                bitstream = instance.encode(original, quality, workdir)
                row.update(enc_s=time.perf_counter() - start, enc_peak_bytes=_peak(instance), tile=instance.tile)
                row.update(instance.estimates(original, quality))  # after the timer: not part of encoding
            start = _start(instance)
            decoded = instance.decode(bitstream, height, width, workdir)
            row.update(dec_s=time.perf_counter() - start, dec_peak_bytes=_peak(instance))
            row["tile"] = row.get("tile") or instance.tile  # a re-measure decodes only
        row.update(measure(original, decoded, metrics))
        if crop:
            row.update(_crop=crop_webp(decoded), _original_crop=crop_webp(original))
        row.update(bytes=len(bitstream), bpp=len(bitstream) * 8.0 / (height * width),
                   metrics=",".join(metrics), _bitstream=bitstream, status="ok")
    except HarnessError as error:
        row["error"] = str(error)
    except Exception as error:  # a codec bug must not take the other cells down
        row["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    row["created_at"] = pd.Timestamp.now(tz="UTC")
    return row


def _start(instance) -> float:
    """Reset the peaks (this worker's, its tools') and start the timer."""
    instance.tool_peak = 0
    reset_peak(_device(instance))
    return time.perf_counter()


def _peak(instance) -> int | None:
    """The peak memory of the call since :func:`_start`: this worker's high-water mark, or the
    binary's the codec ran, whichever is larger (a cell's worker lives on, so the mark is reset per call)."""
    own = peak_bytes(_device(instance))
    return max(own or 0, instance.tool_peak) or None


def _device(instance) -> str:
    return "cuda" if (instance.device or "").startswith("cuda") else "cpu"


def is_learned(cell: Cell) -> bool:
    return cell.codec.curve is not None
