"""Model cards, typed all the way down: every kind a writer of the harness makes (trained,
started from a shared warm-up, imported) reads back as written and is described by the
leaderboard; a malformed card is one line naming the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from compressai.models import FactorizedPrior

from harness.artefacts.card import PublishedStage, TrainingStage, read_card
from harness.artefacts.config import ImportWeightsConfig
from harness.artefacts.weights import run_import
from harness.data.manifest import MANIFEST
from harness.errors import HarnessError
from harness.hashing import sha256_file
from harness.model.network import WeConvene
from harness.report.models import learned_section, model_points
from harness.train.config import models_dir
from harness.train.loop import TrialConfig, export_model
from harness.train.recipe import TrainingRecipe
from harness.zoo.variants import get_config


def _trial(root: Path, out: Path, recipe: dict | None = None, **changes) -> TrialConfig:
    data = root / "shards"
    data.mkdir(exist_ok=True)
    (data / MANIFEST).write_text("{}")  # the card records the manifest's hash
    steps = TrainingRecipe(**{**dict(stage1_steps=10, stage2_steps=4, batch_size=2, patch=64, milestones=(0.5,), w1=2.0,
                                     w2=0.5, checkpoint_every=5, log_every=5, val_batches=1), **(recipe or {})})
    fields = dict(data=str(data), data_sha256="d" * 64, out=str(out), variant="tiny", metric="mse", lmbda=0.05,
                  recipe=steps, threads=1)
    return TrialConfig(**{**fields, **changes})


def _export(trial: TrialConfig) -> Path:
    torch.manual_seed(0)
    export_model(WeConvene(get_config("tiny")).eval(), trial, final={"val_bpp": 0.5, "val_psnr": 25.0},
                 train_s=60.0, device="cpu: test")
    return models_dir(trial.out)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Path]:
    """One models folder per kind of card, each written by the harness's own writer."""
    root = tmp_path_factory.mktemp("cards")
    warmup = _export(_trial(root, root / "sweep" / "warmup", dict(stage1_steps=3, stage2_steps=0, milestones=())))
    init = warmup / "mse-0.05.pt"
    torch.manual_seed(0)
    source = root / "factorized.pth.tar"
    torch.save(FactorizedPrior(N=16, M=24).state_dict(), source)
    run_import(ImportWeightsConfig("compressai:bmshj2018-factorized", 3, str(source), root / "imported"))
    return {
        "trained": _export(_trial(root, root / "trained")),
        "warm-up": warmup,
        "from-warm-up": _export(_trial(root, root / "sweep", init=str(init), init_sha256=sha256_file(init))),
        "imported": root / "imported",
    }


@pytest.mark.parametrize("kind, stages, steps", [
    ("trained", {"1", "2"}, 14), ("warm-up", {"1", "2"}, 3), ("from-warm-up", {"0", "1", "2"}, 17),
    ("imported", {"published"}, 0),
])
def test_every_kind_of_card_reads_back_typed_as_its_writer_wrote_it(kinds, kind, stages, steps):
    path = next(kinds[kind].glob("*.json"))
    card = read_card(path)
    assert card.to_json() == json.loads(path.read_text())  # the same keys and values, nothing lost
    assert set(card.stages) == stages and card.steps == steps
    if kind == "imported":
        assert card.published == PublishedStage("CompressAI weights", "bmshj2018-factorized", 3,
                                                str((path.parent.parent / "factorized.pth.tar").resolve()),
                                                card.published.file_sha256)
        assert card.training == {} and card.warmup is None
        return
    assert all(isinstance(stage, TrainingStage) for stage in card.stages.values())
    assert card.stages["2"].w1 == 2.0 and card.stages["1"].milestones == ((5,) if kind != "warm-up" else ())
    if kind == "from-warm-up":
        assert (card.warmup.steps, card.warmup.lmbda, card.warmup.train_s) == (3, 0.05, 60.0)
        assert "shared warm-up" in card.warmup.note
    else:
        assert card.warmup is None


@pytest.mark.parametrize("kind, says", [
    ("trained", ["**Demo scale", "| 14 (2 x 64²) |", "1.0 min per model"]),
    ("warm-up", ["**Demo scale", "| 3 (2 x 64²) |"]),
    ("from-warm-up", ["**Demo scale", "17, the first 3 a shared warm-up (2 x 64²)", "2.0 min per model (2.0 in all)"]),
    ("imported", ["Imported weights (`harness import-weights`)",
                  "imported weights: CompressAI weights: bmshj2018-factorized quality 3 | not trained here"]),
])
def test_the_leaderboard_describes_every_kind_of_card(kinds, kind, says):
    points = model_points(kinds[kind])
    assert len(points) == 1 and points[0]["steps"] == {"trained": 14, "warm-up": 3, "from-warm-up": 17,
                                                       "imported": 0}[kind]
    json.dumps(points)  # run.json holds them
    text = learned_section(pd.DataFrame(columns=["dataset", "image", "codec", "config"]), tuple(points))
    for phrase in says:
        assert phrase in text, (phrase, text)
    assert ("Demo scale" in text) == (kind != "imported")


def _mutations() -> list:
    def stage(key: str, **values):
        return lambda card: card["stages"][key].update(values)

    def drop(*keys: str):
        def apply(card):
            target = card
            for key in keys[:-1]:
                target = target[key]
            del target[keys[-1]]
        return apply

    return [
        ("steps-text", stage("1", steps="10"), "stage '1': 'steps' is '10', not int"),
        ("steps-bool", stage("2", steps=True), "stage '2': 'steps' is True, not int"),
        ("lr-missing", drop("stages", "1", "lr"), "stage '1' lacks 'lr'"),
        ("stage-key", stage("1", speed=3), "stage '1' has unknown key(s) speed"),
        ("milestones", stage("1", milestones=5), "stage '1': 'milestones' is 5, not a list"),
        ("stage-3", lambda card: card["stages"].update({"3": {}}), "unknown stage '3'"),
        ("stage-list", lambda card: card["stages"].update({"1": [10]}), "stage '1' is list, not a JSON object"),
        ("no-stages", lambda card: card.update(stages={}), "stages is empty"),
        ("stages-list", lambda card: card.update(stages=[]), "stages is list, not a JSON object"),
        ("mixed", lambda card: card["stages"].update(published={}), "stages mixes 'published' with training stages"),
        ("params", lambda card: card.update(params="many"), "the card: 'params' is 'many', not int"),
        ("lambda", drop("lambda"), "the card lacks 'lambda'"),
        ("stages", drop("stages"), "the card lacks 'stages'"),
        *((key, drop(key), f"the card lacks {key!r}") for key in ("entropy_path", "train_s", "device", "precision")),
        ("final", lambda card: card.update(final={"val_psnr": "high"}), "'final' is 'high', not float"),
        ("top-key", lambda card: card.update(colour="red"), "the card has unknown key(s) colour"),
    ]


@pytest.mark.parametrize("case, mutate, reason", _mutations(), ids=[m[0] for m in _mutations()])
def test_a_malformed_card_is_one_line_naming_the_file_and_key(kinds, tmp_path, case, mutate, reason):
    card = json.loads((kinds["trained"] / "mse-0.05.json").read_text())
    mutate(card)
    path = tmp_path / "mse-0.05.json"
    path.write_text(json.dumps(card))
    with pytest.raises(HarnessError) as caught:
        read_card(path)
    message = str(caught.value)
    assert message.startswith(f"{path} is not a model card (") and reason in message and "\n" not in message


@pytest.mark.parametrize("content, reason", [
    (None, "Is a directory"), (b"[1, 2]", "the card is list, not a JSON object"),
    (b'{"name": ', "Expecting value"), (b"\xff\xfe", "utf-8"),
])
def test_what_is_no_card_at_all_is_one_line(tmp_path, content, reason):
    path = tmp_path / "card.json"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(HarnessError, match=f"^{path} is not a model card \\(.*{reason}") as caught:
        read_card(path)
    assert "\n" not in str(caught.value)
