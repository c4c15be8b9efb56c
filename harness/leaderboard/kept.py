"""Where a leaderboard run folder keeps each result row's files: its bitstream under
``<run>/bitstreams/`` and the reconstruction crops under ``<run>/crops/``, one file per reuse key
(the run writes them, the plan and the web report read them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.hashing import sha256_bytes
from harness.slug import slug

BITSTREAMS_DIR = "bitstreams"
CROPS_DIR = "crops"


def _kept(run_dir: Path, row: dict[str, Any], folder: str, suffix: str) -> Path:
    version = sha256_bytes(str(row["codec_version"]).encode())[:12]
    name = f"{row['image_sha256']}-{version}-q{float(row['quality']):g}{suffix}"
    return Path(run_dir) / folder / slug(row["codec"]) / str(row["config_hash"]) / name


def bitstream_path(run_dir: Path, row: dict[str, Any]) -> Path:
    """Where the bitstream of a result row is kept: one file per reuse key."""
    return _kept(run_dir, row, BITSTREAMS_DIR, ".bin")


def crop_path(run_dir: Path, row: dict[str, Any]) -> Path:
    """Where the reconstruction crop of a result row is kept (when its point kept one)."""
    return _kept(run_dir, row, CROPS_DIR, ".webp")


def original_crop_path(run_dir: Path, image_sha256: str) -> Path:
    """Where the crop of the original image is kept, the same region as its reconstructions'."""
    return Path(run_dir) / CROPS_DIR / f"{image_sha256}.webp"
