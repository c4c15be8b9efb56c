"""One home for every default and check: the stage configs, built from CLI flags or plan sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import build_parser, main
from harness.flags import given
from harness.configs import build
from harness.data.recipe import PatchRecipe
from harness.data.shards import PrepareConfig, prepare_config
from harness.errors import HarnessError
from harness.leaderboard.config import LeaderboardConfig
from harness.report.config import ReportConfig
from harness.data.manifest import ShardManifest
from harness.train.recipe import TrainingRecipe
from harness.train.config import SweepConfig, sweep_config
from harness.train.sweep import trial_configs

def test_build_converts_plan_values_to_the_field_types():
    config = build(LeaderboardConfig, {"datasets": ["kodak", "tecnick"], "models": ["a/models"], "root": "/data",
                                       "max_images": 3, "timeout_s": 5})
    assert config.datasets == ("kodak", "tecnick") and config.models == (Path("a/models"),)
    assert config.root == Path("/data") and config.timeout_s == 5.0 and isinstance(config.timeout_s, float)
    sweep = sweep_config({"data": "d", "lambdas": [0.01, 1], "milestones": []})
    assert sweep.lambdas == (0.01, 1.0) and sweep.recipe.milestones == () and sweep.data == Path("d")


@pytest.mark.parametrize("values, message", [
    ({"max_images": "two"}, "max_images must be an integer, got 'two'"),
    ({"max_images": True}, "max_images must be an integer, got True"),
    ({"datasets": "kodak"}, "datasets must be a list, got 'kodak'"),
    ({"datasets": ["kodak", 3]}, r"datasets\[1\] must be a string, got 3"),
    ({"qualities": [1]}, r"unknown key\(s\) qualities; allowed: .*max_images"),
    ({"max_images": 0}, "--max-images must be at least 1, got 0"),
])
def test_build_names_the_key_of_a_bad_value(values, message):
    with pytest.raises(HarnessError, match=f"^plan section \\[leaderboard\\]: {message}"):
        build(LeaderboardConfig, values, "plan section [leaderboard]")


def test_flat_prepare_keys_split_into_the_recipe():
    config = prepare_config({"sources": ["folder:x"], "out": "o", "patch": 64, "resize": "none", "seed": 3})
    assert config.recipe == PatchRecipe(patch=64, resize=None, seed=3)
    assert config.sources == ("folder:x",) and config.out == Path("o") and config.val_fraction == 0.05


def test_flat_sweep_keys_split_into_the_training_recipe():
    config = sweep_config({"data": "d", "variant": "tiny", "patch": 64, "stage1_steps": 7, "precision": "bf16"})
    assert config.recipe == TrainingRecipe(patch=64, stage1_steps=7, precision="bf16")
    assert config.variant == "tiny" and config.data == Path("d") and config.max_failures == 3
    with pytest.raises(HarnessError, match=r"^plan section \[\[sweep\]\] #1: --val-batches must be >= 1, got 0$"):
        sweep_config({"data": "d", "val_batches": 0}, "plan section [[sweep]] #1")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_trial_of_a_sweep_trains_the_sweeps_own_recipe(tmp_path, precision):
    """One recipe object: the sweep's is each trial's, not a copy of its fields (a resolved
    precision is the trial's as given)."""
    config = sweep_config({"data": tmp_path, "variant": "tiny", "lambdas": [0.01, 0.1], "patch": 64,
                           "precision": precision})
    data = ShardManifest(plan_sha256="0" * 64, recipe={}, sources=(), target_patches=None, val_fraction=0.1,
                         shard_patches=1, status="complete", shards=(), per_source={}, rejected=(), totals={},
                         resume={}, wall_time_s=0.0)
    trials = trial_configs(config, data)
    assert [t.lmbda for t in trials] == [0.01, 0.1]
    assert all(trial.recipe is config.recipe for trial in trials)


@pytest.mark.parametrize("argv, config, expected", [
    (["leaderboard"], LeaderboardConfig, {}),
    (["leaderboard", "--max-images", "2", "--no-report"], LeaderboardConfig, {"max_images": 2}),
    (["leaderboard", "--anchor", "hevc", "--wait", "5"], ReportConfig, {"anchor": "hevc", "wait_s": 5.0}),
    (["report", "runs/r", "--rd-plots", "all"], ReportConfig, {"run_dir": Path("runs/r"), "rd_plots": ("all",)}),
    (["train-sweep", "--data", "d"], SweepConfig, {"data": Path("d")}),
    (["train-sweep", "--data", "d", "--patch", "64", "--w2", "0.5"], SweepConfig,
     {"data": Path("d"), "patch": 64, "w2": 0.5}),
    (["train-sweep", "--data", "d", "--resume", "--lambdas", "0.1,0.2"], SweepConfig,
     {"data": Path("d"), "resume": "yes", "lambdas": (0.1, 0.2)}),
    (["prepare-data", "--source", "a", "--out", "o"], PrepareConfig, {"sources": ["a"], "out": "o"}),
])
def test_the_cli_passes_only_what_the_user_gave(argv, config, expected):
    recipe = TrainingRecipe if config is SweepConfig else PatchRecipe
    assert given(build_parser().parse_args(argv), config, recipe) == expected


def test_help_shows_the_configs_own_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = SweepConfig(data=Path("d"))
    for flag, value in (("--stage1-steps", defaults.recipe.stage1_steps), ("--batch-size", defaults.recipe.batch_size),
                        ("--w1", defaults.recipe.w1), ("--variant", defaults.variant)):
        assert f"(default: {value:g})" in text if isinstance(value, float) else f"(default: {value})" in text, flag


@pytest.mark.parametrize("cli, plan, message", [
    (["leaderboard", "--max-images", "0"], "[leaderboard]\nmax_images = 0\n", "--max-images must be at least 1, got 0"),
    (["leaderboard", "--max-images", "-1"], "[leaderboard]\nmax_images = -1\n",
     "--max-images must be at least 1, got -1"),
    (["train-sweep", "--data", "d", "--metric", "psnr"], "[[sweep]]\nmetric = 'psnr'\n[leaderboard]\n",
     "unknown metric 'psnr': choose mse or ms-ssim"),
])
def test_the_cli_and_a_plan_give_the_same_one_line_error(tmp_path, monkeypatch, capsys, cli, plan, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plan.toml").write_text(f'name = "p"\n{plan}')
    for argv in (cli, ["rerun", "--plan", str(tmp_path / "plan.toml")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.rstrip().endswith(message), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]  # no stage ran


def test_a_run_folder_among_its_inputs_is_refused(tmp_path, monkeypatch, capsys):
    """In a folder: dataset (read recursively) the report's plots would join the test set; as a
    --models folder, run.json would be read as a model card. Refused before anything runs."""
    monkeypatch.chdir(tmp_path)
    photos, models = tmp_path / "photos", tmp_path / "sweep" / "models"
    photos.mkdir()
    models.mkdir(parents=True)
    (tmp_path / "plan.toml").write_text('name = "p"\nreports_dir = "photos"\n[leaderboard]\n'
                                        'datasets = ["folder:photos"]\n')
    for argv, message in (
        (["leaderboard", "--dataset", "folder:photos", "--reports", "photos"], "lies in the dataset folder"),
        (["leaderboard", "--dataset", f"folder:{tmp_path}", "--reports", "reports"], "lies in the dataset folder"),
        (["leaderboard", "--models", str(models), "--reports", "sweep", "--run", "models"], "is the --models folder"),
        (["rerun", "--plan", "plan.toml"], "lies in the dataset folder"),
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in photos.iterdir()) == [] and sorted(p.name for p in models.iterdir()) == []
    # Beside its inputs, or inside a --models folder (read flat), a run folder is fine.
    build(LeaderboardConfig, {"datasets": ["folder:photos"], "models": [str(models)], "reports_dir": "reports"})
    build(LeaderboardConfig, {"models": [str(models)], "reports_dir": str(models)})
