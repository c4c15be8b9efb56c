"""The leaderboard's plan: every (image, codec config, quality) cell of the run, and which of
them the run folder's ``results.parquet`` already holds.

Datasets resolve through :func:`harness.data.registry.dataset_images`, codec configurations
through ``codecs/*.toml`` and ``--models`` folders; each codec is probed once, and an
unavailable one is listed with its reason. An ``ok`` row whose (image sha256, codec, codec
version, config hash, quality) matches a cell is reused; one that lacks an asked metric is
re-measured from its stored bitstream, or encoded again when the bitstream is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.codecs.base import CodecUnavailable
from harness.codecs import learned
from harness.codecs.config import CodecConfig, resolve_codecs
from harness.data.registry import dataset_images
from harness.hashing import sha256_file
from harness.leaderboard import results
from harness.leaderboard.cells import Cell, row_metrics
from harness.leaderboard.kept import bitstream_path
from harness.leaderboard.config import LeaderboardConfig
from harness.model.precision import resolve as resolve_precision


@dataclass
class Plan:
    run_dir: Path
    cells: list[Cell]
    images: dict[str, Path]  # sha256 → file (one copy per content)
    versions: dict[str, str]  # codec label → version on the driver
    unavailable: dict[str, str]  # codec label → reason
    curves: frozenset[tuple[str, str, str]]  # (dataset, codec, config) of the cells: rows of other curves are kept
    unreadable: dict[Cell, str] = field(default_factory=dict)  # cells of files that cannot be opened → reason
    reused: list[dict[str, Any]] = field(default_factory=list)
    todo: list[Cell] = field(default_factory=list)
    remeasure: list[tuple[Cell, dict[str, Any]]] = field(default_factory=list)  # ok rows lacking asked metrics
    metrics: tuple[str, ...] = ()


def _images_of(spec: str, config: LeaderboardConfig) -> list[tuple[str, Path]]:
    paths = dataset_images(spec, config.root)
    if config.max_images is not None:
        paths = paths[: config.max_images]
    base = Path(os.path.commonpath([p.parent for p in paths]))
    return [(p.relative_to(base).as_posix(), p) for p in paths]


def _probe(codec: CodecConfig) -> str:
    return learned.instance(codec).probe()


def _cell_version(codec: CodecConfig, version: str, quality: float) -> str:
    return learned.instance(codec).version_at(version, quality)


def plan(config: LeaderboardConfig) -> Plan:
    run_dir = config.run_dir
    codecs = resolve_codecs(config.codecs, config.profile, config.codec_dir, config.timeout_s)
    # Resolved here, where the run is planned: the precision is part of each curve's config hash.
    precision = resolve_precision(config.precision, "cuda" if config.gpus_per_model > 0 else "cpu")
    codecs += [c for folder in config.models for c in learned.sweep_configs(folder, precision, config.max_memory)]
    versions, unavailable = {}, {}
    for codec in codecs:
        try:
            versions[codec.label] = _probe(codec)
        except CodecUnavailable as error:
            unavailable[codec.label] = str(error)
    available = [c for c in codecs if c.label in versions]

    cells, images, unreadable = [], {}, {}
    for spec in config.datasets:
        for name, path in _images_of(spec, config):
            try:
                digest = sha256_file(path)
            except OSError as error:
                mine = [Cell(spec, name, "", c, q) for c in available for q in c.ladder]
                unreadable.update({cell: f"cannot read image {path}: {error.strerror}" for cell in mine})
                cells += mine
                continue
            images.setdefault(digest, path)
            cells += [Cell(spec, name, digest, c, q) for c in available for q in c.ladder]

    existing = results.read(run_dir / results.RESULTS_FILE)
    curves = frozenset((c.dataset, c.codec.codec, c.codec.config) for c in cells)
    planned = Plan(run_dir, cells, images, versions, unavailable, curves, unreadable, metrics=config.metrics)

    reusable: dict[tuple, dict[str, Any]] = {}
    if not config.force:
        for row in existing[existing["status"] == "ok"].to_dict("records"):
            reusable[tuple(row[k] for k in results.REUSE_KEY)] = row
    for cell in cells:
        if cell in unreadable:
            continue
        version = _cell_version(cell.codec, versions[cell.codec.label], cell.quality)
        key = (cell.image_sha256, cell.codec.codec, version, cell.codec.config_hash, cell.quality)
        row = reusable.get(key)
        if row is None:
            planned.todo.append(cell)
            continue
        row = {**row, "dataset": cell.dataset, "image": cell.image, "config": cell.codec.config}
        if set(config.metrics) <= row_metrics(row):
            planned.reused.append(row)
            continue
        stored = bitstream_path(run_dir, row)
        if stored.is_file() and stored.stat().st_size == row["bytes"]:
            planned.remeasure.append((cell, row))
        else:
            planned.todo.append(cell)
    return planned
