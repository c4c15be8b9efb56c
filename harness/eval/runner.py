"""The leaderboard's evaluation engine: every (image, codec config, quality)
cell encoded to a real bitstream, decoded, measured, as Ray tasks.

Flow of :func:`run`: resolve the datasets (:func:`harness.data.registry.dataset_images`)
and the codec configurations (``codecs/*.toml``); probe each codec once, listing
unavailable ones with their reason; reuse every ``ok`` row of the existing
``results.parquet`` whose (image sha256, codec, codec version, config hash,
quality) matches; run the remaining cells as Ray tasks (one CPU each, retried
when a worker or node dies); checkpoint the table atomically every
``checkpoint_s`` seconds and at the end; print a summary; build the report.
All of it holds the run folder's lock (:mod:`harness.lock`): a second leaderboard
on the same folder waits (``--wait``) or is refused before it plans anything, and
every save merges this run's rows into the table on disk, never over it.

Every cell's bitstream is kept in ``<run>/bitstreams/`` (its size is the rate, so
the disk cost is the sum of the ``bytes`` column). A rerun that asks for metrics
(``--metrics``) a reused row was not measured with decodes that bitstream again and
measures the missing ones, without encoding; a row whose bitstream is not there
(a run older than the store) is encoded again.

A failing cell (unreadable image, codec crash, timeout, lost worker) becomes a
row with status ``error`` and the one-line reason; it never stops other cells.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from harness import __version__
from harness.atomic import check_folder, same_file, write_atomic
from harness.codecs import codec_class
from harness.codecs.base import CodecUnavailable
from harness.codecs.config import DEFAULT_DIR, CodecConfig, resolve_codecs
from harness.data.registry import FOLDER_PREFIX
from harness.errors import HarnessError
from harness.eval import results as table
from harness.eval.metrics import DEFAULT_METRICS, METRICS, measure, resolve_curves, resolve_metrics
from harness.eval.summary import RUN_FILE, CodecSummary, RunSummary, read_summary, write_summary
from harness.hashing import sha256_bytes, sha256_file
from harness.lock import check_wait, folder_lock
from harness.model.precision import resolve as resolve_precision
from harness.provenance import cpu_name, git_commit
from harness.raycluster import as_completed, connect, one_line
from harness.slug import slug


@dataclass(frozen=True)
class LeaderboardConfig:
    datasets: tuple[str, ...] = ("kodak",)
    profile: str = "quick"
    codecs: tuple[str, ...] = ()  # "id" or "id:config"; empty = every codec's profile config
    run_name: str | None = None  # folder under reports_dir; default "<datasets>-<profile>"
    reports_dir: Path = Path("reports")
    root: Path | None = None  # data root for registry datasets other than vendored Kodak
    codec_dir: Path = DEFAULT_DIR
    models: tuple[Path, ...] = ()  # train-sweep model folders: one learned curve each
    gpus_per_model: float = 0.0  # GPUs per learned-codec cell (0 on CPU-only clusters)
    precision: str = "auto"  # learned codecs' transforms: fp32, bf16, or auto (bf16 where it runs fast)
    max_images: int | None = None  # first N images of each dataset
    force: bool = False
    address: str | None = None  # Ray cluster to join; None starts a local instance
    num_cpus: int | None = None  # local instance only
    timeout_s: float | None = None  # per encode/decode call, overrides the codec files
    checkpoint_s: float = 30.0
    anchor: str | None = None  # BD-rate anchor; None: vtm when it has results, else vvc
    report: bool = True
    report_only: Path | None = None
    progress: bool = True
    metrics: tuple[str, ...] = DEFAULT_METRICS  # names of harness.eval.metrics.METRICS, or "all"
    rd_plots: tuple[str, ...] = ("psnr", "msssim")  # report metrics to draw RD curves for, or "all"
    wait_s: float = 0.0  # wait this long for another command's lock on the run folder

    def __post_init__(self) -> None:
        check_wait(self.wait_s)
        if not self.datasets:
            raise HarnessError("give at least one --dataset")
        # "all" and the always-computed core pair resolve here, so the plan records what runs.
        object.__setattr__(self, "metrics", resolve_metrics(tuple(self.metrics)))
        object.__setattr__(self, "rd_plots", resolve_curves(tuple(self.rd_plots), "--rd-plots"))
        if self.max_images is not None and self.max_images < 1:
            raise HarnessError(f"--max-images must be at least 1, got {self.max_images}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise HarnessError(f"--num-cpus must be at least 1, got {self.num_cpus}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise HarnessError(f"--timeout must be a positive number of seconds, got {self.timeout_s:g}")
        resolve_precision(self.precision)  # a bad name fails before Ray starts
        if self.gpus_per_model < 0 or self.checkpoint_s < 0:
            raise HarnessError("--gpus-per-model and checkpoint_s (seconds between table saves) must be >= 0")
        if self.report_only is None:
            self._check_apart_from_inputs()

    @property
    def run_dir(self) -> Path:
        return self.reports_dir / (self.run_name or default_run_name(self))

    def _check_apart_from_inputs(self) -> None:
        """A run folder among its inputs would feed them its outputs: in a ``folder:`` dataset
        (read recursively) the report's PNG plots would join the test set and its README.md
        replace the folder's; as a --models folder, its run.json would be read as a model card."""
        run_dir = self.run_dir.resolve()
        for folder in (Path(s.removeprefix(FOLDER_PREFIX)).expanduser().resolve() for s in self.datasets
                       if s.startswith(FOLDER_PREFIX)):
            if run_dir.is_relative_to(folder):
                raise HarnessError(f"run folder {run_dir} lies in the dataset folder {folder}: the report's plots "
                                   "would join its images; choose another --reports or --run")
        for models in self.models:
            if same_file(run_dir, models):
                raise HarnessError(f"run folder {run_dir} is the --models folder {models}: its run.json would be "
                                   "read as a model card; choose another --reports or --run")


@dataclass(frozen=True)
class Cell:
    dataset: str
    image: str
    image_sha256: str
    codec: CodecConfig
    quality: float


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


@dataclass(frozen=True)
class Job:
    """One task for a worker: a cell to encode, or (``row`` set) the stored bitstream of that
    reused row to decode and measure again."""

    cell: Cell
    row: dict[str, Any] | None = None


BITSTREAMS_DIR = "bitstreams"


def bitstream_path(run_dir: Path, row: dict[str, Any]) -> Path:
    """Where the bitstream of a result row is kept: one file per reuse key."""
    version = sha256_bytes(str(row["codec_version"]).encode())[:12]
    name = f"{row['image_sha256']}-{version}-q{float(row['quality']):g}.bin"
    return Path(run_dir) / BITSTREAMS_DIR / slug(row["codec"]) / str(row["config_hash"]) / name


def _row_metrics(row: dict[str, Any]) -> set[str]:
    """The metrics a stored row was measured with (rows from before --metrics: the core pair)."""
    recorded = row.get("metrics")
    return set(recorded.split(",")) if isinstance(recorded, str) and recorded else {"core"}


# ----------------------------------------------------------------------------- planning


def default_run_name(config: LeaderboardConfig) -> str:
    return slug("+".join(config.datasets)) + f"-{config.profile}"


def _images_of(spec: str, config: LeaderboardConfig) -> list[tuple[str, Path]]:
    from harness.data.registry import dataset_images

    paths = dataset_images(spec, config.root)
    if config.max_images is not None:
        paths = paths[: config.max_images]
    base = Path(os.path.commonpath([p.parent for p in paths]))
    return [(p.relative_to(base).as_posix(), p) for p in paths]


def _probe(codec: CodecConfig) -> str:
    return codec_class(codec.codec)(codec.settings).probe()


def _cell_version(codec: CodecConfig, version: str, quality: float) -> str:
    return codec_class(codec.codec)(codec.settings).version_at(version, quality)


def plan(config: LeaderboardConfig) -> Plan:
    run_dir = config.run_dir
    from harness.codecs.learned import sweep_configs

    codecs = resolve_codecs(config.codecs, config.profile, config.codec_dir, config.timeout_s)
    # Resolved here, where the run is planned: the precision is part of each curve's config hash.
    precision = resolve_precision(config.precision, "cuda" if config.gpus_per_model > 0 else "cpu")
    codecs += [c for folder in config.models for c in sweep_configs(folder, precision)]
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

    existing = table.read(run_dir / table.RESULTS_FILE)
    curves = frozenset((c.dataset, c.codec.codec, c.codec.config) for c in cells)
    result = Plan(run_dir, cells, images, versions, unavailable, curves, unreadable, metrics=config.metrics)

    reusable: dict[tuple, dict[str, Any]] = {}
    if not config.force:
        for row in existing[existing["status"] == "ok"].to_dict("records"):
            reusable[tuple(row[k] for k in table.REUSE_KEY)] = row
    for cell in cells:
        if cell in unreadable:
            continue
        version = _cell_version(cell.codec, versions[cell.codec.label], cell.quality)
        key = (cell.image_sha256, cell.codec.codec, version, cell.codec.config_hash, cell.quality)
        row = reusable.get(key)
        if row is None:
            result.todo.append(cell)
            continue
        row = {**row, "dataset": cell.dataset, "image": cell.image, "config": cell.codec.config}
        if set(config.metrics) <= _row_metrics(row):
            result.reused.append(row)
            continue
        stored = bitstream_path(run_dir, row)
        if stored.is_file() and stored.stat().st_size == row["bytes"]:
            result.remeasure.append((cell, row))
        else:
            result.todo.append(cell)
    return result


# ----------------------------------------------------------------------------- one cell (on a Ray worker)

_PROBED: dict[tuple[str, str], str] = {}


def evaluate_cell(image_bytes: bytes, name: str, codec: CodecConfig, quality: float,
                  metrics: tuple[str, ...] = ("core",), bitstream: bytes | None = None) -> dict[str, Any]:
    """Encode, decode and measure one cell of the image ``image_bytes``, the dataset's file
    ``name`` (its suffix tells the format; errors and notices name it) (``metrics``: names of
    :data:`harness.eval.metrics.METRICS`); with ``bitstream``, decode and measure that
    stored stream instead of encoding. Failures become an ``error`` row. The row carries
    the bitstream under ``_bitstream`` for the driver to store."""
    from harness.images import load_rgb

    row: dict[str, Any] = {"device": cpu_name(), "status": "error", "error": None}
    try:
        instance = codec_class(codec.codec)(codec.settings)
        key = (codec.codec, codec.settings_json)
        if key not in _PROBED:
            _PROBED[key] = instance.probe()
        row["codec_version"] = instance.version_at(_PROBED[key], quality)
        row["params"] = instance.params
        row["device"] = instance.device or row["device"]
        row["precision"] = instance.precision
        instance.prepare(quality)
        with tempfile.TemporaryDirectory(prefix="harness-cell-") as scratch:
            workdir = Path(scratch)
            source = workdir / f"image{Path(name).suffix}"
            source.write_bytes(image_bytes)
            try:
                image = load_rgb(source)
            except HarnessError as error:  # the worker's copy is no file the user knows
                raise HarnessError(str(error).replace(str(source), name)) from None
            original = image.pixels
            height, width = original.shape[:2]
            row.update(width=width, height=height, conversion=image.notice)
            if bitstream is None:
                start = time.perf_counter()
                bitstream = instance.encode(original, quality, workdir)
                row["enc_s"] = time.perf_counter() - start
            start = time.perf_counter()
            decoded = instance.decode(bitstream, height, width, workdir)
            row["dec_s"] = time.perf_counter() - start
        row.update(measure(original, decoded, metrics))
        row.update(bytes=len(bitstream), bpp=len(bitstream) * 8.0 / (height * width),
                   metrics=",".join(metrics), _bitstream=bitstream, status="ok")
    except HarnessError as error:
        row["error"] = str(error)
    except Exception as error:  # a codec bug must not take the other cells down
        row["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    row["created_at"] = pd.Timestamp.now(tz="UTC")
    return row


# ----------------------------------------------------------------------------- driver


def _full_row(cell: Cell, partial: dict[str, Any], commit: str | None) -> dict[str, Any]:
    row = {column: None for column in table.COLUMNS}
    row.update(partial)
    row.update(dataset=cell.dataset, image=cell.image, image_sha256=cell.image_sha256 or None, codec=cell.codec.codec,
               config=cell.codec.config, config_hash=cell.codec.config_hash, quality=cell.quality,
               harness_version=__version__, git_commit=commit)
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return table.empty()
    frame = pd.DataFrame(rows, columns=list(table.COLUMNS))
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def _merged(plan_: Plan, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The run's whole table: the rows on disk of curves outside this plan, reused rows and the
    new (or re-measured) ones. The disk is read again at every save, so a row that reached the
    table after the plan is merged, not overwritten."""
    existing = table.read(plan_.run_dir / table.RESULTS_FILE)
    curve_of = zip(existing["dataset"], existing["codec"], existing["config"])
    kept = existing[[curve not in plan_.curves for curve in curve_of]]
    parts = [f for f in (kept, _frame(plan_.reused + rows)) if not f.empty]
    merged = pd.concat(parts, ignore_index=True) if parts else table.empty()
    return merged.drop_duplicates(subset=list(table.CELL), keep="last")


def _save(plan_: Plan, rows: list[dict[str, Any]]) -> None:
    table.write(_merged(plan_, rows), plan_.run_dir / table.RESULTS_FILE)


def _is_learned(cell: Cell) -> bool:
    return codec_class(cell.codec.codec).learned


class CellWorker:
    """Ray actor for learned-codec cells: the models it loads (``harness.codecs.learned``'s
    per-process cache) stay loaded for every later cell it gets."""

    def evaluate(self, image_bytes: bytes, name: str, codec: CodecConfig, quality: float,
                 metrics: tuple[str, ...], bitstream: bytes | None) -> dict[str, Any]:
        return evaluate_cell(image_bytes, name, codec, quality, metrics, bitstream)


def _learned_workers(cells: int, gpus_per_model: float) -> list:
    """Learned-codec actors: one per slot of the cluster (at most one per cell). They take
    the learned cells, which are submitted first, and are killed once those are done; the
    classical cells then run in the freed slots.

    A node that dies takes its actors along; Ray restarts them elsewhere and retries
    their pending cells (``max_restarts``/``max_task_retries``)."""
    import ray

    if not cells:
        return []
    resources = ray.cluster_resources()
    slots = resources.get("GPU", 0) / gpus_per_model if gpus_per_model else resources.get("CPU", 1)
    actor = ray.remote(num_cpus=1, num_gpus=gpus_per_model, max_restarts=-1, max_task_retries=3)(CellWorker)
    return [actor.remote() for _ in range(max(1, min(cells, int(slots))))]


def _store_bitstream(run_dir: Path, row: dict[str, Any], data: bytes) -> None:
    write_atomic(bitstream_path(run_dir, row), lambda tmp: tmp.write_bytes(data), what="bitstream ")


def _finish(plan_: Plan, job: Job, partial: dict[str, Any], commit: str | None,
            failed_remeasures: list[str]) -> dict[str, Any]:
    """The table row of a finished job (its bitstream stored); a failed re-measure keeps the
    row it was to complete, unchanged, and its reason goes to ``failed_remeasures``."""
    data = partial.pop("_bitstream", None)
    if job.row is None:
        row = _full_row(job.cell, partial, commit)
        if data is not None:
            _store_bitstream(plan_.run_dir, row, data)
        return row
    if partial.get("status") != "ok":
        failed_remeasures.append(f"{job.cell.codec.label} {job.cell.image} q{job.cell.quality:g}: {partial.get('error')}")
        return job.row
    measured = [column for name in plan_.metrics for column in METRICS[name].columns]
    names = _row_metrics(job.row) | set(plan_.metrics)  # a metric measured earlier keeps its value
    return {**job.row, **{column: partial[column] for column in measured},
            "metrics": ",".join(name for name in METRICS if name in names)}


def execute(plan_: Plan, config: LeaderboardConfig) -> list[dict[str, Any]]:
    """Run the plan's missing cells and re-measures on Ray; returns the new rows (also saved)."""
    import ray
    from tqdm import tqdm

    commit = git_commit()
    now = pd.Timestamp.now(tz="UTC")
    rows = [_full_row(cell, {"status": "error", "error": reason, "created_at": now})
            for cell, reason in plan_.unreadable.items()]
    jobs = [Job(cell) for cell in plan_.todo] + [Job(cell, row=row) for cell, row in plan_.remeasure]
    # Learned cells first: their actors hold every slot until those cells are done, then the
    # classical cells get the freed slots, so no CPU idles while one actor finishes a curve.
    jobs.sort(key=lambda job: not _is_learned(job.cell))
    if not jobs:
        _save(plan_, rows)
        return rows
    failed_remeasures: list[str] = []
    started = connect(config.address, num_cpus=config.num_cpus)
    try:
        remote = ray.remote(num_cpus=1, max_retries=3)(evaluate_cell)
        digests = {job.cell.image_sha256 for job in jobs}
        image_refs = {digest: ray.put(path.read_bytes()) for digest, path in plan_.images.items() if digest in digests}
        names = {digest: str(path) for digest, path in plan_.images.items()}  # a file of that content
        learned_left = sum(_is_learned(job.cell) for job in jobs)
        workers = _learned_workers(learned_left, config.gpus_per_model)
        submitted = 0

        def submit(job: Job):
            nonlocal submitted
            cell = job.cell
            stored = bitstream_path(plan_.run_dir, job.row).read_bytes() if job.row is not None else None
            args = (image_refs[cell.image_sha256], names[cell.image_sha256], cell.codec, cell.quality,
                    plan_.metrics, stored)
            submitted += 1
            if _is_learned(cell):
                # Round-robin over the actors: each loads a checkpoint once and keeps it.
                return workers[submitted % len(workers)].evaluate.remote(*args)
            return remote.remote(*args)

        last_save = time.monotonic()
        with tqdm(total=len(jobs), unit="cell", desc="leaderboard", disable=not config.progress,
                  file=sys.stderr, dynamic_ncols=True) as bar:
            try:
                for finished in as_completed(submit, jobs, batch=16, poll_s=1.0):
                    for done in finished:
                        partial = done.value
                        if done.error is not None:
                            partial = {"status": "error",
                                       "error": f"worker lost: {type(done.error).__name__}: {one_line(done.error)}",
                                       "created_at": pd.Timestamp.now(tz="UTC")}
                        rows.append(_finish(plan_, done.item, partial, commit, failed_remeasures))
                        learned_left -= _is_learned(done.item.cell)
                    bar.update(len(finished))
                    if workers and not learned_left:
                        for worker in workers:  # free their CPUs/GPUs for the remaining cells
                            ray.kill(worker)
                        workers = []
                    if time.monotonic() - last_save > config.checkpoint_s:
                        _save(plan_, rows)
                        last_save = time.monotonic()
            finally:
                _save(plan_, rows)  # also on Ctrl-C: what finished is kept, the rerun resumes
    finally:
        if started:
            ray.shutdown()
    if failed_remeasures:
        print(f"warning: {len(failed_remeasures)} stored bitstream(s) could not be re-measured, their rows keep "
              f"their earlier metrics; e.g. {'; '.join(failed_remeasures[:3])}", file=sys.stderr)
    return rows


def _curves(frame: pd.DataFrame, bdrate: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    """Per curve of the run's table: mean encode/decode seconds, and the PSNR BD-rate vs the anchor."""
    ok = table.usable(table.flagged(frame))
    curves = {f"{dataset}/{codec}:{cfg}": {"enc_s": float(rows["enc_s"].mean()), "dec_s": float(rows["dec_s"].mean())}
              for (dataset, codec, cfg), rows in ok.groupby(["dataset", "codec", "config"])}
    if bdrate is not None and not bdrate.empty:
        for row in bdrate[bdrate["metric"] == "psnr"].itertuples():
            curves.setdefault(f"{row.dataset}/{row.codec}:{row.config}", {})["bd_rate"] = float(row.bd_rate_pct)
    return curves


def _summary(plan_: Plan, rows: list[dict[str, Any]], config: LeaderboardConfig,
             curves: dict[str, dict[str, float]]) -> RunSummary:
    from harness.codecs.learned import model_points

    frame = table.flagged(_frame(plan_.reused + rows))
    usable = table.usable(frame)
    codecs = []
    for label, version in plan_.versions.items():
        codec, _, cfg = label.partition(":")
        mine = frame[(frame["codec"] == codec) & (frame["config"] == cfg)]
        ok = mine[mine["status"] == "ok"]
        kept = usable[(usable["codec"] == codec) & (usable["config"] == cfg)]
        codecs.append(CodecSummary(codec=label, version=version, ok=int(len(ok)), error=int(len(mine) - len(ok)),
                                   bpp_mean=float(kept["bpp"].mean()) if len(kept) else None,
                                   psnr_mean=float(kept["psnr_rgb"].mean()) if len(kept) else None,
                                   set_aside=int(len(ok) - len(kept))))
    errors = frame[frame["status"] != "ok"]
    return RunSummary(
        run_dir=str(plan_.run_dir), profile=config.profile, datasets=config.datasets, cells=len(plan_.cells),
        computed=len(rows) - len(plan_.remeasure), reused=len(plan_.reused) + len(plan_.remeasure), errors=int(len(errors)),
        codecs=tuple(codecs), remeasured=len(plan_.remeasure), metrics=plan_.metrics,
        unavailable=tuple({"codec": k, "reason": v} for k, v in plan_.unavailable.items()),
        first_errors=tuple(sorted(set(errors["error"].astype(str)))[:5]),
        finished_at=pd.Timestamp.now(tz="UTC").isoformat(), curves=curves,
        models=tuple(point for folder in config.models for point in model_points(folder)),
        set_aside=table.set_aside_note(frame),
        conversions=tuple(sorted({f"{image}: {notice}" for image, notice in
                                  zip(frame["image"], frame["conversion"]) if isinstance(notice, str)})),
    )


def _print_summary(summary: RunSummary) -> None:
    print(f"{summary.run_dir}/results.parquet: {summary.cells} cells, {summary.computed} computed, "
          f"{summary.reused} reused ({summary.remeasured} of them re-measured from stored bitstreams), "
          f"{summary.errors} errors")
    print(f"  metrics: {', '.join(summary.metrics)}")
    for c in summary.codecs:
        means = f"mean {c.bpp_mean:.3f} bpp, {c.psnr_mean:.2f} dB" if c.psnr_mean is not None else (
            "no usable cells" if c.ok else "no ok cells")
        aside = f" ({c.set_aside} set aside)" if c.set_aside else ""
        print(f"  {c.codec:<22} {c.ok:>4} ok{aside} {c.error:>3} err  {means}  [{c.version}]")
    for u in summary.unavailable:
        print(f"  {u['codec']:<22} unavailable: {u['reason']}")
    if summary.conversions:
        print(f"notice: {len(summary.conversions)} image(s) changed on reading, coded as read: "
              f"{'; '.join(summary.conversions[:5])}{' ...' if len(summary.conversions) > 5 else ''}", file=sys.stderr)
    if summary.set_aside:
        print(f"warning: {summary.set_aside}", file=sys.stderr)
    if summary.errors:
        print(f"warning: {summary.errors} cell(s) failed and are excluded from averages; "
              f"e.g. {'; '.join(summary.first_errors[:3])}", file=sys.stderr)


def run(config: LeaderboardConfig) -> RunSummary | None:
    """Plan, compute the missing cells, write ``results.parquet``, ``run.json`` and the report;
    returns the run's summary. ``report_only`` rebuilds the report of an existing run (and
    the BD-rates in its ``run.json``, when it has one) and returns that run's summary. Either
    holds the run folder's lock from start to end."""
    if config.report_only is not None:
        run_dir = Path(config.report_only)
        with folder_lock(run_dir, config.wait_s):
            bdrate = _report(run_dir, config.anchor, config.rd_plots)
            if not (run_dir / RUN_FILE).is_file():
                return None
            summary = replace(read_summary(run_dir), curves=_curves(table.read(run_dir / table.RESULTS_FILE), bdrate))
            write_summary(summary, run_dir)
            return summary
    check_folder(config.run_dir)  # before the lock makes the folder, the images are hashed and the codecs probed
    with folder_lock(config.run_dir, config.wait_s):
        return _run(config)


def _run(config: LeaderboardConfig) -> RunSummary:
    plan_ = plan(config)
    if not plan_.versions:
        reasons = "; ".join(f"{k}: {v}" for k, v in plan_.unavailable.items())
        raise HarnessError(f"no requested codec is available ({reasons})")
    rows = execute(plan_, config)
    merged = _merged(plan_, rows)
    summary = _summary(plan_, rows, config, _curves(merged, None))
    write_summary(summary, plan_.run_dir)  # before the report: a run whose report fails still says what ran
    _print_summary(summary)
    if config.report:
        summary = replace(summary, curves=_curves(merged, _report(plan_.run_dir, config.anchor, config.rd_plots)))
        write_summary(summary, plan_.run_dir)
    return summary


ANCHOR_PREFERENCE = ("vtm", "vvc")


def default_anchor(run_dir: Path) -> str:
    """The paper's anchor (VTM) when the run has it, else VVenC's ``vvc``."""
    frame = table.read(Path(run_dir) / table.RESULTS_FILE)
    present = set(frame.loc[frame["status"] == "ok", "codec"])
    return next((codec for codec in ANCHOR_PREFERENCE if codec in present), ANCHOR_PREFERENCE[-1])


def _report(run_dir: Path, anchor: str | None, rd_plots: tuple[str, ...]) -> pd.DataFrame:
    """Build the report of ``run_dir``; returns its BD-rate table (bdrate.csv)."""
    from harness.eval.report import build_report

    bdrate = build_report(Path(run_dir), anchor or default_anchor(run_dir), rd_plots=rd_plots)
    print(f"report: {Path(run_dir) / 'README.md'}")
    return bdrate
