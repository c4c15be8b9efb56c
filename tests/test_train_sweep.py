"""harness train-sweep: input checks, a real two-λ tiny sweep on photo shards, and crash recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.artefacts.card import read_card
from harness.artefacts.checkpoint import load_checkpoint
from harness.artefacts.coding import decode, encode
from harness.data.recipe import PatchRecipe
from harness.errors import HarnessError
from harness.model.config import LOW_FREQUENCY_SUBBANDS
from harness.pixels.images import load_rgb
from harness.train.loop import TRAIN_RUNS
from harness.train.config import SweepConfig, sweep_config
from harness.train.sweep import check_data, experiment_dir, run, trial_configs

REPO = Path(__file__).resolve().parents[1]
LOW = sorted(LOW_FREQUENCY_SUBBANDS - {"LL"})
HIGH = ["LLH", "LHL", "LHH", "HLH", "HHL", "HHH"]


@pytest.fixture(scope="module")
def shards(photo_shards) -> Path:
    """64px patches from 24 photos (two val images)."""
    return photo_shards(24, PatchRecipe(patch=64, resize=256, patches_per_image=4), val_fraction=0.1)


def _sweep(shards: Path, out: Path, **overrides) -> SweepConfig:
    base = dict(data=shards, variant="tiny", lambdas=(0.0067, 0.05), stage1_steps=4, stage2_steps=2, batch_size=2,
                patch=64, out=out, checkpoint_every=2, log_every=2, val_batches=2)
    return sweep_config({**base, **overrides})


@pytest.mark.parametrize("overrides, message", [
    (dict(metric="psnr"), "unknown metric 'psnr'"),
    (dict(lambdas=(0.01, 0.0)), "every lambda must be a positive number"),
    (dict(lambdas=(-1.0,)), "every lambda must be a positive number"),
    (dict(patch=128), "64px patches, smaller than the 128px training crop"),
    (dict(patch=65), "multiple of the model stride"),
    (dict(metric="ms-ssim", lambdas=(8.0,)), "MS-SSIM training needs --patch >= 161"),
    (dict(variant="big"), "unknown model variant"),
    (dict(gpus_per_trial=2.5), "does not split into whole GPUs over 2 workers"),
    (dict(gpus_per_trial=2, workers_per_trial=1), "with one worker: a worker drives one device"),
    (dict(workers_per_trial=3), "--batch-size 2 does not split evenly over 3 workers"),
])
@pytest.mark.slow
def test_bad_sweeps_fail_before_any_trial(shards, tmp_path, overrides, message):
    with pytest.raises(HarnessError, match=message):
        run(_sweep(shards, tmp_path / "out", **overrides))
    assert not (tmp_path / "out" / "sweep").exists()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [dict(workers_per_trial=2), dict(cpus_per_trial=3)])
def test_trial_larger_than_the_local_ray_is_refused(shards, tmp_path, ray_local, overrides):
    """Tune would wait forever for resources a local instance never gets."""
    with pytest.raises(HarnessError, match="but the local Ray has 2 CPUs"):
        run(_sweep(shards, tmp_path / "out", **overrides))
    assert not list((tmp_path / "out").glob("sweep-*"))


def test_missing_or_empty_shard_directory(tmp_path):
    with pytest.raises(HarnessError, match="no prepared data at"):
        check_data(SweepConfig(data=tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="has no manifest.json"):
        check_data(SweepConfig(data=tmp_path / "empty"))


def _rate(row: pd.Series, names: list[str]) -> float:
    return sum(row[f"bpp_{name}"] for name in names)


@pytest.mark.slow
def test_tiny_sweep_trains_both_lambdas_in_two_stages(shards, tmp_path, ray_local):
    out = tmp_path / "sweep"
    config = _sweep(shards, out, stage1_steps=60, stage2_steps=20, log_every=10, checkpoint_every=20,
                    batch_size=4, lr=1e-3, milestones=(), w1=2.0, w2=0.5, val_batches=4)
    cards = run(config)
    assert [c.checkpoint for c in cards] == ["mse-0.0067.pt", "mse-0.05.pt"]
    assert cards == [read_card(out / "models" / f"{c.name}.json") for c in cards]
    for card in cards:
        assert card.stages["1"].steps == 60 and card.stages["2"].steps == 20
        assert (card.stages["2"].w1, card.stages["2"].w2) == (2.0, 0.5)
        assert card.data_manifest_sha256 and card.params > 0 and card.restored_from_steps == ()
        assert card.entropy_path == "integer-2"
    # The larger λ buys rate. (Its PSNR lead only shows once training leaves the
    # distortion-dominated start, after a few hundred steps: see README "Training".)
    low, high = (card.final for card in cards)
    assert high["val_bpp"] > low["val_bpp"]

    metrics = pd.read_parquet(out / "metrics.parquet")
    for lmbda, rows in metrics.groupby("lmbda"):
        rows = rows.sort_values("step")
        assert list(rows["step"]) == list(range(10, 81, 10))
        assert rows["loss"].iloc[:2].mean() > rows["loss"].iloc[-4:-2].mean()  # stage 1 learns
        # Stage 2 optimises eq. 2: the reported loss is the reweighted rate plus λ·D.
        for _, row in rows[rows["stage"] == 2].iterrows():
            expected = 2.0 * _rate(row, LOW) + 0.5 * _rate(row, HIGH) + row["bpp_z"] + lmbda * row["distortion"]
            assert row["loss"] == pytest.approx(expected, rel=1e-4)
        for _, row in rows[rows["stage"] == 1].iterrows():
            assert row["loss"] == pytest.approx(row["bpp"] + lmbda * row["distortion"], rel=1e-4)

    again = run(config)  # same inputs: both models reused, nothing trained
    assert again == cards
    assert len(pd.read_parquet(out / "metrics.parquet")) == len(metrics)


@pytest.mark.slow
def test_resume_without_a_sweep_and_rerun_into_a_used_directory(shards, tmp_path, ray_local):
    with pytest.raises(HarnessError, match="nothing to resume"):
        run(_sweep(shards, tmp_path / "a", lambdas=(0.01,), resume="yes"))
    config = _sweep(shards, tmp_path / "b", lambdas=(0.01,))
    experiment_dir(config.out, trial_configs(config, check_data(config))).mkdir(parents=True)
    with pytest.raises(HarnessError, match="holds an earlier sweep: pass --resume"):
        run(config)


def _checkpoint_recorded(out: Path, workers: int) -> bool:
    """Whether Ray has recorded a checkpoint the trial can restart from (not merely written one).

    Tune records a trial's checkpoint before it asks the trial for its next result, so the
    second checkpoint folder proves the first recorded. Ray Train records its workers'
    checkpoints in its run's checkpoint-manager snapshot."""
    if workers == 1:
        return any(out.glob("sweep-*/*/checkpoint_000001"))
    for snapshot in out.glob(f"{TRAIN_RUNS}/*/checkpoint_manager_snapshot.json"):
        try:
            if json.loads(snapshot.read_text()).get("checkpoint_results"):
                return True
        except json.JSONDecodeError:  # being written: read it on the next poll
            pass
    return False


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a hang guard only: the test waits on events, never on the clock
@pytest.mark.parametrize("workers", [1, 2])
def test_trial_resumes_from_its_checkpoint_when_its_node_dies(shards, tmp_path, loopback_cluster, workers):
    """A worker node killed mid-stage-1: the trial restarts on a new node from its checkpoint
    (for a DDP trial, from Ray Train's checkpoint of its workers). The DDP trial trains in bf16
    mixed precision (channels_last weights under DDP), which its card records; rank 0 reports,
    and exports a model that codes."""
    cpus = workers + 1  # DDP workers and the trial that drives them
    # Ray Train releases a dead run's placement group through the state API (the dashboard):
    # without it the orphaned group would hold the new node's CPUs.
    cluster = loopback_cluster(head_cpus=0, workers=(cpus,), dashboard=workers > 1, connect=False)
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "harness", "train-sweep", "--data", str(shards), "--variant", "tiny",
               "--lambdas", "0.01", "--stage1-steps", "20", "--stage2-steps", "4", "--batch-size", "2",
               "--patch", "64", "--checkpoint-every", "5", "--log-every", "5", "--val-batches", "1",
               "--workers-per-trial", str(workers), "--out", str(out), "--address", cluster.address,
               "--precision", "bf16" if workers > 1 else "fp32"]
    # The driver's output goes to a file: a pipe read only at the end fills up on a slow host
    # (Tune's status lines keep coming) and stalls the driver.
    log = tmp_path / "driver.log"
    with log.open("w") as sink:
        driver = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        while not _checkpoint_recorded(out, workers):
            assert driver.poll() is None, log.read_text()
            time.sleep(0.2)
        cluster.remove_node(cluster.workers[0], allow_graceful=False)
        cluster.add_worker(cpus)
        assert driver.wait() == 0, log.read_text()
    finally:
        driver.kill()
        driver.wait()
    card = read_card(out / "models" / "mse-0.01.json")
    restored = card.restored_from_steps
    assert restored and min(restored) >= 5  # from a checkpoint, never from step 0
    assert card.precision == ("bf16" if workers > 1 else "fp32") and card.stages["2"].steps == 4
    metrics = pd.read_parquet(out / "metrics.parquet").sort_values("time")
    assert metrics["step"].max() == 24 and set(metrics["workers"]) == {workers}
    assert metrics[metrics["restarts"] > 0]["step"].min() > min(restored)
    assert metrics["val_bpp"].notna().all()
    pixels = load_rgb(REPO / "datasets" / "kodak" / "kodim01.png").pixels[:64, :96]
    net = load_checkpoint(out / "models" / card.checkpoint)
    assert decode(net, encode(net, pixels)).shape == pixels.shape
    if workers > 1:
        assert list((out / TRAIN_RUNS).iterdir())  # Ray Train kept the workers' checkpoints


@pytest.mark.slow
def test_a_warm_up_is_trained_once_and_every_lambda_starts_from_it(shards, tmp_path, ray_local):
    import torch

    from harness.train.loop import _State
    from harness.train.sweep import pending, warmup_trial

    out = tmp_path / "sweep"
    config = _sweep(shards, out, lambdas=(0.001, 0.1), warmup_steps=3)
    assert [t.lmbda for t in pending(config)] == [0.1, 0.001, 0.1]  # warm-up at the largest lambda
    cards = run(config)
    warmup = out / "warmup" / "models" / "mse-0.1.pt"
    assert read_card(warmup.with_suffix(".json")).stages["1"].steps == 3
    for card in cards:
        stage0 = card.warmup
        assert (stage0.steps, stage0.lmbda) == (3, 0.1) and stage0.train_s > 0
    # A trial's model starts as the warm-up's weights, not a fresh initialisation.
    trial = trial_configs(config, check_data(config), warmup)[0]
    start, shared = _State(trial).model.state_dict(), load_checkpoint(warmup).state_dict()
    assert all(torch.equal(start[name], shared[name]) for name in shared if name.startswith("g_a"))
    assert pending(config) == [] and run(config) == cards  # nothing to train again
    warmup.write_bytes(warmup.read_bytes() + b"\0")  # a changed warm-up retrains every lambda
    assert [t.lmbda for t in pending(config)] == [0.001, 0.1]
    assert warmup_trial(config, check_data(config)).lmbda == 0.1
