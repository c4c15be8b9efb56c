"""The report's configuration and its defaults: which run folder, the BD-rate anchor, which
curves get RD plots. Kept apart from the report's machinery (pandas, matplotlib) so the CLI
can show these defaults without loading it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.leaderboard.metrics import resolve_curves
from harness.lock import check_wait

# The BD-rate anchor unless --anchor names one: the paper's (VTM) when the run has ok rows of it,
# else VVenC's vvc (harness.report.summaries.default_anchor).
ANCHOR_PREFERENCE = ("vtm", "vvc")
ANCHOR_DEFAULT_TEXT = " when it ran, else ".join(ANCHOR_PREFERENCE)
RD_PLOTS = ("psnr", "msssim")  # the curves drawn unless --rd-plots asks for others


@dataclass(frozen=True)
class ReportConfig:
    run_dir: Path  # a leaderboard run folder (its results.parquet)
    anchor: str | None = None  # BD-rate anchor, codec or codec:config; None: ANCHOR_PREFERENCE
    rd_plots: tuple[str, ...] = RD_PLOTS  # report metrics to draw RD curves for, or "all"
    wait_s: float = 0.0  # wait this long for another command's lock on the run folder

    def __post_init__(self) -> None:
        check_wait(self.wait_s)
        object.__setattr__(self, "rd_plots", resolve_curves(tuple(self.rd_plots), "--rd-plots"))
