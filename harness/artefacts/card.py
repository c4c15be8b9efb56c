"""The model card: what ``train-sweep`` (and ``import-weights``) hands the leaderboard beside each checkpoint.

``models/<metric>-<λ>.json`` sits next to ``models/<metric>-<λ>.pt`` and says
how that model was made: variant, distortion metric, λ, its stages, the data
(shard identity and manifest hash), the parameter count, the checkpoint's
fingerprint and the hash of every input (``inputs_hash``), which a later sweep
compares to decide whether the model can be kept.

Three kinds of card, told apart by their stages: a trained model has stages
``"1"`` and ``"2"`` (:class:`TrainingStage`); one that started from its sweep's
shared warm-up also has ``"0"``, the warm-up as its own card states it (the
warm-up model's card is a trained card whose stage 2 has 0 steps); an imported
model (``import-weights``) has the one stage ``"published"`` (:class:`PublishedStage`).

:func:`write_card` and :func:`read_card` are the card's only writer and
reader; the JSON keys are those of the dataclasses (λ as ``"lambda"``), and
every value is checked against its field's type on reading, so a malformed card
is one line naming the key, never a ``KeyError`` later in the leaderboard.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Union

from harness.atomic import atomic_open
from harness.errors import HarnessError

WARMUP = "0"  # the stage key of the shared warm-up a trial started from
PUBLISHED = "published"  # the stage key of imported weights
_RENAMED = {"lmbda": "lambda"}  # field name -> JSON key


@dataclass(frozen=True)
class TrainingStage:
    """One training stage: ``"1"`` (eq. 1, lr dropping at ``milestones``), ``"2"`` (eq. 2's subband
    reweighting ``w1``, ``w2``, or a plain fine-tune explained in ``note``) or ``"0"`` (the shared
    warm-up: its ``lmbda``, ``train_s`` and ``checkpoint_sha256``). A field a stage does not have is None."""

    steps: int
    loss: str
    lr: float
    milestones: tuple[int, ...] | None = None
    w1: float | None = None
    w2: float | None = None
    lmbda: float | None = None
    train_s: float | None = None
    checkpoint_sha256: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PublishedStage:
    """Weights someone else trained, imported as they are (``harness import-weights``)."""

    source: str  # e.g. "CompressAI weights"
    architecture: str
    quality: int
    file: str  # the state-dict file or URL
    file_sha256: str  # "" for a zoo download (torch hub checks its own hash)


Stage = Union[TrainingStage, PublishedStage]


@dataclass(frozen=True)
class ModelCard:
    name: str  # <metric>-<λ>, the file stem of the card and its checkpoint
    variant: str
    metric: str
    lmbda: float
    stages: dict[str, Stage]  # "0" (warm-up), "1", "2": TrainingStage; or "published": PublishedStage
    batch_size: int
    patch: int
    seed: int
    data: str  # shard folder it was trained on ("" for imported weights)
    data_sha256: str  # ShardManifest.identity() of that folder
    data_manifest_sha256: str  # sha256 of the manifest file itself
    params: int
    fingerprint: str  # harness.artefacts.checkpoint.fingerprint of the exported model
    inputs_hash: str  # TrialConfig.inputs_hash(): a model is reused only when this matches
    restored_from_steps: tuple[int, ...]  # steps at which the trial restarted from a checkpoint
    final: dict[str, float]  # last validation: val_bpp, val_psnr (and val_ms_ssim)
    checkpoint: str  # file name of the checkpoint, beside the card
    # how compress/decompress/leaderboard predict the entropy parameters: harness.model.exact.PATH_ID,
    # or "float" for a CompressAI baseline
    entropy_path: str
    train_s: float  # wall seconds of training over every restart (0 for imported weights)
    device: str  # what trained it, e.g. "cpu: <model>, 1 thread(s)" or "4 x cuda: <name>, 8 thread(s)"
    precision: str  # g_a, h_a and g_s in training: fp32, or bf16 autocast (entropy models in float32)

    def checkpoint_path(self, card_path: Path) -> Path:
        return Path(card_path).parent / self.checkpoint

    @property
    def training(self) -> dict[str, TrainingStage]:
        return {key: stage for key, stage in self.stages.items() if isinstance(stage, TrainingStage)}

    @property
    def published(self) -> PublishedStage | None:
        stage = self.stages.get(PUBLISHED)
        return stage if isinstance(stage, PublishedStage) else None

    @property
    def warmup(self) -> TrainingStage | None:
        return self.training.get(WARMUP)

    @property
    def steps(self) -> int:
        """Training steps that made the weights, the shared warm-up's included (0 for imported weights)."""
        return sum(stage.steps for stage in self.training.values())

    def to_json(self) -> dict[str, Any]:
        data = _to_json(self)
        data["stages"] = {key: _to_json(stage) for key, stage in self.stages.items()}
        return data

    @classmethod
    def from_json(cls, data: Any) -> "ModelCard":
        """The card in ``data`` (parsed JSON); :class:`ValueError` naming the first malformed key."""
        raw = _object(data, "the card")
        if "stages" not in raw:
            raise ValueError("the card lacks 'stages'")
        stages = _object(raw["stages"], "stages")
        if not stages:
            raise ValueError("stages is empty")
        if PUBLISHED in stages and len(stages) > 1:
            raise ValueError(f"stages mixes {PUBLISHED!r} with training stages {sorted(set(stages) - {PUBLISHED})}")
        typed = {}
        for key, value in stages.items():
            if key not in (WARMUP, "1", "2", PUBLISHED):
                raise ValueError(f"unknown stage {key!r} (stages are {WARMUP!r}, '1', '2' or {PUBLISHED!r})")
            typed[key] = _from_json(PublishedStage if key == PUBLISHED else TrainingStage, value, f"stage {key!r}")
        return _from_json(cls, raw, "the card", stages=typed)


def _to_json(record: Any) -> dict[str, Any]:
    """A record's fields under their JSON keys, tuples as lists, a stage's absent (None) fields left out."""
    data = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None:
            continue
        data[_RENAMED.get(f.name, f.name)] = list(value) if isinstance(value, tuple) else value
    return data


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is {type(value).__name__}, not a JSON object")
    return value


def _from_json(cls: type, data: Any, where: str, **typed: Any) -> Any:
    """``cls`` from the JSON object ``data``, every value checked against its field's annotation
    (but those given in ``typed``, already records)."""
    data = _object(data, where)
    hints = typing.get_type_hints(cls)
    known = {_RENAMED.get(f.name, f.name): f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}")
    values = dict(typed)
    for key, f in known.items():
        if f.name in typed:
            continue
        if key not in data:
            if f.default is MISSING:
                raise ValueError(f"{where} lacks {key!r}")
            continue
        values[f.name] = _typed(data[key], hints[f.name], f"{where}: {key!r}")
    return cls(**values)


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` as type ``hint`` (JSON lists become tuples, ints pass as floats); ValueError otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _typed(value, next(arg for arg in args if arg is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where} is {value!r}, not a list")
        return tuple(_typed(item, args[0], where) for item in value)
    if origin is dict:
        return {_typed(k, args[0], where): _typed(v, args[1], where) for k, v in _object(value, where).items()}
    # JSON has no int/float distinction for whole numbers; a bool is never a number here.
    ok = (isinstance(value, (int, float)) if hint is float else isinstance(value, hint)) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{where} is {value!r}, not {hint.__name__}")
    return float(value) if hint is float else value


def card_path(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.json"


def write_card(card: ModelCard, path: Path) -> None:
    """Write ``card`` to ``path`` atomically."""
    with atomic_open(path) as handle:
        json.dump(card.to_json(), handle, indent=1, sort_keys=True)


def read_card(path: Path) -> ModelCard:
    """The card at ``path``, or a one-line error saying why it is none."""
    try:
        return ModelCard.from_json(json.loads(Path(path).read_text()))
    except OSError as error:
        raise HarnessError(f"{path} is not a model card ({error.strerror})") from None
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HarnessError(f"{path} is not a model card ({str(error).splitlines()[0]})") from None
