"""``harness report RUN``: the report of a run folder, rebuilt from its records, and the
report's share of ``run.json``.

The leaderboard (:mod:`harness.leaderboard`) writes ``results.parquet`` and ``run.json``; the
report reads them and writes its files beside them. It also writes two parts of ``run.json``
that are its own: each curve's BD-rate (PSNR) against the anchor, which a rerun's history
compares run to run, and the learned models' facts from their cards (:func:`record_models`),
which its first section describes. The command layer runs the leaderboard, then these.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from harness.leaderboard.summary import RUN_FILE, RunSummary, curve_key, read_summary, write_summary
from harness.lock import folder_lock
from harness.report.build import build_report
from harness.report.config import ReportConfig
from harness.report.models import model_points
from harness.report.web import PAGE


def with_bdrates(curves: dict[str, dict[str, float]], bdrate: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``curves`` of a run's summary with each one's PSNR BD-rate from ``bdrate`` (bdrate.csv's rows)."""
    updated = {key: {k: v for k, v in values.items() if k != "bd_rate"} for key, values in curves.items()}
    for row in bdrate[bdrate["metric"] == "psnr"].itertuples() if not bdrate.empty else ():
        updated.setdefault(curve_key(row.dataset, row.codec, row.config), {})["bd_rate"] = float(row.bd_rate_pct)
    return updated


def record_models(run_dir: Path, models: tuple[Path, ...]) -> None:
    """Write the facts of the ``--models`` folders' cards into the run's ``run.json``, where the
    report's learned-models section reads them (nothing to do without model folders)."""
    if models:
        summary = read_summary(run_dir)
        write_summary(replace(summary, models=tuple(point for folder in models for point in model_points(folder))),
                      run_dir)


def publish(config: ReportConfig) -> RunSummary | None:
    """Rebuild every report file of ``config.run_dir`` and the BD-rates in its ``run.json`` (when
    it has one), holding the run folder's lock; returns the updated summary."""
    run_dir = Path(config.run_dir)
    with folder_lock(run_dir, config.wait_s):
        bdrate = build_report(run_dir, config.anchor, rd_plots=config.rd_plots)
        print(f"report: {run_dir / 'README.md'}")
        print(f"web report: {run_dir / PAGE}")
        if not (run_dir / RUN_FILE).is_file():
            return None
        summary = read_summary(run_dir)
        summary = replace(summary, curves=with_bdrates(summary.curves, bdrate))
        write_summary(summary, run_dir)
        return summary
