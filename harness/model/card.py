"""The model card: what ``train-sweep`` hands the leaderboard beside each checkpoint.

``models/<metric>-<λ>.json`` sits next to ``models/<metric>-<λ>.pt`` and says
how that model was made: variant, distortion metric, λ, both training stages,
the data (shard identity and manifest hash), the parameter count, the
checkpoint's fingerprint and the hash of every input (``inputs_hash``), which a
later sweep compares to decide whether the model can be kept.

:func:`write_card` and :func:`read_card` are the card's only writer and
reader; the JSON keys are those of :class:`ModelCard` (λ as ``"lambda"``).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from harness.atomic import atomic_open
from harness.errors import HarnessError


@dataclass(frozen=True)
class ModelCard:
    name: str  # <metric>-<λ>, the file stem of the card and its checkpoint
    variant: str
    metric: str
    lmbda: float
    stages: dict[str, dict[str, Any]]  # "1" and "2": steps, loss, lr, milestones / w1, w2
    batch_size: int
    patch: int
    seed: int
    data: str  # shard folder it was trained on
    data_sha256: str  # ShardManifest.identity() of that folder
    data_manifest_sha256: str  # sha256 of the manifest file itself
    params: int
    fingerprint: str  # harness.model.checkpoint.fingerprint of the exported model
    inputs_hash: str  # TrialConfig.inputs_hash(): a model is reused only when this matches
    restored_from_steps: tuple[int, ...]  # steps at which the trial restarted from a checkpoint
    final: dict[str, float]  # last validation: val_bpp, val_psnr (and val_ms_ssim)
    checkpoint: str  # file name of the checkpoint, beside the card
    # harness.model.exact.PATH_ID: how compress/decompress/leaderboard predict the entropy
    # parameters ("" on cards from before the integer path: built on load all the same)
    entropy_path: str = ""
    train_s: float = 0.0  # wall seconds of training over every restart (0: a card from before they were recorded)
    device: str = ""  # what trained it, e.g. "cpu: <model>, 1 thread(s)" or "4 x cuda: <name>, 8 thread(s)"
    precision: str = "fp32"  # g_a, h_a and g_s in training: fp32, or bf16 autocast (entropy models in float32)

    def checkpoint_path(self, card_path: Path) -> Path:
        return Path(card_path).parent / self.checkpoint

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lambda"] = data.pop("lmbda")
        data["restored_from_steps"] = list(self.restored_from_steps)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelCard":
        # Fields with a default came after the first cards: older cards lack them.
        optional = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        values = {f.name: data[f.name] for f in fields(cls) if f.name != "lmbda" and f.name not in optional}
        values.update({name: data.get(name, default) for name, default in optional.items()})
        card = cls(**{**values, "lmbda": float(data["lambda"]),
                      "restored_from_steps": tuple(int(s) for s in values["restored_from_steps"])})
        for name, kind in (("variant", str), ("metric", str), ("checkpoint", str), ("params", int),
                           ("stages", dict), ("final", dict)):
            if not isinstance(getattr(card, name), kind):
                raise TypeError(f"{name} is {getattr(card, name)!r}")
        return card


def card_path(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.json"


def write_card(card: ModelCard, path: Path) -> None:
    """Write ``card`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        json.dump(card.to_json(), handle, indent=1, sort_keys=True)


def read_card(path: Path) -> ModelCard:
    """The card at ``path``, or a one-line error saying it is none."""
    try:
        return ModelCard.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        raise HarnessError(f"{path} is not a train-sweep model card ({reason})") from None
