"""The run history of reruns: runs.parquet, the regressions between the last two runs and
changes.md. (The report folder's lock is harness.lock's, tests/test_lock.py's.)"""

from __future__ import annotations

import pytest

from harness.rerun.history import RunRecord, append_run, compare_last_two, changes_markdown
from harness.rerun.config import RerunConfig


def _record(run_id: str, bd: float, enc: float) -> RunRecord:
    return RunRecord(run_id, "2026-01-01T00:00:00", 1.0, "abc", "0.1.0", 3, 1, 0, {"jpeg": "libjpeg 9"},
                     {"kodak/jpeg/quick": {"bd_rate": bd, "enc_s": enc, "dec_s": 0.01}})


def test_history_appends_and_flags_regressions(tmp_path):
    append_run(tmp_path, _record("a", 10.0, 0.10))
    history = append_run(tmp_path, _record("b", 12.5, 0.11))
    assert list(history["run_id"]) == ["a", "b"]
    defaults = RerunConfig(plan=tmp_path / "plan.toml")  # the thresholds' one home
    changes = {c.quantity: c for c in compare_last_two(history, defaults.bd_rate_threshold, defaults.time_threshold)}
    assert changes["bd_rate"].regression and changes["bd_rate"].delta == pytest.approx(2.5)
    assert not changes["enc_s"].regression
    assert "**regression**" in changes_markdown(list(changes.values()))
