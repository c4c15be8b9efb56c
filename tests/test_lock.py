"""The output-folder lock (harness.lock): real processes contend for it, dead holders' locks
are taken over, and the leaderboard, prepare-data, train-sweep and rerun hold it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import lock
from harness.cli import main
from harness.errors import HarnessError
from harness.lock import LEASE_S, LOCK_NAME, folder_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# A process that takes FOLDER's lock (waiting WAIT seconds), says so and holds it until its
# stdin closes; with START (a time.time()), it first sleeps until then.
# A process started from a shell gets Ctrl-C's default, KeyboardInterrupt; one started by a test
# worker inherits its SIGINT disposition, which an earlier test's libraries may have set to ignored
# (then Ctrl-C would do nothing: test_ctrl_c_releases_the_lock hung once so in a full run).
HOLD = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
from harness.errors import HarnessError
from harness.lock import folder_lock
if len(sys.argv) > 3:
    time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
try:
    with folder_lock(Path(sys.argv[1]), float(sys.argv[2])):
        print("held", flush=True)
        sys.stdin.read()
except HarnessError as error:
    print(f"refused: {error}", flush=True)
    sys.exit(1)
"""


# Judging a lock stale takes as long as a slow round trip to shared storage, so that two
# takers started together both judge before either acts (the race the takeover must survive).
SLOW_JUDGEMENT = """
import time
import harness.lock
judge = harness.lock._stale
harness.lock._stale = lambda seen: (time.sleep(0.3), judge(seen))[1]
"""


def _start(folder: Path, wait_s: float = 0.0, start_at: float | None = None, prelude: str = "") -> subprocess.Popen:
    argv = [sys.executable, "-c", prelude + HOLD, str(folder), str(wait_s)]
    argv += [] if start_at is None else [str(start_at)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=ENV)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path / "out"``; ``holder.release()`` ends it."""
    process = _start(tmp_path / "out")
    assert process.stdout.readline() == "held\n", process.stderr.read()

    def release() -> None:
        process.stdin.close()
        process.wait(30)

    process.release = release
    yield process
    if process.poll() is None:
        release()


def _foreign_lock(folder: Path, age_s: float = 0.0, **changes) -> Path:
    """A lock file as a command on another node writes it, its heartbeat ``age_s`` old."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    holder = {"pid": 1, "host": "node-7", "machine": "another-machine", "token": "0123abcd", "since":
              "2026-01-01T00:00:00+00:00", "command": "harness leaderboard --codecs jpeg", **changes}
    path.write_text(json.dumps(holder))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _mine(folder: Path) -> dict:
    return json.loads((folder / LOCK_NAME).read_text())


# ----------------------------------------------------------------------------- two processes


def test_second_process_is_refused_in_one_line_naming_holder_and_folder(tmp_path, holder):
    out = tmp_path / "out"
    with pytest.raises(HarnessError) as refused:
        with folder_lock(out):
            pytest.fail("took a lock another process holds")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{out} is locked by pid {holder.pid} on {socket.gethostname()} since 20")
    assert f"(-c {out} 0.0)" in message and "pass --wait SECONDS" in message
    holder.release()
    assert not (out / LOCK_NAME).exists()  # released, not left behind
    with folder_lock(out):
        assert _mine(out)["pid"] == os.getpid()


def test_waiting_command_gets_the_lock_once_released(tmp_path, holder, capsys):
    threading.Timer(1.0, holder.release).start()
    with folder_lock(tmp_path / "out", wait_s=120):
        assert _mine(tmp_path / "out")["pid"] == os.getpid()
    assert holder.wait(30) == 0  # it held the lock to its normal end
    err = capsys.readouterr().err
    assert err.startswith(f"waiting up to 120 s for {tmp_path / 'out'}: locked by pid {holder.pid}")


def test_wait_ends_in_the_same_refusal(tmp_path, holder):
    with pytest.raises(HarnessError, match=rf"is locked after waiting 0\.6 s by pid {holder.pid} on "):
        with folder_lock(tmp_path / "out", wait_s=0.6):
            pass


def test_lock_of_a_holder_killed_with_sigkill_is_taken_over_at_once(tmp_path, holder, capsys):
    holder.kill()
    holder.wait(30)
    assert (tmp_path / "out" / LOCK_NAME).exists()  # a killed holder cannot clean up
    with folder_lock(tmp_path / "out"):
        assert _mine(tmp_path / "out")["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"took over the lock of pid {holder.pid} on {socket.gethostname()}" in err and "its process is gone" in err


def test_ctrl_c_releases_the_lock(tmp_path, holder):
    holder.send_signal(signal.SIGINT)
    holder.wait(30)
    assert "KeyboardInterrupt" in holder.stderr.read()
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_an_exception_releases_the_lock_and_an_empty_new_folder_goes(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError):
        with folder_lock(out):
            assert (out / LOCK_NAME).is_file()
            raise ValueError("boom")
    assert not out.exists() and (tmp_path / "new").is_dir()
    with folder_lock(out):
        (out / "results.parquet").write_bytes(b"rows")
    assert sorted(p.name for p in out.iterdir()) == ["results.parquet"]


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(HarnessError, match=rf"^cannot lock {tmp_path / 'file' / 'run'}: "):
        with folder_lock(tmp_path / "file" / "run"):
            pass


# ----------------------------------------------------------------------------- other nodes, stale locks


def test_lock_of_another_host_with_a_fresh_heartbeat_is_refused(tmp_path):
    _foreign_lock(tmp_path, age_s=LEASE_S / 2)
    with pytest.raises(HarnessError, match=r"is locked by pid 1 on node-7 since 2026-01-01T00:00:00\+00:00 "
                                           r"\(harness leaderboard --codecs jpeg\); try again later"):
        with folder_lock(tmp_path):
            pass
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "node-7"


def test_lock_of_another_host_with_a_stale_heartbeat_is_taken_over(tmp_path, capsys):
    _foreign_lock(tmp_path, age_s=LEASE_S + 30)
    with folder_lock(tmp_path):
        assert _mine(tmp_path)["pid"] == os.getpid()
    assert "took over the lock of pid 1 on node-7" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither lock nor aside copies left


def test_unreadable_lock_file_waits_for_the_lease(tmp_path):
    """An empty or damaged ``.lock`` (an older harness left an empty one behind) names no
    holder: refused while recent, taken over once older than the lease."""
    path = tmp_path / LOCK_NAME
    path.write_text("")
    with pytest.raises(HarnessError, match=rf"is locked by an unreadable {path} last written 0 s ago"):
        with folder_lock(tmp_path):
            pass
    os.utime(path, (time.time() - LEASE_S - 1,) * 2)
    with folder_lock(tmp_path):
        assert _mine(tmp_path)["pid"] == os.getpid()


def test_takeover_puts_back_the_fresh_lock_of_a_faster_waiter(tmp_path):
    """The race of two waiters on one stale lock, step by step: B judged the stale lock, A took
    it over first and holds a fresh one; B's takeover must leave A's lock in place."""
    path = _foreign_lock(tmp_path, age_s=LEASE_S + 30)
    judged = lock._look(path)
    fresh = _foreign_lock(tmp_path, token="fresh-of-a", host="node-8")
    lock._take_over(tmp_path, path, judged, "no heartbeat")
    assert json.loads(fresh.read_text())["token"] == "fresh-of-a"
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]
    with pytest.raises(HarnessError, match="is locked by pid 1 on node-8"):
        with folder_lock(tmp_path):
            pass


@pytest.mark.parametrize("round_", range(4))
def test_two_concurrent_takers_of_one_stale_lock_exactly_one_wins(tmp_path, round_):
    _foreign_lock(tmp_path / "out", age_s=LEASE_S + 30)
    # Both past their imports, then at the same instant, or the second while the first judges.
    start_at = time.time() + 2.0
    stagger = 0.15 * (round_ % 2)
    takers = [_start(tmp_path / "out", start_at=start_at + i * stagger, prelude=SLOW_JUDGEMENT) for i in range(2)]
    try:
        said = [taker.stdout.readline().strip() for taker in takers]
        winners = [taker for taker, line in zip(takers, said) if line == "held"]
        assert len(winners) == 1, said
        loser = said[1 - takers.index(winners[0])]
        assert loser.startswith("refused: ") and f"locked by pid {winners[0].pid} on" in loser
        assert _mine(tmp_path / "out")["pid"] == winners[0].pid
    finally:
        for taker in takers:
            taker.stdin.close()
            taker.wait(30)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- within one process


def test_reentrant_within_a_process_by_resolved_path(tmp_path):
    with folder_lock(tmp_path / "run"):
        token = _mine(tmp_path / "run")["token"]
        with folder_lock(tmp_path / "other" / ".." / "run"):
            assert _mine(tmp_path / "run")["token"] == token
        assert (tmp_path / "run" / LOCK_NAME).exists()  # the outer block still holds it
    assert not (tmp_path / "run").exists()


def test_heartbeat_refreshes_the_lock_and_never_touches_another_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    path = tmp_path / LOCK_NAME
    with folder_lock(tmp_path):
        old = time.time() - 1000
        os.utime(path, (old, old))
        deadline = time.monotonic() + 30
        while path.stat().st_mtime < old + 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_mtime > old + 500
        _foreign_lock(tmp_path, age_s=1000)  # the lock was taken over meanwhile
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime > 900
    assert json.loads(path.read_text())["host"] == "node-7"  # released without removing the other's lock
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "was no longer this command's lock at its end" in err


def test_wait_must_be_a_non_negative_number(tmp_path):
    from harness.configs import build
    from harness.leaderboard.config import LeaderboardConfig

    for value in (-1, float("nan")):
        with pytest.raises(HarnessError, match="^--wait must be a number of seconds >= 0, got"):
            build(LeaderboardConfig, {"wait_s": value})
    assert build(LeaderboardConfig, {"wait_s": float("inf")}).wait_s == float("inf")


# ----------------------------------------------------------------------------- the commands hold it


def _refused(holder) -> str:
    return rf"is locked by pid {holder.pid} on .*; try again later or pass --wait SECONDS"


def test_prepare_data_refuses_a_locked_out_before_any_work(tmp_path, holder, monkeypatch):
    from harness.data import shards

    monkeypatch.setattr(shards, "scan_sources", lambda config: pytest.fail("scanned under another's lock"))
    monkeypatch.setattr(shards, "connect", lambda *a, **k: pytest.fail("started Ray under another's lock"))
    with pytest.raises(HarnessError, match=_refused(holder)):
        shards.run(shards.PrepareConfig(sources=(f"folder:{tmp_path}",), out=tmp_path / "out", progress=False))


def test_train_sweep_refuses_a_locked_out_before_any_work(tmp_path, holder, monkeypatch):
    from harness.train import sweep
    from harness.train.config import SweepConfig

    monkeypatch.setattr(sweep, "check_data", lambda config: pytest.fail("read the data under another's lock"))
    monkeypatch.setattr(sweep, "connect", lambda *a, **k: pytest.fail("started Ray under another's lock"))
    with pytest.raises(HarnessError, match=_refused(holder)):
        sweep.run(SweepConfig(data=tmp_path / "shards", out=tmp_path / "out"))


def test_leaderboard_cli_refuses_a_locked_run_folder_in_one_line(tmp_path, holder, monkeypatch, capsys):
    from harness.leaderboard import run

    monkeypatch.setattr(run, "plan", lambda config: pytest.fail("planned under another's lock"))
    assert main(["leaderboard", "--codecs", "jpeg", "--reports", str(tmp_path), "--run", "out"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"harness leaderboard: error: {tmp_path / 'out'} is locked by pid {holder.pid} on ")
    assert main(["report", str(tmp_path / "out")]) == 1
    assert f"is locked by pid {holder.pid}" in capsys.readouterr().err


def test_rerun_wait_reaches_every_stage_and_plans_cannot_set_it(tmp_path):
    from harness.rerun.plan import load_plan

    (tmp_path / "photos").mkdir()
    path = tmp_path / "plan.toml"
    path.write_text('name = "n"\n[data]\nsources = ["folder:photos"]\n[[sweep]]\nvariant = "tiny"\npatch = 64\n'
                    '[leaderboard]\ncodecs = ["jpeg"]\n')
    plan = load_plan(path, wait_s=300)
    assert plan.prepare.wait_s == plan.sweeps[0].wait_s == plan.leaderboard.wait_s == 300
    path.write_text('name = "n"\n[leaderboard]\nwait_s = 5\n')
    with pytest.raises(HarnessError, match=r"\[leaderboard\]: unknown key\(s\) wait_s"):
        load_plan(path)


def test_leaderboard_save_merges_rows_another_writer_put_on_disk(tmp_path, kodak_dir):
    """Every save reads the table on disk again: rows of other curves that reached it after
    the plan are kept, not overwritten by the plan's picture of it."""
    from harness.leaderboard import results
    from harness.leaderboard.config import LeaderboardConfig
    from harness.leaderboard.plan import plan
    from harness.leaderboard.run import _save
    from harness.pixels.images import load_rgb, save_png

    images = tmp_path / "images"
    images.mkdir()
    save_png(np.ascontiguousarray(load_rgb(kodak_dir / "kodim03.png").pixels[:64, :64]), images / "a.png")
    config = LeaderboardConfig(datasets=(f"folder:{images}",), codecs=("jpeg",), run_name="r", reports_dir=tmp_path,
                               progress=False)
    plan_ = plan(config)
    row = {column: None for column in results.COLUMNS}
    row.update(dataset=f"folder:{images}", image="a.png", codec="webp", config="quick", quality=50.0, status="ok",
               metrics="core",
               created_at=pd.Timestamp.now(tz="UTC"))
    path = tmp_path / "r" / results.RESULTS_FILE
    results.write(pd.DataFrame([row]), path)  # another run's row lands after this plan read the table
    _save(plan_, [])
    assert list(results.read(path)["codec"]) == ["webp"]


# ----------------------------------------------------------------------------- two leaderboards at once


@pytest.mark.slow
def test_two_leaderboards_started_together_lose_no_row(tmp_path):
    """The issue's reproduction, small: jpeg and webp on one run folder at the same moment.
    The one that comes second either waits (webp has --wait) and adds its rows, or is
    refused in one line before it computes anything (jpeg has none)."""
    common = ["--max-images", "2", "--reports", str(tmp_path), "--run", "both", "--num-cpus", "1", "--no-report",
              "--no-progress"]
    commands = {"jpeg": ["--codecs", "jpeg"], "webp": ["--codecs", "webp", "--wait", "600"]}
    started = {codec: subprocess.Popen([sys.executable, "-m", "harness", "leaderboard", *args, *common], cwd=REPO,
                                       env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for codec, args in commands.items()}
    done = {codec: (process.wait(600), *process.communicate()) for codec, process in started.items()}
    assert done["webp"][0] == 0, done["webp"][2]
    frame = pd.read_parquet(tmp_path / "both" / "results.parquet")
    rows = frame.groupby("codec").size().to_dict()
    assert rows["webp"] == 2 * 4 and (frame["status"] == "ok").all()
    code, out, err = done["jpeg"]
    if code == 0:
        assert rows == {"jpeg": 8, "webp": 8}
    else:
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"{tmp_path / 'both'} is locked by pid {started['webp'].pid} on " in err and "--wait" in err
        assert rows == {"webp": 8} and not (tmp_path / "both" / "bitstreams" / "jpeg").exists()
    assert not (tmp_path / "both" / LOCK_NAME).exists()
