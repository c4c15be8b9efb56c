"""Learned-codec rows: a train-sweep models folder becomes one curve of real .3dmw bitstreams."""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import start_local_ray

from harness.artefacts.card import read_card
from harness.artefacts.checkpoint import fingerprint, load_checkpoint
from harness.artefacts.coding import encode, profile
from harness.codecs.learned import instance, sweep_configs
from harness.data.recipe import PatchRecipe
from harness.errors import HarnessError
from harness.data.manifest import MANIFEST
from harness.hashing import sha256_bytes, sha256_file
from harness.leaderboard.config import LeaderboardConfig
from harness.leaderboard.run import run
from harness.model import exact_cpu
from harness.model.network import WeConvene
from harness.model.precision import set_precision
from harness.pixels.images import load_rgb, save_png
from harness.report.config import ReportConfig
from harness.report.publish import publish, record_models
from harness.train.config import models_dir
from harness.train.loop import TrialConfig, export_model
from harness.train.recipe import TrainingRecipe
from harness.train.config import sweep_config
from harness.train.sweep import check_data, trial_configs, warmup_trial
from harness.zoo.variants import get_config


@pytest.fixture(scope="module")
def shards(photo_shards) -> Path:
    """A small shard folder: the data a sweep's cards name (test_model_baselines' sweeps train on it)."""
    return photo_shards(6, PatchRecipe(patch=64, resize=128, patches_per_image=2), val_fraction=0.34)


def _sweep(folder: Path, lambdas: tuple[float, ...], shards: Path, seed: int = 0) -> Path:
    """A models folder as train-sweep exports it (its own export function), with untrained weights."""
    config = sweep_config(dict(data=shards, variant="tiny", lambdas=lambdas, patch=64, out=folder))
    for index, trial in enumerate(trial_configs(config, check_data(config))):
        torch.manual_seed(seed + index)
        export_model(WeConvene(get_config("tiny")).eval(), trial, final={})
    return models_dir(folder)


def _warm_started(folder: Path, lambdas: tuple[float, ...], shards: Path) -> Path:
    """A models folder whose models started from the sweep's shared warm-up (cards with stage 0),
    the warm-up's own model in ``folder/warmup/models``."""
    config = sweep_config(dict(data=shards, variant="tiny", lambdas=lambdas, patch=64, out=folder, warmup_steps=3))
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

    from harness.artefacts.config import ImportWeightsConfig
    from harness.artefacts.weights import run_import

    for quality in qualities:
        torch.manual_seed(quality)
        source = folder.parent / f"factorized-q{quality}.pth.tar"
        torch.save(FactorizedPrior(N=16, M=24).state_dict(), source)
        run_import(ImportWeightsConfig("compressai:bmshj2018-factorized", quality, str(source), folder))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory, kodak_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("images")
    for name in ("kodim05.png", "kodim23.png"):
        save_png(np.ascontiguousarray(load_rgb(kodak_dir / name).pixels[:96, :128]), root / name)
    return root


def _config(images: Path, models: Path, reports: Path) -> LeaderboardConfig:
    # fp32 named, not auto (bf16 on an AMX CPU): the reruns below meet the shared run's curves
    # under the same config hash wherever the suite runs.
    return LeaderboardConfig(datasets=(f"folder:{images}",), codecs=("jpeg:quick",), models=(models,), run_name="t",
                             reports_dir=reports, progress=False, checkpoint_s=0.0, precision="fp32")


@pytest.fixture(scope="module")
def board(tmp_path_factory, images, shards) -> LeaderboardConfig:
    """One leaderboard of every kind of models folder (trained, started from a warm-up, the
    warm-up itself, imported; jpeg beside them) and its report, as the leaderboard command
    makes them. The tests that only read a run share it; those that change a model or a setting
    rerun a copy of its run folder, so that only their own cells are computed."""
    start_local_ray()
    root = tmp_path_factory.mktemp("board")
    warm = _warm_started(root / "sweep-w", (0.0067, 0.05), shards)
    folders = (_sweep(root / "sweep-t", (0.0067, 0.05), shards), warm, root / "sweep-w" / "warmup" / "models",
               _imported(root / "imported", (1, 3)))
    config = replace(_config(images, folders[0], root), models=folders)
    run(config)  # then the report, as the leaderboard command does
    record_models(config.run_dir, config.models)
    publish(ReportConfig(config.run_dir))
    return config


def _results(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "results.parquet")


@pytest.mark.slow
def test_models_folder_is_one_curve_of_real_bitstreams(board, images):
    models = board.models[0]
    frame = _results(board.run_dir)
    learned = frame[frame["config"] == "sweep-t"]  # the curve is named after its sweep's folder
    assert len(learned) == 4 and (learned["status"] == "ok").all() and set(learned["codec"]) == {"tiny"}
    assert set(learned["quality"]) == {0.0067, 0.05}
    card = read_card(models / "mse-0.05.json")
    assert set(learned["params"]) == {card.params} and learned["psnr_rgb"].notna().all()
    net = load_checkpoint(models / "mse-0.05.pt")
    assert card.fingerprint == fingerprint(net) and card.params == sum(p.numel() for p in net.parameters())
    # The bytes are those of `harness compress` with the same checkpoint.
    row = learned[(learned["image"] == "kodim05.png") & (learned["quality"] == 0.05)].iloc[0]
    pixels = load_rgb(images / "kodim05.png").pixels
    assert row["bytes"] == len(encode(load_checkpoint(models / "mse-0.05.pt"), pixels))
    assert row["codec_version"].endswith(f"checkpoint {sha256_file(models / 'mse-0.05.pt')[:12]}")
    # The likelihoods' estimate beside the bitstream (kodim05's crop is no multiple of the stride).
    assert learned["est_bits"].notna().all() and frame.loc[frame["codec"] == "jpeg", "est_bits"].isna().all()
    assert (learned["enc_net_s"] > 0).all() and (learned["enc_net_s"] < learned["enc_s"] + 1).all()
    assert (learned["dec_net_s"] > 0).all() and frame.loc[frame["codec"] == "jpeg", "dec_net_s"].isna().all()
    assert (0.5 < learned["bytes"] * 8 / learned["est_bits"]).all() and (learned["bytes"] * 8 / learned["est_bits"] < 2).all()


@pytest.mark.slow
def test_retraining_one_lambda_and_adding_one_recomputes_only_their_cells(ray_local, board, images, shards, tmp_path):
    shutil.copytree(board.run_dir, tmp_path / "t")
    shutil.copytree(board.models[0].parent, tmp_path / "sweep-t")
    models = models_dir(tmp_path / "sweep-t")
    _sweep(tmp_path / "retrained", (0.05,), shards, seed=7)
    shutil.copy(tmp_path / "retrained" / "models" / "mse-0.05.pt", models / "mse-0.05.pt")
    _sweep(tmp_path / "added", (0.013,), shards, seed=9)
    for suffix in (".pt", ".json"):
        shutil.copy(tmp_path / "added" / "models" / f"mse-0.013{suffix}", models / f"mse-0.013{suffix}")
    run(_config(images, models, tmp_path))
    first, second = _results(board.run_dir), _results(tmp_path / "t")
    changed = second.merge(first, on=["image", "codec", "config", "quality"], how="left", suffixes=("", "_old"))
    recomputed = changed[changed["created_at"] != changed["created_at_old"]]
    assert sorted(set(recomputed["quality"])) == [0.013, 0.05]
    assert set(recomputed["codec"]) == {"tiny"} and set(recomputed["config"]) == {"sweep-t"}


def test_estimated_bits_and_the_paddings_share(tiny_checkpoint, kodak_dir, torch_one_thread):
    """The likelihoods' bits of an image, and the part on the padding: none at a multiple of the stride."""
    model = load_checkpoint(tiny_checkpoint)
    pixels = load_rgb(kodak_dir / "kodim05.png").pixels
    aligned = profile(model, np.ascontiguousarray(pixels[:model.stride, :2 * model.stride]))
    assert aligned.est_bits > 0 and aligned.pad_bits == 0.0 and aligned.g_a_s > 0 and aligned.g_s_s > 0
    padded = profile(model, np.ascontiguousarray(pixels[:model.stride + 8, :2 * model.stride]))
    assert 0 < padded.pad_bits < padded.est_bits and padded.est_bits > aligned.est_bits


def test_bad_models_folders_are_clear_errors(tmp_path):
    with pytest.raises(HarnessError, match="is not a folder"):
        sweep_configs(tmp_path / "missing", "fp32")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="holds no train-sweep models"):
        sweep_configs(tmp_path / "empty", "fp32")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("{}")
    with pytest.raises(HarnessError, match="is not a model card"):
        sweep_configs(tmp_path / "bad", "fp32")


def test_a_learned_curve_reaches_its_cells_as_one_typed_record(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    (data / MANIFEST).write_text("{}")  # the card records the manifest's hash
    for index, lmbda in enumerate((0.05, 0.0067)):
        trial = TrialConfig(data=str(data), data_sha256="d" * 64, out=str(tmp_path / "sweep-c"), variant="tiny",
                            metric="mse", lmbda=lmbda, recipe=TrainingRecipe(patch=64), threads=1)
        torch.manual_seed(index)
        export_model(WeConvene(get_config("tiny")).eval(), trial, final={})
    [config] = sweep_configs(models_dir(tmp_path / "sweep-c"), "bf16")
    curve = config.curve
    assert (curve.variant, curve.metric, curve.precision) == ("tiny", "mse", "bf16")
    assert [point.lmbda for point in curve.points] == list(config.ladder) == [0.0067, 0.05]
    assert all(point.sha256 == sha256_file(point.checkpoint) for point in curve.points)
    assert pickle.loads(pickle.dumps(config)) == config  # what Ray hands each cell
    codec = instance(config)
    assert codec.precision == "bf16" and codec.params == curve.params
    assert codec.version_at("v", 0.05) == f"v; checkpoint {curve.points[1].sha256[:12]}"
    with pytest.raises(HarnessError, match=r"^no checkpoint for lambda 0.1 in this sweep \(have 0.0067, 0.05\)$"):
        codec.version_at("v", 0.1)
    # The hash the curve's config had when its settings were JSON: earlier results stay reusable.
    earlier = {"codec": "tiny", "variant": "tiny", "metric": "mse", "params": curve.params, "precision": "bf16"}
    assert config.config_hash == sha256_bytes(json.dumps(earlier, sort_keys=True).encode())[:16]


@pytest.mark.skipif(not exact_cpu.onednn_int8_available(), reason="oneDNN's int8 GEMM packs weights on x86 only")
def test_a_cell_worker_packs_its_models_gemm_weights_once_not_at_every_coding(tmp_path, kodak_dir, monkeypatch):
    """A worker codes every image of a curve with the models it loaded: the entropy model's GEMM
    weights are packed when it loads one (0.22 s of each coding of the default model otherwise)."""
    monkeypatch.setattr(exact_cpu, "_gemm", lambda: exact_cpu.ONEDNN)
    made = []
    prepare = exact_cpu.gemm_weight
    monkeypatch.setattr(exact_cpu, "gemm_weight", lambda weight: made.append(weight) or prepare(weight))
    data = tmp_path / "shards"
    data.mkdir()
    (data / MANIFEST).write_text("{}")
    trial = TrialConfig(data=str(data), data_sha256="d" * 64, out=str(tmp_path / "sweep"), variant="tiny",
                        metric="mse", lmbda=0.01, recipe=TrainingRecipe(patch=64), threads=1)
    torch.manual_seed(7)
    export_model(WeConvene(get_config("tiny")).eval(), trial, final={})
    [config] = sweep_configs(models_dir(tmp_path / "sweep"), "fp32")
    codec = instance(config)
    codec.prepare(0.01)
    packed = len(made)
    rgb = load_rgb(kodak_dir / "kodim23.png").pixels[:64, :96]
    stream = codec.encode(rgb, 0.01, tmp_path)
    assert codec.decode(stream, 64, 96, tmp_path).shape == rgb.shape
    assert packed > 100 and len(made) == packed


@pytest.mark.slow
def test_precision_is_part_of_the_curves_config_and_of_each_row(ray_local, board, images, tmp_path):
    shutil.copytree(board.run_dir, tmp_path / "t")
    models = board.models[0]
    run(replace(_config(images, models, tmp_path), precision="bf16"))  # the shared run is fp32
    first, second = _results(board.run_dir), _results(tmp_path / "t")
    merged = second.merge(first, on=["image", "codec", "config", "quality"], suffixes=("", "_old"))
    learned, jpeg = merged[merged["config"] == "sweep-t"], merged[merged["codec"] == "jpeg"]
    assert len(learned) == 4 and set(learned["precision_old"]) == {"fp32"} and set(learned["precision"]) == {"bf16"}
    assert (learned["config_hash"] != learned["config_hash_old"]).all()  # a new config: its cells computed anew
    assert (learned["created_at"] != learned["created_at_old"]).all()
    assert jpeg["precision"].isna().all() and (jpeg["created_at"] == jpeg["created_at_old"]).all()
    row = learned[(learned["image"] == "kodim05.png") & (learned["quality"] == 0.05)].iloc[0]
    net = load_checkpoint(models / "mse-0.05.pt")
    set_precision(net, "bf16")
    assert row["bytes"] == len(encode(net, load_rgb(images / "kodim05.png").pixels))


@pytest.mark.slow
def test_every_cell_records_its_peak_memory_and_a_budget_below_the_models_least_fails_its_cells(
        ray_local, kodak_dir, shards, tmp_path):
    """Images of mixed sizes within the tiny variant's default cell budget: every cell ok, with its
    encode and decode peaks (the worker's RSS: above the loaded model's) and no tile; then
    --max-memory 64M, under the loaded model alone: each learned cell fails in one line naming its
    image and both sizes, and the run goes on (jpeg's cells are ok)."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pixels = load_rgb(kodak_dir / "kodim23.png").pixels
    save_png(np.ascontiguousarray(pixels[:64, :96]), mixed / "small.png")
    save_png(pixels, mixed / "kodim23.png")
    models = _sweep(tmp_path / "sweep-m", (0.05,), shards)
    run(_config(mixed, models, tmp_path))
    rows = pd.read_parquet(tmp_path / "t" / "results.parquet")
    assert (rows["status"] == "ok").all() and len(rows) == 2 * (1 + 4)
    learned = rows[rows["codec"] == "tiny"]
    assert (learned["enc_peak_bytes"] > 5 * 10**8).all() and (learned["dec_peak_bytes"] > 5 * 10**8).all()
    assert learned["tile"].isna().all() and (rows["enc_peak_bytes"] > 0).all()
    run(replace(_config(mixed, models, tmp_path), run_name="low", max_memory=64 * 2**20))
    low = pd.read_parquet(tmp_path / "low" / "results.parquet")
    failed = low[low["codec"] == "tiny"].set_index("image")["error"]
    assert set(low[low["codec"] == "jpeg"]["status"]) == {"ok"}
    assert failed["kodim23.png"].startswith(f"{mixed / 'kodim23.png'}: --max-memory 64M is below the ")
    assert " tiny needs for 768x512 (the loaded model " in failed["kodim23.png"]


@pytest.mark.slow
def test_every_kind_of_model_card_goes_through_the_leaderboard_and_its_report(board):
    """Trained, started from a warm-up, the warm-up itself, imported: one curve each, every
    cell ok, each described in the report's opening section."""
    frame = _results(board.run_dir)
    learned = frame[frame["codec"] != "jpeg"]
    assert (learned["status"] == "ok").all() and len(learned) == 2 * (2 + 2 + 1 + 2)
    assert set(learned["config"]) == {"sweep-t", "sweep-w", "warmup", "imported"}
    readme = (board.run_dir / "README.md").read_text()
    rows = {line.split(" | ")[0].strip("| `"): line for line in readme.split("## This run")[0].splitlines()
            if line.startswith("| `")}
    assert set(rows) == {"tiny:sweep-t", "tiny:sweep-w", "tiny:warmup", "compressai-bmshj2018-factorized:imported"}
    assert "| 3 (8 x 64²) |" in rows["tiny:warmup"] and "the first 3 a shared warm-up" in rows["tiny:sweep-w"]
    assert ("imported weights: CompressAI weights: bmshj2018-factorized quality 1; CompressAI weights: "
            "bmshj2018-factorized quality 3 | not trained here" in rows["compressai-bmshj2018-factorized:imported"])
