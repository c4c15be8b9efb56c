"""``<run>/run.json``: the record a leaderboard run hands on (to its user, and to ``rerun``).

:class:`RunSummary` says what the run covered (cells computed, reused, failed),
which codec versions it saw, which codecs were unavailable and why, and per
curve the mean encode/decode seconds and the BD-rate (PSNR) against the
report's anchor. The engine (:func:`harness.leaderboard.run.run`) writes what it ran;
the report (:mod:`harness.report.publish`) adds the BD-rates and the learned models'
facts. :func:`write_summary` and :func:`read_summary` are its only writer and reader.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from harness.atomic import write_atomic
from harness.errors import HarnessError

RUN_FILE = "run.json"


def curve_key(dataset: str, codec: str, config: str) -> str:
    """A curve's key in :attr:`RunSummary.curves` (and in the rerun's history)."""
    return f"{dataset}/{codec}:{config}"


@dataclass(frozen=True)
class CodecSummary:
    codec: str  # label, codec:config
    version: str
    ok: int
    error: int
    bpp_mean: float | None  # over the ok rows not set aside (harness.leaderboard.results.set_aside)
    psnr_mean: float | None
    set_aside: int = 0  # ok rows no mean takes (an infinite PSNR, ...): kept in results.parquet, flagged


@dataclass(frozen=True)
class RunSummary:
    run_dir: str
    profile: str
    datasets: tuple[str, ...]
    cells: int
    computed: int
    reused: int
    errors: int
    codecs: tuple[CodecSummary, ...]
    unavailable: tuple[dict[str, str], ...]  # codec, reason
    first_errors: tuple[str, ...]
    finished_at: str
    # "dataset/codec:config" -> enc_s, dec_s (means over ok cells) and bd_rate (PSNR, %, when reported)
    curves: dict[str, dict[str, float]]
    remeasured: int = 0  # of the reused rows, those completed with more --metrics from their stored bitstreams
    metrics: tuple[str, ...] = ()  # the --metrics this run measured with
    # one per learned model (harness.report.models.model_points): curve, variant, λ, params, steps, train_s, data...
    models: tuple[dict[str, Any], ...] = ()
    set_aside: str = ""  # what the run's means, curves and BD-rates left out, and why ("" when nothing)
    conversions: tuple[str, ...] = ()  # "image: notice" of every image reading changed (harness.pixels.images.load_rgb)

    @property
    def codec_versions(self) -> dict[str, str]:
        return {c.codec: c.version for c in self.codecs}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSummary":
        """The summary in ``data``: every field present (a KeyError names the first one missing)."""
        values = {f.name: data[f.name] for f in fields(cls)}
        values["codecs"] = tuple(CodecSummary(**{f.name: c[f.name] for f in fields(CodecSummary)})
                                 for c in values["codecs"])
        for key in ("datasets", "unavailable", "first_errors", "metrics", "models", "conversions"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def write_summary(summary: RunSummary, run_dir: Path) -> None:
    text = json.dumps(summary.to_json(), indent=2) + "\n"
    write_atomic(Path(run_dir) / RUN_FILE, lambda tmp: tmp.write_text(text))


def read_summary(run_dir: Path) -> RunSummary:
    path = Path(run_dir) / RUN_FILE
    try:
        return RunSummary.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        raise HarnessError(f"{path} is not a leaderboard run summary ({reason}): run `harness leaderboard`") from None
