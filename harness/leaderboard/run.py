"""The leaderboard's run: plan the cells, run the missing ones as Ray tasks, keep the table,
write the run's record.

Flow of :func:`run`: plan (:mod:`harness.leaderboard.plan`); run the remaining cells as Ray
tasks (one CPU each, retried when a worker or node dies; learned codecs in actors that keep
their models loaded, :mod:`harness.leaderboard.cells`); checkpoint ``results.parquet``
atomically every ``checkpoint_s`` seconds and at the end; write ``run.json``
(:mod:`harness.leaderboard.summary`) and print it. All of it holds the run folder's lock
(:mod:`harness.lock`): a second leaderboard on the same folder waits (``--wait``) or is
refused before it plans anything, and every save merges this run's rows into the table on
disk, never over it. The report (:mod:`harness.report`) reads what this leaves; the command
layer builds it after the run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from tqdm import tqdm

from harness import __version__
from harness.atomic import check_folder, write_atomic
from harness.errors import HarnessError
from harness.leaderboard import results
from harness.leaderboard.cells import Cell, Job, crop_points, evaluate_cell, is_learned, row_metrics
from harness.leaderboard.config import LeaderboardConfig
from harness.leaderboard.kept import bitstream_path, crop_path, original_crop_path
from harness.leaderboard.metrics import METRICS
from harness.leaderboard.plan import Plan, plan
from harness.leaderboard.summary import CodecSummary, RunSummary, curve_key, write_summary
from harness.leaderboard.workers import CellWorker
from harness.lock import folder_lock
from harness.process_memory import size_text
from harness.provenance import git_commit
from harness.raycluster import as_completed, connect, one_line


def _full_row(cell: Cell, partial: dict[str, Any], commit: str | None) -> dict[str, Any]:
    row = {column: None for column in results.COLUMNS}
    row.update(partial)
    row.update(dataset=cell.dataset, image=cell.image, image_sha256=cell.image_sha256 or None, codec=cell.codec.codec,
               config=cell.codec.config, config_hash=cell.codec.config_hash, quality=cell.quality,
               harness_version=__version__, git_commit=commit)
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return results.empty()
    frame = pd.DataFrame(rows, columns=list(results.COLUMNS))
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def _merged(plan_: Plan, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The run's whole table: the rows on disk of curves outside this plan, reused rows and the
    new (or re-measured) ones. The disk is read again at every save, so a row that reached the
    table after the plan is merged, not overwritten."""
    existing = results.read(plan_.run_dir / results.RESULTS_FILE)
    curve_of = zip(existing["dataset"], existing["codec"], existing["config"])
    kept = existing[[curve not in plan_.curves for curve in curve_of]]
    parts = [f for f in (kept, _frame(plan_.reused + rows)) if not f.empty]
    merged = pd.concat(parts, ignore_index=True) if parts else results.empty()
    return merged.drop_duplicates(subset=list(results.CELL), keep="last")


def _save(plan_: Plan, rows: list[dict[str, Any]]) -> None:
    results.write(_merged(plan_, rows), plan_.run_dir / results.RESULTS_FILE)


def _learned_workers(cells: int, gpus_per_model: float, memory: int) -> list:
    """Learned-codec actors: one per slot of the cluster (at most one per cell). They take
    the learned cells, which are submitted first, and are killed once those are done; the
    classical cells then run in the freed slots. Each reserves Ray's ``memory`` resource for
    the largest cell budget (its cells tile within it), so a node holds no more of them than
    its memory: the slots are counted from the cluster's memory as from its CPUs or GPUs.

    A node that dies takes its actors along; Ray restarts them elsewhere and retries
    their pending cells (``max_restarts``/``max_task_retries``)."""
    if not cells:
        return []
    resources = ray.cluster_resources()
    slots = resources.get("GPU", 0) / gpus_per_model if gpus_per_model else resources.get("CPU", 1)
    slots = min(slots, resources.get("memory", memory) // memory)
    actor = ray.remote(num_cpus=1, num_gpus=gpus_per_model, memory=memory, max_restarts=-1,
                       max_task_retries=3)(CellWorker)
    return [actor.remote() for _ in range(max(1, min(cells, int(slots))))]


def lost_reason(error: BaseException, cell: Cell) -> str:
    """The one-line reason of a cell whose worker died: for memory (Ray's memory monitor or the
    kernel's OOM killer), naming the image and the memory its cell had; else what Ray said."""
    text = one_line(error)
    killed_for_memory = isinstance(error, ray.exceptions.OutOfMemoryError) or any(
        mark in str(error) for mark in ("OOM", "out of memory", "low on memory"))
    if killed_for_memory:
        memory = cell.codec.curve.max_memory if cell.codec.curve else None
        needed = f"more than the {size_text(memory)} its cell reserved" if memory else "more than its node had"
        return f"killed for memory: coding {cell.image} needed {needed} (--max-memory sets it)"
    return f"worker lost: {type(error).__name__}: {text}"


def _store(path: Path, data: bytes, what: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data), what=what)


def _store_crops(run_dir: Path, row: dict[str, Any], crop: bytes, original: bytes) -> None:
    _store(crop_path(run_dir, row), crop, "crop ")
    if not original_crop_path(run_dir, row["image_sha256"]).is_file():
        _store(original_crop_path(run_dir, row["image_sha256"]), original, "crop ")


def _finish(plan_: Plan, job: Job, partial: dict[str, Any], commit: str | None,
            failed_remeasures: list[str]) -> dict[str, Any]:
    """The table row of a finished job (its bitstream and crops stored); a failed re-measure keeps
    the row it was to complete, unchanged, and its reason goes to ``failed_remeasures``."""
    data = partial.pop("_bitstream", None)
    crops = partial.pop("_crop", None), partial.pop("_original_crop", None)
    if job.row is None:
        row = _full_row(job.cell, partial, commit)
        if data is not None:
            _store(bitstream_path(plan_.run_dir, row), data, "bitstream ")
        if crops[0] is not None:
            _store_crops(plan_.run_dir, row, *crops)
        return row
    if partial.get("status") != "ok":
        failed_remeasures.append(f"{job.cell.codec.label} {job.cell.image} q{job.cell.quality:g}: {partial.get('error')}")
        return job.row
    if crops[0] is not None:
        _store_crops(plan_.run_dir, job.row, *crops)
    measured = [column for name in plan_.metrics for column in METRICS[name].columns]
    names = row_metrics(job.row) | set(plan_.metrics)  # a metric measured earlier keeps its value
    return {**job.row, **{column: partial[column] for column in measured},
            "metrics": ",".join(name for name in METRICS if name in names)}


def execute(plan_: Plan, config: LeaderboardConfig) -> list[dict[str, Any]]:
    """Run the plan's missing cells and re-measures on Ray; returns the new rows (also saved)."""
    commit = git_commit()
    now = pd.Timestamp.now(tz="UTC")
    rows = [_full_row(cell, {"status": "error", "error": reason, "created_at": now})
            for cell, reason in plan_.unreadable.items()]
    jobs = [Job(cell) for cell in plan_.todo] + [Job(cell, row=row) for cell, row in plan_.remeasure]
    # Learned cells first: their actors hold every slot until those cells are done, then the
    # classical cells get the freed slots, so no CPU idles while one actor finishes a curve.
    jobs.sort(key=lambda job: not is_learned(job.cell))
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
        learned_left = sum(is_learned(job.cell) for job in jobs)
        budgets = [job.cell.codec.curve.max_memory for job in jobs if is_learned(job.cell)]
        workers = _learned_workers(learned_left, config.gpus_per_model, max(budgets, default=1))
        submitted = 0

        def submit(job: Job):
            nonlocal submitted
            cell = job.cell
            stored = bitstream_path(plan_.run_dir, job.row).read_bytes() if job.row is not None else None
            args = (image_refs[cell.image_sha256], names[cell.image_sha256], cell.codec, cell.quality,
                    plan_.metrics, stored, cell.quality in crop_points(cell.codec.ladder, config.crops))
            submitted += 1
            if is_learned(cell):
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
                            partial = {"status": "error", "error": lost_reason(done.error, done.item.cell),
                                       "created_at": pd.Timestamp.now(tz="UTC")}
                        rows.append(_finish(plan_, done.item, partial, commit, failed_remeasures))
                        learned_left -= is_learned(done.item.cell)
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


def _curves(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per curve of the run's table: mean encode/decode seconds (the report adds its BD-rate)."""
    ok = results.usable(results.flagged(frame))
    return {curve_key(dataset, codec, cfg): {"enc_s": float(rows["enc_s"].mean()), "dec_s": float(rows["dec_s"].mean())}
            for (dataset, codec, cfg), rows in ok.groupby(["dataset", "codec", "config"])}


def _summary(plan_: Plan, rows: list[dict[str, Any]], config: LeaderboardConfig,
             curves: dict[str, dict[str, float]]) -> RunSummary:
    frame = results.flagged(_frame(plan_.reused + rows))
    usable = results.usable(frame)
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
        set_aside=results.set_aside_note(frame),
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


def run(config: LeaderboardConfig) -> RunSummary:
    """Plan, compute the missing cells, write ``results.parquet`` and ``run.json``; returns the
    run's summary. Holds the run folder's lock from start to end."""
    check_folder(config.run_dir)  # before the lock makes the folder, the images are hashed and the codecs probed
    with folder_lock(config.run_dir, config.wait_s):
        plan_ = plan(config)
        if not plan_.versions:
            reasons = "; ".join(f"{k}: {v}" for k, v in plan_.unavailable.items())
            raise HarnessError(f"no requested codec is available ({reasons})")
        rows = execute(plan_, config)
        saved = results.read(plan_.run_dir / results.RESULTS_FILE)  # execute's last save, under this lock
        summary = _summary(plan_, rows, config, _curves(saved))
        write_summary(summary, plan_.run_dir)
        _print_summary(summary)
        return summary
