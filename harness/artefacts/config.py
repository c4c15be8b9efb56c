"""What ``harness compress`` and ``harness decompress`` are asked to do: their configs, each default
and check in one place, importable without torch (the commands' help and argument errors stay
fast); the coding itself is :mod:`harness.artefacts.coding`'s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.pixels.images import MAX_PIXELS
from harness.precisions import AUTO, check_precision


def check_budget(budget: int | None) -> None:
    """The check of every ``max_memory`` field (compress, decompress, leaderboard): bytes, at least one."""
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise HarnessError(f"--max-memory must be a whole number of bytes of at least 1, got {budget!r}")


def _check(precision: str, max_pixels: int, max_memory: int | None) -> None:
    """The checks compress and decompress share, from the command line or from code alike."""
    check_precision(precision)  # auto is resolved on the model's device once it is loaded
    if max_pixels < 1:
        raise HarnessError(f"--max-pixels must be at least 1, got {max_pixels}")
    check_budget(max_memory)


@dataclass(frozen=True)
class CompressConfig:
    image: Path
    checkpoint: Path
    out: Path
    precision: str = AUTO  # of g_a, h_a and g_s: fp32, bf16 or auto
    max_pixels: int = MAX_PIXELS  # refuse larger images from their header
    max_memory: int | None = None  # bytes the process may peak at (tiles if needed); None: what is available

    def __post_init__(self) -> None:
        _check(self.precision, self.max_pixels, self.max_memory)


@dataclass(frozen=True)
class DecompressConfig:
    bitstream: Path
    checkpoint: Path
    out: Path
    precision: str = AUTO  # of g_s: fp32, bf16 or auto (a file decodes in either)
    max_pixels: int = MAX_PIXELS  # refuse larger images from the container's header
    max_memory: int | None = None  # bytes the process may peak at (tiles if needed); None: what is available

    def __post_init__(self) -> None:
        _check(self.precision, self.max_pixels, self.max_memory)
