"""``DIR/manifest.json``: the record ``prepare-data`` hands to training.

:class:`ShardManifest` is what a shard folder holds (the plan's identity, the
recipe, one :class:`ShardRecord` per shard, per-source counts, rejected files).
:func:`write_manifest` and :func:`read_manifest` are its only writer and
reader: ``prepare-data`` rewrites it after every shard, ``train-sweep`` and the
training stream read it to find the shards and to name the data a model was
trained on (:meth:`ShardManifest.identity`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.atomic import atomic_path
from harness.errors import HarnessError
from harness.hashing import sha256_bytes

MANIFEST = "manifest.json"
FORMAT = "harness-prepare-data/1"


@dataclass(frozen=True)
class ShardRecord:
    """One shard of the plan; ``sha256`` is None until the shard has been written."""

    name: str
    split: str
    images: int
    planned_patches: int
    sha256: str | None = None
    samples: int = 0
    bytes: int = 0
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)  # images and patches written
    rejected: tuple[dict[str, str], ...] = ()  # files that failed to decode: source, file, reason


@dataclass(frozen=True)
class ShardManifest:
    plan_sha256: str  # sha256 of everything that determines the shards' bytes
    recipe: dict[str, Any]  # PatchRecipe.describe()
    sources: tuple[str, ...]
    target_patches: int | None
    val_fraction: float
    shard_patches: int
    status: str  # "complete" or "incomplete"
    shards: tuple[ShardRecord, ...]
    per_source: dict[str, dict[str, int]]
    rejected: tuple[dict[str, str], ...]
    totals: dict[str, int]
    resume: dict[str, int]  # shards kept from an earlier run, and written by this one
    wall_time_s: float
    format: str = FORMAT

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def patch(self) -> int:
        return int(self.recipe["patch"])

    @property
    def seed(self) -> int:
        return int(self.recipe["seed"])

    def written(self, split: str) -> list[ShardRecord]:
        """The shards of ``split`` that hold samples."""
        return [record for record in self.shards if record.split == split and record.samples > 0]

    def identity(self) -> str:
        """SHA-256 over the shards' names and hashes: the same data gives the same value, however
        often prepare-data resumed (the manifest also records wall times and resume counts)."""
        return sha256_bytes(json.dumps(sorted((s.name, s.sha256) for s in self.shards)).encode())

    def to_json(self) -> dict[str, Any]:
        # "seed" is written beside the recipe for people reading the file.
        return {**asdict(self), "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ShardManifest":
        names = {f.name for f in fields(ShardRecord)}
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["shards"] = tuple(
            ShardRecord(**{**{k: v for k, v in record.items() if k in names},
                           "rejected": tuple(record.get("rejected", ()))})
            for record in data["shards"]
        )
        values["sources"] = tuple(values["sources"])
        values["rejected"] = tuple(values["rejected"])
        return cls(**values)


def write_manifest(manifest: ShardManifest, out: Path) -> None:
    """Replace ``out/manifest.json`` atomically."""
    with atomic_path(Path(out) / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n")


def read_manifest(out: Path) -> ShardManifest | None:
    """The manifest of the shard folder ``out``; None when there is none."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    try:
        return ShardManifest.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        reason = error.strerror if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        raise HarnessError(f"{path} is unreadable ({reason}); remove it to start over") from None


def require_manifest(data_dir: Path) -> ShardManifest:
    """The complete manifest of a shard folder, or a one-line error saying what to run."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise HarnessError(f"no prepared data at {data_dir}: run `harness prepare-data --out {data_dir}` first")
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise HarnessError(f"{data_dir} has no {MANIFEST}: not a `harness prepare-data` output")
    if not manifest.complete:
        raise HarnessError(f"{data_dir} is incomplete: rerun the same `harness prepare-data` command to finish it")
    return manifest
