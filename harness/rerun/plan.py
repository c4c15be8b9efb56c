"""Rerun plans: one TOML file naming everything a scheduled report is made of.

```toml
name = "nightly"                  # the report: <reports_dir>/<name>/
reports_dir = "reports"           # default "reports"
work_dir = "runs/nightly"         # shards and sweeps (default runs/<name>)

[data]                            # optional: harness prepare-data
sources = ["folder:photos"]       # PrepareConfig / PatchRecipe field names
patch = 64
resize = 256                      # or "none"

[sweep_defaults]                  # optional: keys every [[sweep]] starts from (one recipe for all)
lambdas = [0.0067, 0.05]

[[sweep]]                         # optional, repeatable: harness train-sweep
variant = "tiny"                  # SweepConfig and TrainingRecipe field names; data defaults to [data]'s shards

[leaderboard]                     # harness leaderboard (LeaderboardConfig field names), then its
datasets = ["kodak"]              # report (ReportConfig's anchor and rd_plots)
codecs = ["jpeg"]
models = ["extra/models"]         # more checkpoint folders; every sweep's models are added
```

Every key is the field name of the stage's own config dataclass, so a plan
can set anything the command line can, except what the rerun itself decides
(where each stage writes, progress bars, the cluster, and ``wait_s``: the rerun's
``--wait`` holds for the lock of every folder it writes); an unknown key is an
error naming the allowed ones. Relative paths are relative to the plan file. Every
problem of a plan (not a readable file, not TOML, a control character in a string,
a value of the wrong type) is one line that starts with the plan's path.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.configs import build, field_names
from harness.data.recipe import PatchRecipe
from harness.data.shards import PrepareConfig, prepare_config
from harness.errors import HarnessError
from harness.leaderboard.config import LeaderboardConfig
from harness.report.config import ReportConfig
from harness.slug import slug
from harness.train.config import SweepConfig, models_dir, sweep_config
from harness.train.recipe import TrainingRecipe

_PATH_KEYS = frozenset({"out", "data", "root", "reports_dir", "codec_dir", "models", "sources", "work_dir"})
_LIST_KEYS = frozenset({"models", "sources"})  # path keys that take a list of paths


@dataclass(frozen=True)
class Plan:
    """A loaded plan: each stage's config built (and so checked) before anything runs."""

    path: Path
    name: str
    reports_dir: Path
    work_dir: Path
    prepare: PrepareConfig | None
    sweeps: tuple[SweepConfig, ...]
    leaderboard: LeaderboardConfig
    report: ReportConfig

    @property
    def report_dir(self) -> Path:
        return self.reports_dir / self.name

    @property
    def shards_dir(self) -> Path:
        return self.work_dir / "shards"


def _control_characters(value: Any, where: str) -> None:
    """Refuse a control character (NUL, newline, escape, ...) in any string of the plan: none
    belongs in a name, path, dataset or codec, and a NUL cannot even reach the OS in a path."""
    if isinstance(value, dict):
        for key, item in value.items():
            _control_characters(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _control_characters(item, f"{where}[{index}]")
    elif isinstance(value, str):
        bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
        if bad is not None:
            raise HarnessError(f"{where} holds the control character {bad!r}, which no name or path may hold")


def _resolve(base: Path, key: str, value: Any) -> Any:
    """Plan-relative paths: plain strings, lists of them, and ``folder:`` source specs."""
    if key not in _PATH_KEYS:
        return value
    if isinstance(value, list) and key in _LIST_KEYS:
        return [_resolve(base, key, item) for item in value]
    if not isinstance(value, str):
        raise HarnessError(f"plan key {key!r} must be a path string, got {value!r}")
    if key == "sources":
        if value.startswith("folder:"):
            return "folder:" + str((base / value[len("folder:"):]).resolve())
        return value
    return (base / value).resolve()


def _check_folders(path: Path, written: list[str], resolved: list[str]) -> None:
    """A ``folder:`` source that is not there stops the plan before any stage starts, saying
    which folder and how to point the plan elsewhere."""
    def listed(value):
        return [value] if isinstance(value, str) else list(value)

    for spec, full in zip(listed(written), listed(resolved)):
        folder = Path(full[len("folder:"):]) if full.startswith("folder:") else None
        if folder is not None and not folder.is_dir():
            raise HarnessError(
                f"plan {path}: [data] source {spec!r} is missing ({folder} is not a folder); put the images there, "
                "or set sources in the plan's [data] section to folder:PATH of your own images (relative to the plan)")


def _section(raw: Any, where: str, allowed: set[str], base: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise HarnessError(f"plan section {where} must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise HarnessError(f"plan section {where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return {key: _resolve(base, key, value) for key, value in raw.items()}


def _sweep(values: dict[str, Any], where: str, shards_dir: Path, work_dir: Path, wait_s: float) -> SweepConfig:
    # A rerun continues a sweep an earlier rerun left unfinished.
    config = sweep_config({"data": shards_dir, "resume": "auto", **values, "wait_s": wait_s}, where)
    if "out" in values:
        return config
    return replace(config, out=work_dir / slug(f"sweep-{config.variant}-{config.metric}"))


def load_plan(path: str | Path, progress: bool = False, wait_s: float = 0.0) -> Plan:
    """The plan at ``path``, every stage's config built; ``progress``: the stages' progress bars,
    ``wait_s``: how long each stage waits for another command's lock on its folder."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"plan {path} does not exist") from None
    except OSError as error:  # a folder, no permission, ...
        raise HarnessError(f"cannot read plan {path}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise HarnessError(f"cannot parse plan {path}: {error}") from None
    try:
        _control_characters(raw, "")
        return _plan(path, raw, progress, wait_s)
    except HarnessError as error:
        message = str(error)
        raise HarnessError(message if message.startswith(f"plan {path}") else f"plan {path}: {message}") from None


def _plan(path: Path, raw: dict[str, Any], progress: bool, wait_s: float) -> Plan:
    """The stages' configs of the parsed plan ``raw`` (of the file ``path``)."""
    base = path.parent
    top = {"name", "reports_dir", "work_dir", "data", "sweep_defaults", "sweep", "leaderboard"}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise HarnessError(f"plan {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(top))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise HarnessError(f"plan {path} needs a name (a folder name for the report), got {name!r}")
    if "leaderboard" not in raw:
        raise HarnessError(f"plan {path} has no [leaderboard] section: nothing to report")
    prepare_keys = field_names(PrepareConfig, PatchRecipe) - {"out", "recipe", "progress", "address", "wait_s"}
    sweep_keys = field_names(SweepConfig, TrainingRecipe) - {"recipe", "address", "resume", "wait_s"}
    report_keys = field_names(ReportConfig) - {"run_dir", "wait_s"}
    board_keys = field_names(LeaderboardConfig) - {"run_name", "reports_dir", "address", "progress", "wait_s"}
    sweeps = raw.get("sweep", [])
    if not isinstance(sweeps, list):
        raise HarnessError(f"plan {path}: use [[sweep]] (an array of tables) for sweeps")
    reports_dir = _resolve(base, "reports_dir", raw.get("reports_dir", "reports"))
    work_dir = _resolve(base, "work_dir", raw.get("work_dir", f"runs/{name}"))
    shards_dir = work_dir / "shards"

    prepare = None
    if "data" in raw:
        values = _section(raw["data"], "[data]", prepare_keys, base)
        _check_folders(path, raw["data"].get("sources", []), values.get("sources", []))
        prepare = prepare_config({**values, "out": shards_dir, "progress": progress, "wait_s": wait_s},
                                 "plan section [data]")
    shared = _section(raw.get("sweep_defaults", {}), "[sweep_defaults]", sweep_keys, base)
    sweep_configs = tuple(
        _sweep({**shared, **_section(s, f"[[sweep]] #{i + 1}", sweep_keys, base)}, f"plan section [[sweep]] #{i + 1}",
               shards_dir, work_dir, wait_s)
        for i, s in enumerate(sweeps)
    )
    board = _section(raw["leaderboard"], "[leaderboard]", board_keys | report_keys, base)
    report = {key: board.pop(key) for key in report_keys if key in board}
    if not isinstance(board.get("models", []), list):
        raise HarnessError("plan section [leaderboard]: models must be a list of folders")
    board["models"] = [*board.get("models", ()), *(models_dir(s.out) for s in sweep_configs)]
    leaderboard = build(LeaderboardConfig, {**board, "run_name": name, "reports_dir": reports_dir, "progress": progress,
                                            "wait_s": wait_s}, "plan section [leaderboard]")
    report_config = build(ReportConfig, {**report, "run_dir": leaderboard.run_dir, "wait_s": wait_s},
                          "plan section [leaderboard]")
    return Plan(path=path, name=name, reports_dir=reports_dir, work_dir=work_dir, prepare=prepare,
                sweeps=sweep_configs, leaderboard=leaderboard, report=report_config)
