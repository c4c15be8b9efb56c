"""``harness rerun``: the whole pipeline of one plan, incrementally, as one Ray Job.

Every stage skips what already exists for the same inputs — shards whose
SHA-256 matches the manifest, models whose card records the same inputs,
result cells with an ``ok`` row for the same image, codec version, config and
quality — so a scheduled rerun after adding one checkpoint or one codec
computes only those cells. A rerun holds the report folder's lock (:mod:`harness.lock`;
its stages lock their shard and sweep folders too), appends a row to
``runs.parquet`` and writes ``changes.md`` (this run vs the previous one, with
regressions flagged) into the report.

With ``--address`` the rerun is submitted to the cluster through the Ray Jobs
API and this process follows its logs; without, it runs here.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from datetime import datetime, timezone

from harness import __version__
from harness.data.shards import run as prepare
from harness.errors import HarnessError
from harness.leaderboard.run import run as leaderboard
from harness.lock import folder_lock
from harness.provenance import git_commit
from harness.raycluster import connect
from harness.report.publish import publish, record_models
from harness.report.web import PAGE
from harness.rerun.config import RerunConfig
from harness.rerun.history import RunRecord, append_run, changes_markdown, compare_last_two
from harness.rerun.plan import load_plan
from harness.train.sweep import pending
from harness.train.sweep import run as sweep

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
SUBMIT_PATIENCE_S = 120.0


def run(config: RerunConfig) -> RunRecord | None:
    """The rerun's history row; None when it was submitted to a cluster (the row is written there)."""
    if config.address:
        submit(config)
        return None
    return run_here(config)


def submit(config: RerunConfig) -> None:
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
        "--no-progress",
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


def run_here(config: RerunConfig) -> RunRecord:
    """Run the plan's stages here (inside a Ray Job on a cluster); returns the history row."""
    plan = load_plan(config.plan, progress=config.progress, wait_s=config.wait_s)
    total = (plan.prepare is not None) + len(plan.sweeps) + 1
    done = 0

    def stage(name: str) -> None:
        nonlocal done
        done += 1
        print(f"rerun {plan.name} [{done}/{total}] {name} ({time.time() - started:.0f} s so far)", flush=True)

    with folder_lock(plan.report_dir, wait_s=config.wait_s):
        started = time.time()
        connect(log_to_driver=True)
        if plan.prepare is not None:
            stage("prepare-data")
            prepare(plan.prepare)
        steps = 0
        for sweep_config in plan.sweeps:
            stage(f"train-sweep {sweep_config.variant} ({sweep_config.metric})")
            steps += sum(trial.recipe.total_steps for trial in pending(sweep_config))
            sweep(sweep_config)
        stage("leaderboard")
        leaderboard(plan.leaderboard)
        record_models(plan.leaderboard.run_dir, plan.leaderboard.models)
        summary = publish(plan.report)
        record = RunRecord(
            run_id=f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}",
            started_at=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            wall_s=time.time() - started,
            git_commit=git_commit() or "",
            harness_version=__version__,
            cells_computed=summary.computed,
            cells_reused=summary.reused,
            cells_failed=summary.errors,
            steps_trained=steps,
            codec_versions=summary.codec_versions,
            curves=summary.curves,
        )
        history = append_run(plan.report_dir, record)
        changes = compare_last_two(history, config.bd_rate_threshold, config.time_threshold)
        changes_md = (
            f"Run {record.run_id} ({len(history)} runs in runs.parquet): {record.cells_computed} cells computed, "
            f"{record.cells_reused} reused, {record.cells_failed} failed; {record.steps_trained} training steps.\n\n"
            + changes_markdown(changes)
        )
        (plan.report_dir / "changes.md").write_text("# Changes since the previous run\n\n" + changes_md)
        with open(plan.report_dir / "README.md", "a") as readme:
            readme.write("\n## Changes since the previous run\n\n" + changes_md)
        regressions = [c for c in changes if c.regression]
        print(f"rerun {plan.name}: {record.steps_trained} training steps, {record.cells_computed} cells computed, "
              f"{record.cells_reused} reused, {record.cells_failed} failed; {len(regressions)} regression(s) in "
              f"{record.wall_s:.0f} s -> {plan.report_dir}", flush=True)
        print(f"open {plan.report_dir / PAGE}", flush=True)  # the web report, the last line a user sees
    return record
