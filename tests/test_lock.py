"""The output-folder lock (harness.lock): real processes contend for it, dead holders' locks
are taken over."""

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

import pytest

from harness import lock
from harness.errors import HarnessError
from harness.lock import LEASE_S, LOCK_NAME, folder_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# A process that takes FOLDER's lock (waiting WAIT seconds), says so and holds it until its
# stdin closes; with START (a time.time()), it first sleeps until then.
HOLD = """
import sys, time
from pathlib import Path
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
