"""Run history of a scheduled report: ``<report>/runs.parquet``, one row per rerun.

Each row records when and from which commit the rerun ran, the codec versions it
saw, how many result cells it computed, reused and lost to errors, how many training
steps it ran, its wall time,
and a per-curve summary (BD-rate vs the anchor, mean encode/decode seconds). The
summary of the newest run is compared with the previous one to flag regressions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from harness.atomic import write_parquet_atomic

HISTORY_NAME = "runs.parquet"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started_at: str
    wall_s: float
    git_commit: str
    harness_version: str
    cells_computed: int
    cells_reused: int
    cells_failed: int
    codec_versions: dict[str, str] = field(default_factory=dict)
    # curve label -> {"bd_rate": %, "enc_s": s, "dec_s": s}; NaN where not computable.
    curves: dict[str, dict[str, float]] = field(default_factory=dict)
    steps_trained: int = 0  # training steps the rerun's sweeps ran (0 when every model was reused)


@dataclass(frozen=True)
class Change:
    curve: str
    quantity: str
    before: float
    after: float
    regression: bool

    @property
    def delta(self) -> float:
        return self.after - self.before


def append_run(report_dir: Path, record: RunRecord) -> pd.DataFrame:
    """Append ``record`` to the report's history (atomically) and return the whole history."""
    row = asdict(record)
    row["codec_versions"] = json.dumps(record.codec_versions, sort_keys=True)
    row["curves"] = json.dumps(record.curves, sort_keys=True)
    path = report_dir / HISTORY_NAME
    history = pd.concat([read_history(report_dir), pd.DataFrame([row])], ignore_index=True)
    write_parquet_atomic(history, path)
    return history


def read_history(report_dir: Path) -> pd.DataFrame:
    path = report_dir / HISTORY_NAME
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def compare_last_two(history: pd.DataFrame, bd_rate_threshold: float, time_threshold: float) -> list[Change]:
    """Changes between the last two runs, per curve and quantity.

    A BD-rate more than ``bd_rate_threshold`` percentage points higher, or an
    encode/decode time more than ``time_threshold`` (relative) slower, is a regression
    (the thresholds' defaults live in ``RerunConfig``).
    """
    if len(history) < 2:
        return []
    before = json.loads(history.iloc[-2]["curves"])
    after = json.loads(history.iloc[-1]["curves"])
    changes = []
    for curve in sorted(set(before) & set(after)):
        for quantity in ("bd_rate", "enc_s", "dec_s"):
            old, new = before[curve].get(quantity, math.nan), after[curve].get(quantity, math.nan)
            if not (math.isfinite(old) and math.isfinite(new)):
                continue
            if quantity == "bd_rate":
                regression = new - old > bd_rate_threshold
            else:
                regression = old > 0 and (new - old) / old > time_threshold
            changes.append(Change(curve, quantity, old, new, regression))
    return changes


def changes_markdown(changes: list[Change]) -> str:
    if not changes:
        return "No previous run to compare with.\n"
    lines = ["| curve | quantity | previous | this run | change | |", "|---|---|---:|---:|---:|---|"]
    for change in changes:
        flag = "**regression**" if change.regression else ""
        lines.append(
            f"| {change.curve} | {change.quantity} | {change.before:.3f} | {change.after:.3f} | {change.delta:+.3f} | {flag} |"
        )
    return "\n".join(lines) + "\n"
