"""What the artefacts' commands are asked to do (``harness compress``, ``decompress``, ``init-model``,
``import-weights``): their configs, each default and check in one place, importable without torch
(the commands' help and argument errors stay fast). The work itself is :mod:`harness.artefacts.coding`'s,
:mod:`~harness.artefacts.checkpoint`'s and :mod:`~harness.artefacts.weights`'s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.pixels.images import MAX_PIXELS
from harness.precisions import AUTO, check_precision
from harness.zoo.registry import PREFIX, ZOO_WIDTHS, parse_variant
from harness.zoo.variants import DEFAULT_VARIANT


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


@dataclass(frozen=True)
class InitModelConfig:
    out: Path
    variant: str = DEFAULT_VARIANT
    seed: int = 0


# CompressAI's training lambdas per zoo quality (docs, "Model Zoo" -> "Training"; the MSE
# row is also compressai.models.vbr's lambda list): D = 255^2 MSE or 1 - MS-SSIM, as here.
QUALITY_LAMBDAS = {
    "mse": {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.1800},
    "ms-ssim": {1: 2.40, 2: 4.58, 3: 8.73, 4: 16.64, 5: 31.73, 6: 60.50, 7: 115.37, 8: 220.00},
}


@dataclass(frozen=True)
class ImportWeightsConfig:
    variant: str  # compressai:<name>, no width options: the file's tensors give them
    quality: int
    source: str  # a state-dict file, or "zoo" (CompressAI's download, through torch hub's cache)
    out: Path
    metric: str = "mse"

    def __post_init__(self) -> None:
        config = parse_variant(self.variant)
        if "?" in self.variant:
            raise HarnessError(f"import-weights takes the architecture alone ({PREFIX}{config.architecture}): "
                               "the widths come from the file")
        if self.metric not in QUALITY_LAMBDAS:
            raise HarnessError(f"unknown metric {self.metric!r}: choose {' or '.join(QUALITY_LAMBDAS)}")
        qualities = self.qualities
        if self.quality not in qualities:
            raise HarnessError(f"{PREFIX}{config.architecture} has qualities {min(qualities)}-{max(qualities)}, "
                               f"got {self.quality}")

    @property
    def architecture(self) -> str:
        return parse_variant(self.variant).architecture

    @property
    def qualities(self) -> tuple[int, ...]:
        return tuple(ZOO_WIDTHS.get(self.architecture, QUALITY_LAMBDAS["mse"]))

    @property
    def lmbda(self) -> float:
        return QUALITY_LAMBDAS[self.metric][self.quality]
