"""harness rerun: plan validation, incremental reruns with history, the report lock."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.lock import folder_lock
from harness.rerun.config import RerunConfig
from harness.rerun.pipeline import run_here
from harness.rerun.plan import load_plan
from harness.train.recipe import TrainingRecipe

REPO = Path(__file__).resolve().parents[1]

PLAN = """
name = "nightly"
reports_dir = "reports"
work_dir = "work"

[leaderboard]
datasets = ["kodak"]
max_images = 2
codecs = [{codecs}]
anchor = "jpeg"
"""


def _write_plan(directory: Path, codecs: str = '"jpeg"') -> Path:
    path = directory / "plan.toml"
    path.write_text(PLAN.format(codecs=codecs))
    return path


@pytest.mark.parametrize("text, message", [
    ('[leaderboard]\ndatasets=["kodak"]\n', "needs a name"),
    ('name="a"\n', "no \\[leaderboard\\] section"),
    ('name="a"\nbogus=1\n[leaderboard]\n', "unknown key\\(s\\) bogus"),
    ('name="a"\n[leaderboard]\nqualities=[1]\n', "\\[leaderboard\\]: unknown key\\(s\\) qualities; allowed: "),
    ('name="a"\n[[sweep]]\nlambda=0.1\n[leaderboard]\n', "\\[\\[sweep\\]\\] #1: unknown key\\(s\\) lambda"),
    ('name="a"\n[data]\nsources="x"\npatchsize=3\n[leaderboard]\n', "\\[data\\]: unknown key\\(s\\) patchsize"),
    ('name = \n', "cannot parse plan"),
    ('name="a"\n[leaderboard]\nmetrics=["ssim"]\n', "plan section \\[leaderboard\\]: unknown metric\\(s\\) ssim"),
    ('name="a\\u0000b"\n[leaderboard]\n', "name holds the control character '\\\\x00'"),
    ('name="a\\nb"\n[leaderboard]\n', "name holds the control character '\\\\n'"),
    ('name="a"\nwork_dir="runs/\\u0000"\n[leaderboard]\n', "work_dir holds the control character '\\\\x00'"),
    ('name="a"\nreports_dir="r\\u001b[31m"\n[leaderboard]\n', "reports_dir holds the control character '\\\\x1b'"),
    ('name="a"\n[leaderboard]\nmodels=["m\\u0000"]\n', "leaderboard.models\\[0\\] holds the control character"),
    ('name="a"\n[leaderboard]\ndatasets=["folder:x\\u0000"]\n', "leaderboard.datasets\\[0\\] holds the control"),
    ('name="a"\n[data]\nsources=["folder:\\u0000"]\n[leaderboard]\n', "data.sources\\[0\\] holds the control"),
    ('name="a"\n[[sweep]]\nout="\\u0000"\n[leaderboard]\n', "sweep\\[0\\].out holds the control"),
    ('name=5\n[leaderboard]\n', "needs a name"),
    ('name="a"\nwork_dir=["w"]\n[leaderboard]\n', "plan key 'work_dir' must be a path string, got \\['w'\\]"),
    ('name="a"\nreports_dir=3\n[leaderboard]\n', "plan key 'reports_dir' must be a path string, got 3"),
    ('name="a"\nleaderboard=3\n', "plan section \\[leaderboard\\] must be a table"),
    ('name="a"\nsweep=[3]\n[leaderboard]\n', "plan section \\[\\[sweep\\]\\] #1 must be a table"),
    ('name="a"\n[leaderboard]\nmodels="m"\n', "\\[leaderboard\\]: models must be a list of folders"),
    ('name="a"\n[leaderboard]\nmax_images="2"\n', "max_images must be an integer, got '2'"),
    ('name="a"\n[leaderboard]\ndatasets="kodak"\n', "datasets must be a list, got 'kodak'"),
])
def test_every_plan_problem_is_one_line_naming_the_plan(tmp_path, text, message):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(HarnessError, match=message) as caught:
        load_plan(path)
    assert f"plan {path}" in str(caught.value) and "\n" not in str(caught.value)


def test_a_plan_that_is_no_readable_toml_file_is_one_line(tmp_path):
    with pytest.raises(HarnessError, match=f"^cannot read plan {tmp_path}: Is a directory$"):
        load_plan(tmp_path)
    with pytest.raises(HarnessError, match=f"^plan {tmp_path / 'none.toml'} does not exist$"):
        load_plan(tmp_path / "none.toml")
    for name, content in (("latin1.toml", b'name = "caf\xe9"\n'), ("nul.toml", b'name = "a\x00"\n')):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(HarnessError, match=f"^cannot parse plan {tmp_path / name}: ") as caught:
            load_plan(tmp_path / name)
        assert "\n" not in str(caught.value)


def test_plan_paths_are_relative_to_the_plan(tmp_path):
    (tmp_path / "plans").mkdir()
    (tmp_path / "photos").mkdir()
    path = tmp_path / "plans" / "p.toml"
    path.write_text('name="n"\n[data]\nsources=["folder:../photos", "clic-train"]\n[leaderboard]\nmodels=["m"]\n')
    plan = load_plan(path)
    assert plan.prepare.sources == (f"folder:{tmp_path / 'photos'}", "clic-train")
    assert plan.leaderboard.models == (tmp_path / "plans" / "m",)
    assert plan.report_dir == tmp_path / "plans" / "reports" / "n"


def test_a_missing_source_folder_stops_the_plan_with_one_line_naming_it(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name="n"\n[data]\nsources=["clic-train", "folder:photos"]\n[leaderboard]\n')
    with pytest.raises(HarnessError) as error:
        load_plan(path)
    message = str(error.value)
    assert "\n" not in message and f"{tmp_path / 'photos'} is not a folder" in message
    assert "'folder:photos'" in message and "set sources in the plan's [data] section" in message


def test_sweep_defaults_give_every_sweep_one_recipe_that_a_sweep_may_override(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name="n"\n[sweep_defaults]\nlambdas=[0.01, 0.1]\nstage1_steps=7\n'
                    '[[sweep]]\nvariant="tiny"\n[[sweep]]\nvariant="compressai:mbt2018-mean?N=64,M=96"\n'
                    'stage1_steps=9\n[leaderboard]\n')
    tiny, baseline = load_plan(path).sweeps
    assert tiny.lambdas == baseline.lambdas == (0.01, 0.1)
    assert (tiny.recipe.stage1_steps, baseline.recipe.stage1_steps) == (7, 9)
    assert tiny.recipe == replace(baseline.recipe, stage1_steps=7) == TrainingRecipe(stage1_steps=7)
    assert baseline.out == tmp_path / "runs" / "n" / "sweep-compressai_mbt2018-mean_N_64_M_96-mse"
    path.write_text('name="n"\n[sweep_defaults]\nlambda=0.1\n[leaderboard]\n')
    with pytest.raises(HarnessError, match="\\[sweep_defaults\\]: unknown key\\(s\\) lambda"):
        load_plan(path)


def test_demo_plan_trains_both_learned_codecs_under_one_recipe_on_the_shared_photos(shared_dir):
    plan = load_plan(REPO / "schedule" / "demo.toml")
    assert plan.prepare.sources == (f"folder:{(shared_dir / 'data' / 'photos').resolve()}",)
    tiny, baseline = plan.sweeps
    assert (tiny.variant, baseline.variant) == ("tiny", "compressai:mbt2018-mean?N=64,M=96")
    assert len(tiny.lambdas) >= 3 and tiny.data == baseline.data == plan.shards_dir
    differ = {f for f in tiny.__dataclass_fields__ if getattr(tiny, f) != getattr(baseline, f)}
    assert differ == {"variant", "out"}
    board = plan.leaderboard
    assert {"jpeg", "webp", "jpeg2000", "jpegxl"} <= set(board.codecs) and board.datasets == ("kodak",)
    assert set(board.models) == {tiny.out / "models", baseline.out / "models"}
    assert load_plan(REPO / "schedule" / "paper.toml").sweeps[0].recipe.stage1_steps == 1_500_000


def test_plan_chooses_metrics_and_rd_plots(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name="n"\n[leaderboard]\nmetrics=["vmaf", "fsim"]\nrd_plots=["all"]\n')
    plan = load_plan(path)
    assert plan.leaderboard.metrics == ("core", "fsim", "vmaf")
    assert "vmaf" in plan.report.rd_plots and "psnr_y" in plan.report.rd_plots
    assert plan.report.run_dir == plan.leaderboard.run_dir == plan.report_dir


@pytest.mark.slow
def test_reruns_compute_only_what_is_missing_and_keep_history(tmp_path, ray_local):
    plan = _write_plan(tmp_path)
    report = tmp_path / "reports" / "nightly"
    run_here(RerunConfig(plan=plan))
    run_here(RerunConfig(plan=plan))
    _write_plan(tmp_path, '"jpeg", "webp"')
    run_here(RerunConfig(plan=plan))
    history = pd.read_parquet(report / "runs.parquet")
    assert list(history["cells_computed"]) == [8, 0, 8]
    assert list(history["cells_reused"]) == [0, 8, 8]
    assert "webp:quick" in history.iloc[-1]["codec_versions"]
    results = pd.read_parquet(report / "results.parquet")
    assert len(results) == 16 and not results.duplicated(["image", "codec", "config", "quality"]).any()
    readme = (report / "README.md").read_text()
    assert "## Changes since the previous run" in readme and "8 cells computed, 8 reused" in readme


@pytest.mark.slow
def test_a_second_rerun_of_the_same_report_is_refused_with_the_holder(tmp_path):
    plan = _write_plan(tmp_path)
    with folder_lock(tmp_path / "reports" / "nightly"):
        done = subprocess.run([sys.executable, "-m", "harness", "rerun", "--plan", str(plan)],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is locked by pid" in lines[0] and "--wait" in lines[0]
    assert not (tmp_path / "reports" / "nightly" / "results.parquet").exists()


def test_shipped_schedule_is_a_valid_plan_and_command():
    import shlex

    from harness.cli import build_parser

    plan = load_plan(REPO / "schedule" / "nightly.toml")
    assert plan.sweeps and plan.prepare and plan.leaderboard.codecs
    service = (REPO / "schedule" / "harness-rerun.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.split("=", 1)[1])
    args = build_parser().parse_args(argv[1:])
    assert args.command == "rerun" and args.plan == Path("schedule/nightly.toml") and args.wait_s > 0
    assert "OnCalendar=" in (REPO / "schedule" / "harness-rerun.timer").read_text()
