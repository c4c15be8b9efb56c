"""``harness rerun``: the whole pipeline of one plan, incrementally, as one Ray Job.

Every stage skips what already exists for the same inputs — shards whose
SHA-256 matches the manifest, models whose card records the same inputs,
result cells with an ``ok`` row for the same image, codec version, config and
quality — so a scheduled rerun after adding one checkpoint or one codec
computes only those cells. A rerun holds the report's lock, appends a row to
``runs.parquet`` and writes ``changes.md`` (this run vs the previous one, with
regressions flagged) into the report.

With ``--address`` the rerun is submitted to the cluster through the Ray Jobs
API and this process follows its logs; without, it runs here.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError
from harness.provenance import git_commit
from harness.raycluster import connect
from harness.rerun.history import RunRecord, append_run, changes_markdown, compare_last_two
from harness.rerun.lock import report_lock
from harness.rerun.plan import Plan, load_plan

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
SUBMIT_PATIENCE_S = 120.0


@dataclass(frozen=True)
class RerunConfig:
    plan: Path
    address: str | None = None  # Ray Jobs API address (http://HEAD:8265); None runs here
    wait_s: float = 0.0  # wait this long for a concurrent rerun of the same report
    python: str = sys.executable  # interpreter that runs the job on the head node
    bd_rate_threshold: float = 1.0  # percentage points of BD-rate that count as a regression
    time_threshold: float = 0.2  # relative slow-down that counts as a regression


def run(config: RerunConfig) -> int:
    if config.address:
        return submit(config)
    return run_here(config)


def submit(config: RerunConfig) -> int:
    """Submit the rerun as a Ray Job and follow it to the end (its logs are printed here)."""
    from ray.job_submission import JobSubmissionClient

    plan = load_plan(config.plan)  # fail here, not on the cluster, for a bad plan
    try:
        client = JobSubmissionClient(config.address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise HarnessError(f"cannot reach the Ray Jobs API at {config.address}: {error}") from None
    entrypoint = " ".join(shlex.quote(part) for part in [
        config.python, "-m", "harness", "rerun", "--plan", str(plan.path), "--wait", f"{config.wait_s:g}",
        "--bd-rate-threshold", f"{config.bd_rate_threshold:g}", "--time-threshold", f"{config.time_threshold:g}",
    ])
    submission_id = f"harness-rerun-{plan.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{os.getpid()}"
    deadline = time.monotonic() + SUBMIT_PATIENCE_S
    while True:
        try:
            job_id = client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                       runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}})
            break
        except RuntimeError as error:
            # A freshly started head answers "No available agent" until its job agent is up.
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise HarnessError(f"Ray at {config.address} refused the rerun job: {str(error).splitlines()[0]}") from None
            time.sleep(2.0)
    print(f"rerun: submitted Ray job {job_id} to {config.address}", flush=True)
    shown = 0
    while True:
        status = client.get_job_status(job_id).value
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            sys.stdout.write(logs[shown:])
            sys.stdout.flush()
            shown = len(logs)
        if status in TERMINAL:
            break
        time.sleep(1.0)
    if status != "SUCCEEDED":
        raise HarnessError(f"rerun job {job_id} {status.lower()}: see `ray job logs {job_id}`")
    return 0


def _prepare(plan: Plan) -> None:
    from harness.data.recipe import PatchRecipe
    from harness.data.shards import PrepareConfig
    from harness.data.shards import run as prepare
    from harness.rerun.plan import field_names

    recipe_keys = field_names(PatchRecipe)
    section = dict(plan.data or {})
    recipe = PatchRecipe(**{k: v for k, v in section.items() if k in recipe_keys})
    rest = {k: v for k, v in section.items() if k not in recipe_keys}
    rest["sources"] = tuple(rest.get("sources", ()))
    prepare(PrepareConfig(out=plan.shards_dir, recipe=recipe, progress=False, **rest))


def _sweeps(plan: Plan) -> list[Path]:
    from harness.train.sweep import SweepConfig
    from harness.train.sweep import run as sweep

    model_dirs = []
    for section in plan.sweeps:
        values = dict(section)
        values.setdefault("data", plan.shards_dir)
        values.setdefault("resume", "auto")  # a rerun continues a sweep an earlier rerun left unfinished
        values.setdefault("out", plan.work_dir / f"sweep-{values.get('variant', '3dm-weconvene')}-{values.get('metric', 'mse')}")
        for key in ("lambdas", "milestones"):
            if key in values:
                values[key] = tuple(values[key])
        sweep(SweepConfig(**values))
        model_dirs.append(Path(values["out"]) / "models")
    return model_dirs


def _leaderboard(plan: Plan, model_dirs: list[Path]) -> dict:
    from harness.eval.runner import LeaderboardConfig
    from harness.eval.runner import run as leaderboard

    values = dict(plan.leaderboard)
    for key in ("datasets", "codecs"):
        if key in values:
            values[key] = tuple(values[key])
    models = tuple(values.pop("models", ())) + tuple(model_dirs)
    if models:
        values["models"] = models
    leaderboard(LeaderboardConfig(run_name=plan.name, reports_dir=plan.reports_dir, progress=False, **values))
    return json.loads((plan.report_dir / "run.json").read_text())


def _curves(report_dir: Path) -> dict[str, dict[str, float]]:
    """Per curve: BD-rate (PSNR, PCHIP) vs the anchor and mean encode/decode seconds."""
    import pandas as pd

    curves: dict[str, dict[str, float]] = {}
    results = pd.read_parquet(report_dir / "results.parquet")
    ok = results[results["status"] == "ok"]
    for (dataset, codec, cfg), rows in ok.groupby(["dataset", "codec", "config"]):
        curves[f"{dataset}/{codec}:{cfg}"] = {"enc_s": float(rows["enc_s"].mean()), "dec_s": float(rows["dec_s"].mean())}
    bdrate = report_dir / "bdrate.csv"
    if bdrate.is_file():
        table = pd.read_csv(bdrate)
        for _, row in table[table["metric"] == "psnr"].iterrows():
            key = f"{row['dataset']}/{row['codec']}:{row['config']}"
            curves.setdefault(key, {})["bd_rate"] = float(row["bd_rate_pct"])
    return curves


def run_here(config: RerunConfig) -> int:
    plan = load_plan(config.plan)
    with report_lock(plan.report_dir, wait_s=config.wait_s):
        started = time.time()
        connect(log_to_driver=True)
        if plan.data is not None:
            _prepare(plan)
        model_dirs = _sweeps(plan)
        summary = _leaderboard(plan, model_dirs)
        record = RunRecord(
            run_id=f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}",
            started_at=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            wall_s=time.time() - started,
            git_commit=git_commit() or "",
            harness_version=__version__,
            cells_computed=int(summary["computed"]),
            cells_reused=int(summary["reused"]),
            cells_failed=int(summary["errors"]),
            codec_versions={c["codec"]: c["version"] for c in summary["codecs"]},
            curves=_curves(plan.report_dir),
        )
        history = append_run(plan.report_dir, record)
        changes = compare_last_two(history, config.bd_rate_threshold, config.time_threshold)
        changes_md = (
            f"Run {record.run_id} ({len(history)} runs in runs.parquet): {record.cells_computed} cells computed, "
            f"{record.cells_reused} reused, {record.cells_failed} failed.\n\n" + changes_markdown(changes)
        )
        (plan.report_dir / "changes.md").write_text("# Changes since the previous run\n\n" + changes_md)
        with open(plan.report_dir / "README.md", "a") as readme:
            readme.write("\n## Changes since the previous run\n\n" + changes_md)
        regressions = [c for c in changes if c.regression]
        print(f"rerun {plan.name}: {record.cells_computed} cells computed, {record.cells_reused} reused, "
              f"{record.cells_failed} failed; {len(regressions)} regression(s) -> {plan.report_dir}", flush=True)
    return 0
