"""An exclusive, self-describing lock on a report directory.

Scheduled reruns (cron, systemd timers) can overlap when one run is slow; two
runs writing the same ``results.parquet`` would lose cells. The lock is an
``fcntl.flock`` on ``<report>/.lock`` — released by the kernel if the holder
dies, so a killed run never leaves a stale lock — and the file carries who
holds it so the loser can say so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError

LOCK_NAME = ".lock"


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"


@contextmanager
def report_lock(report_dir: Path, wait_s: float = 0.0, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the report's lock for the duration of the ``with`` block.

    ``wait_s`` > 0 waits that long for a running holder to finish; otherwise
    (or after the wait) raises :class:`HarnessError` naming the holder.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / LOCK_NAME
    handle = open(path, "a+")
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    try:
                        holder = _describe(json.loads(handle.read() or "{}"))
                    except json.JSONDecodeError:
                        holder = "another process"
                    raise HarnessError(f"{report_dir} is locked by {holder}; try again later or pass --wait") from None
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
