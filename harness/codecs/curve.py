"""A learned curve as the leaderboard plans it: the typed record that travels with its codec
config to every cell (no torch: classical cells unpickle configs too)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class SweepPoint:
    """One λ of a learned curve: its checkpoint, and that file's SHA-256 when the run was planned."""

    lmbda: float
    checkpoint: Path
    sha256: str


@dataclass(frozen=True)
class CurveSettings:
    """A learned curve as the leaderboard planned it, handed to every cell of the curve."""

    variant: str  # the codec id: a network variant or compressai-<name>
    metric: str  # what its models were trained for
    params: int  # of its largest model
    precision: str  # of g_a, h_a and g_s, resolved where the run was planned (fp32 or bf16)
    points: tuple[SweepPoint, ...]  # in λ order
    max_memory: int  # bytes a cell may peak at (tiles within it); not hashed: the bitstream is the same

    def hashed(self) -> dict[str, Any]:
        """What the curve's config hash covers: the checkpoints are versioned per point instead
        (:meth:`Learned.version_at`), so retraining one λ recomputes only its cells."""
        return {"variant": self.variant, "metric": self.metric, "params": self.params, "precision": self.precision}

    @property
    def ladder(self) -> tuple[float, ...]:
        return tuple(float(point_key(point.lmbda)) for point in self.points)

    def point(self, quality: float) -> SweepPoint:
        key = point_key(quality)
        for point in self.points:
            if point_key(point.lmbda) == key:
                return point
        have = ", ".join(point_key(point.lmbda) for point in self.points)
        raise HarnessError(f"no checkpoint for lambda {key} in this sweep (have {have})")


def point_key(quality: float) -> str:
    return f"{quality:g}"
