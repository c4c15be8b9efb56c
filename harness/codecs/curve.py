"""A learned curve as the leaderboard plans it: the typed record that travels with its codec
config to every cell, and a models folder's cards grouped into curves (no torch: classical
cells unpickle configs too, and the report reads the cards)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artefacts.card import ModelCard, read_card
from harness.errors import HarnessError
from harness.zoo.registry import codec_id


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


def cards_by_curve(models_dir: Path) -> dict[tuple[str, str], list[tuple[ModelCard, Path]]]:
    """The cards of ``models_dir`` (each with its checkpoint) grouped by curve: (codec id, metric)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise HarnessError(f"--models {models_dir} is not a folder (expected train-sweep's OUT/models)")
    groups: dict[tuple[str, str], list[tuple[ModelCard, Path]]] = {}
    for path in sorted(models_dir.glob("*.json")):
        card = read_card(path)
        checkpoint = card.checkpoint_path(path)
        if not checkpoint.is_file():
            raise HarnessError(f"{path} names {checkpoint.name}, which is missing")
        groups.setdefault((codec_id(card.variant), card.metric), []).append((card, checkpoint))
    if not groups:
        raise HarnessError(f"{models_dir} holds no train-sweep models (*.pt with a .json card)")
    return groups


def config_name(models_dir: Path, metric: str, curves: int) -> str:
    """The sweep folder's name (``-<metric>`` added when the folder holds curves of two metrics)."""
    name = (models_dir.parent if models_dir.name == "models" else models_dir).name
    return name if curves == 1 else f"{name}-{metric}"


def curve_cards(models_dir: Path) -> dict[str, list[ModelCard]]:
    """The cards of ``models_dir`` by leaderboard curve, ``codec:config`` as
    :func:`harness.codecs.learned.curve_settings` names it, each curve's cards in their order of λ."""
    groups = cards_by_curve(models_dir)
    return {f"{variant}:{config_name(Path(models_dir), metric, len(groups))}":
            sorted((card for card, _ in cards), key=lambda card: card.lmbda)
            for (variant, metric), cards in sorted(groups.items())}
