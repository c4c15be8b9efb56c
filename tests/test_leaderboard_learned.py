"""Learned-codec rows: a train-sweep models folder becomes one curve of real .3dmw bitstreams."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.codecs.learned import sweep_configs
from harness.errors import HarnessError
from harness.hashing import sha256_file
from harness.eval.runner import LeaderboardConfig, run
from harness.images import load_rgb, save_png
from harness.data.recipe import PatchRecipe
from harness.model.card import read_card
from harness.model.checkpoint import fingerprint, load_checkpoint
from harness.model.coding import encode
from harness.model.config import get_config
from harness.model.network import WeConvene
from harness.model.precision import set_precision
from harness.train.loop import export_model, models_dir
from harness.train.sweep import SweepConfig, check_data, trial_configs, warmup_trial


@pytest.fixture(scope="module")
def shards(photo_shards) -> Path:
    """A small shard folder: the data a sweep's cards name (test_model_baselines' sweeps train on it)."""
    return photo_shards(6, PatchRecipe(patch=64, resize=128, patches_per_image=2), val_fraction=0.34)


def _sweep(folder: Path, lambdas: tuple[float, ...], shards: Path, seed: int = 0) -> Path:
    """A models folder as train-sweep exports it (its own export function), with untrained weights."""
    config = SweepConfig(data=shards, variant="tiny", lambdas=lambdas, patch=64, out=folder)
    for index, trial in enumerate(trial_configs(config, check_data(config))):
        torch.manual_seed(seed + index)
        export_model(WeConvene(get_config("tiny")).eval(), trial, final={})
    return models_dir(folder)


@pytest.fixture(scope="module")
def images(tmp_path_factory, kodak_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("images")
    for name in ("kodim05.png", "kodim23.png"):
        save_png(np.ascontiguousarray(load_rgb(kodak_dir / name).pixels[:96, :128]), root / name)
    return root


def _config(images: Path, models: Path, reports: Path) -> LeaderboardConfig:
    return LeaderboardConfig(datasets=(f"folder:{images}",), codecs=("jpeg:quick",), models=(models,), run_name="t",
                             reports_dir=reports, report=False, progress=False, checkpoint_s=0.0)


@pytest.mark.slow
def test_models_folder_is_one_curve_of_real_bitstreams_and_retraining_one_lambda_recomputes_only_its_cells(
        ray_local, images, shards, tmp_path):
    models = _sweep(tmp_path / "sweep-a", (0.0067, 0.05), shards)
    run(_config(images, models, tmp_path))
    first = pd.read_parquet(tmp_path / "t" / "results.parquet")
    learned = first[first["codec"] == "tiny"]
    assert len(learned) == 4 and (learned["status"] == "ok").all()
    assert set(learned["config"]) == {"sweep-a"} and set(learned["quality"]) == {0.0067, 0.05}
    card = read_card(models / "mse-0.05.json")
    assert set(learned["params"]) == {card.params} and learned["psnr_rgb"].notna().all()
    net = load_checkpoint(models / "mse-0.05.pt")
    assert card.fingerprint == fingerprint(net) and card.params == sum(p.numel() for p in net.parameters())
    # The bytes are those of `harness compress` with the same checkpoint.
    row = learned[(learned["image"] == "kodim05.png") & (learned["quality"] == 0.05)].iloc[0]
    pixels = load_rgb(images / "kodim05.png").pixels
    assert row["bytes"] == len(encode(load_checkpoint(models / "mse-0.05.pt"), pixels))
    assert row["codec_version"].endswith(f"checkpoint {sha256_file(models / 'mse-0.05.pt')[:12]}")

    # One λ retrained and one added: only their cells are computed again.
    _sweep(tmp_path / "retrained", (0.05,), shards, seed=7)
    shutil.copy(tmp_path / "retrained" / "models" / "mse-0.05.pt", models / "mse-0.05.pt")
    _sweep(tmp_path / "added", (0.013,), shards, seed=9)
    for suffix in (".pt", ".json"):
        shutil.copy(tmp_path / "added" / "models" / f"mse-0.013{suffix}", models / f"mse-0.013{suffix}")
    run(_config(images, models, tmp_path))
    second = pd.read_parquet(tmp_path / "t" / "results.parquet")
    changed = second.merge(first, on=["image", "codec", "config", "quality"], how="left", suffixes=("", "_old"))
    recomputed = changed[changed["created_at"] != changed["created_at_old"]]
    assert sorted(set(recomputed["quality"])) == [0.013, 0.05]
    assert set(recomputed["codec"]) == {"tiny"}


def test_bad_models_folders_are_clear_errors(tmp_path):
    with pytest.raises(HarnessError, match="is not a folder"):
        sweep_configs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="holds no train-sweep models"):
        sweep_configs(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("{}")
    with pytest.raises(HarnessError, match="is not a model card"):
        sweep_configs(tmp_path / "bad")


@pytest.mark.slow
def test_precision_is_part_of_the_curves_config_and_of_each_row(ray_local, images, shards, tmp_path):
    models = _sweep(tmp_path / "sweep-p", (0.05,), shards)
    run(replace(_config(images, models, tmp_path), precision="fp32"))
    first = pd.read_parquet(tmp_path / "t" / "results.parquet")
    run(replace(_config(images, models, tmp_path), precision="bf16"))
    second = pd.read_parquet(tmp_path / "t" / "results.parquet")
    merged = second.merge(first, on=["image", "codec", "config", "quality"], suffixes=("", "_old"))
    learned, jpeg = merged[merged["codec"] == "tiny"], merged[merged["codec"] == "jpeg"]
    assert len(learned) == 2 and set(learned["precision_old"]) == {"fp32"} and set(learned["precision"]) == {"bf16"}
    assert (learned["config_hash"] != learned["config_hash_old"]).all()  # a new config: its cells computed anew
    assert (learned["created_at"] != learned["created_at_old"]).all()
    assert jpeg["precision"].isna().all() and (jpeg["created_at"] == jpeg["created_at_old"]).all()
    row = learned[learned["image"] == "kodim05.png"].iloc[0]
    net = load_checkpoint(models / "mse-0.05.pt")
    set_precision(net, "bf16")
    assert row["bytes"] == len(encode(net, load_rgb(images / "kodim05.png").pixels))


def _warm_started(folder: Path, lambdas: tuple[float, ...], shards: Path) -> Path:
    """A models folder whose models started from the sweep's shared warm-up (cards with stage 0),
    the warm-up's own model in ``folder/warmup/models``."""
    config = SweepConfig(data=shards, variant="tiny", lambdas=lambdas, patch=64, out=folder, warmup_steps=3)
    data = check_data(config)
    warmup = warmup_trial(config, data)
    torch.manual_seed(0)
    export_model(WeConvene(get_config("tiny")).eval(), warmup, final={})
    for index, trial in enumerate(trial_configs(config, data, models_dir(warmup.out) / f"{warmup.name}.pt")):
        torch.manual_seed(index + 1)
        export_model(WeConvene(get_config("tiny")).eval(), trial, final={})
    return models_dir(folder)


def _imported(folder: Path, qualities: tuple[int, ...]) -> Path:
    """import-weights of freshly initialised small CompressAI models (one file per quality)."""
    from compressai.models import FactorizedPrior

    from harness.model.baselines import ImportWeightsConfig, run_import

    for quality in qualities:
        torch.manual_seed(quality)
        source = folder.parent / f"factorized-q{quality}.pth.tar"
        torch.save(FactorizedPrior(N=16, M=24).state_dict(), source)
        run_import(ImportWeightsConfig("compressai:bmshj2018-factorized", quality, str(source), folder))
    return folder


@pytest.mark.slow
def test_every_kind_of_model_card_goes_through_the_leaderboard_and_its_report(ray_local, images, shards, tmp_path):
    """Trained, started from a warm-up, the warm-up itself, imported: one curve each, every
    cell ok, each described in the report's opening section."""
    warm = _warm_started(tmp_path / "sweep-w", (0.0067, 0.05), shards)
    folders = (_sweep(tmp_path / "sweep-t", (0.0067, 0.05), shards), warm, tmp_path / "sweep-w" / "warmup" / "models",
               _imported(tmp_path / "imported", (1, 3)))
    run(replace(_config(images, folders[0], tmp_path), models=folders, report=True))
    frame = pd.read_parquet(tmp_path / "t" / "results.parquet")
    learned = frame[frame["codec"] != "jpeg"]
    assert (learned["status"] == "ok").all() and len(learned) == 2 * (2 + 2 + 1 + 2)
    assert set(learned["config"]) == {"sweep-t", "sweep-w", "warmup", "imported"}
    readme = (tmp_path / "t" / "README.md").read_text()
    rows = {line.split(" | ")[0].strip("| `"): line for line in readme.split("## This run")[0].splitlines()
            if line.startswith("| `")}
    assert set(rows) == {"tiny:sweep-t", "tiny:sweep-w", "tiny:warmup", "compressai-bmshj2018-factorized:imported"}
    assert "| 3 (8 x 64²) |" in rows["tiny:warmup"] and "the first 3 a shared warm-up" in rows["tiny:sweep-w"]
    assert ("imported weights: CompressAI weights: bmshj2018-factorized quality 1; CompressAI weights: "
            "bmshj2018-factorized quality 3 | not trained here" in rows["compressai-bmshj2018-factorized:imported"])

