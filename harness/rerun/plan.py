"""Rerun plans: one TOML file naming everything a scheduled report is made of.

```toml
name = "nightly"                  # the report: <reports_dir>/<name>/
reports_dir = "reports"           # default "reports"
work_dir = "runs/nightly"         # shards and sweeps (default runs/<name>)

[data]                            # optional: harness prepare-data
sources = ["folder:photos"]       # PrepareConfig / PatchRecipe field names
patch = 64
resize = 256                      # or "none"

[[sweep]]                         # optional, repeatable: harness train-sweep
variant = "tiny"                  # SweepConfig field names; data defaults to [data]'s shards
lambdas = [0.0067, 0.05]

[leaderboard]                     # harness leaderboard (LeaderboardConfig field names)
datasets = ["kodak"]
codecs = ["jpeg"]
models = ["extra/models"]         # more checkpoint folders; every sweep's models are added
```

Every key is the field name of the stage's own config dataclass, so a plan
can set anything the command line can; an unknown key is an error naming the
allowed ones. Relative paths are relative to the plan file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

_PATH_KEYS = frozenset({"out", "data", "root", "reports_dir", "codec_dir", "models", "sources", "work_dir"})


@dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    reports_dir: Path
    work_dir: Path
    data: dict[str, Any] | None
    sweeps: tuple[dict[str, Any], ...]
    leaderboard: dict[str, Any]

    @property
    def report_dir(self) -> Path:
        return self.reports_dir / self.name

    @property
    def shards_dir(self) -> Path:
        return self.work_dir / "shards"


def _resolve(base: Path, key: str, value: Any) -> Any:
    """Plan-relative paths: plain strings, lists of them, and ``folder:`` source specs."""
    if key not in _PATH_KEYS:
        return value
    if isinstance(value, list):
        return [_resolve(base, key, item) for item in value]
    if not isinstance(value, str):
        raise HarnessError(f"plan key {key!r} must be a path string, got {value!r}")
    if key == "sources":
        if value.startswith("folder:"):
            return "folder:" + str((base / value[len("folder:"):]).resolve())
        return value
    return (base / value).resolve()


def _section(raw: Any, where: str, allowed: set[str], base: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise HarnessError(f"plan section {where} must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise HarnessError(f"plan section {where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return {key: _resolve(base, key, value) for key, value in raw.items()}


def field_names(*classes: type) -> set[str]:
    return {f.name for cls in classes for f in fields(cls)}


def load_plan(path: str | Path) -> Plan:
    from harness.data.recipe import PatchRecipe
    from harness.data.shards import PrepareConfig
    from harness.eval.runner import LeaderboardConfig
    from harness.train.sweep import SweepConfig

    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"plan {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise HarnessError(f"cannot parse plan {path}: {error}") from None
    base = path.parent
    top = {"name", "reports_dir", "work_dir", "data", "sweep", "leaderboard"}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise HarnessError(f"plan {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(top))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise HarnessError(f"plan {path} needs a name (a folder name for the report), got {name!r}")
    if "leaderboard" not in raw:
        raise HarnessError(f"plan {path} has no [leaderboard] section: nothing to report")
    prepare_keys = field_names(PrepareConfig, PatchRecipe) - {"out", "recipe", "progress", "address"}
    sweep_keys = field_names(SweepConfig) - {"address", "resume"}
    board_keys = (field_names(LeaderboardConfig) - {"run_name", "reports_dir", "address", "report_only", "progress"})
    sweeps = raw.get("sweep", [])
    if not isinstance(sweeps, list):
        raise HarnessError(f"plan {path}: use [[sweep]] (an array of tables) for sweeps")
    return Plan(
        path=path,
        name=name,
        reports_dir=_resolve(base, "reports_dir", raw.get("reports_dir", "reports")),
        work_dir=_resolve(base, "work_dir", raw.get("work_dir", f"runs/{name}")),
        data=_section(raw["data"], "[data]", prepare_keys, base) if "data" in raw else None,
        sweeps=tuple(_section(s, f"[[sweep]] #{i + 1}", sweep_keys, base) for i, s in enumerate(sweeps)),
        leaderboard=_section(raw["leaderboard"], "[leaderboard]", board_keys, base),
    )
