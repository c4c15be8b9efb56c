"""What ``harness rerun`` is asked to do: its config, each default and check in one place,
importable without torch or Ray (the command's help and argument errors stay fast);
:mod:`harness.rerun.pipeline` runs it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness.lock import check_wait


@dataclass(frozen=True)
class RerunConfig:
    plan: Path
    address: str | None = None  # Ray Jobs API address (http://HEAD:8265); None runs here
    wait_s: float = 0.0  # wait this long for another command's lock on the report, shard or sweep folders
    python: str = sys.executable  # interpreter that runs the job on the head node
    bd_rate_threshold: float = 1.0  # percentage points of BD-rate that count as a regression
    time_threshold: float = 0.2  # relative slow-down that counts as a regression
    progress: bool = True  # progress bars of prepare-data and the leaderboard (off in a submitted job's logs)

    def __post_init__(self) -> None:
        check_wait(self.wait_s)
