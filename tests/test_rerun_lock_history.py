"""The report lock of a rerun (harness.lock's folder lock: two scheduled reruns never write at
once), from processes started by multiprocessing, and the run history."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.lock import LOCK_NAME, folder_lock
from harness.rerun.history import RunRecord, append_run, compare_last_two, changes_markdown
from harness.rerun.pipeline import RerunConfig


def _hold(report_dir: str, ready, release) -> None:
    with folder_lock(Path(report_dir)):
        ready.set()
        release.wait(30)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the report's lock until ``holder.release.set()``."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    process = context.Process(target=_hold, args=(str(tmp_path), ready, release))
    process.start()
    process.release = release
    assert ready.wait(30)
    yield process
    if process.is_alive():  # a killed holder may have left the event's lock taken: don't touch it
        release.set()
        process.join(30)


def test_second_holder_is_refused_with_the_holder_named(tmp_path, holder):
    with pytest.raises(HarnessError, match=rf"^{tmp_path} is locked by pid {holder.pid} on .* since .*--wait"):
        with folder_lock(tmp_path):
            pass
    holder.release.set()
    holder.join(30)
    with folder_lock(tmp_path):
        pass


def test_waiting_holder_gets_the_lock_when_released(tmp_path, holder):
    threading.Timer(1.0, holder.release.set).start()
    start = time.monotonic()
    with folder_lock(tmp_path, wait_s=30):
        assert 0.5 < time.monotonic() - start < 30


def test_lock_of_a_killed_holder_is_free(tmp_path, holder):
    holder.kill()
    holder.join(30)
    with folder_lock(tmp_path):
        pass
    assert not (tmp_path / LOCK_NAME).exists()


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
