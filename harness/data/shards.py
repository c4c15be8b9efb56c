"""``harness prepare-data``: source images → WebDataset shards of training patches.

Three steps:

1. **Scan** (driver): list every source, hash each file, read its header, drop
   duplicates (same sha256 kept once) and unusable files (with the reason).
2. **Plan** (driver, deterministic): split by source image into train/val,
   give each image its patch count, order images by a seeded hash and chunk
   them into shards. The plan's sha256 identifies the output.
3. **Write** (Ray, one task per shard): decode, cut the patches of
   :mod:`harness.data.recipe`, write ``train-NNNNNN.tar`` / ``val-NNNNNN.tar``
   with :class:`webdataset.TarWriter` to a temporary name and rename it when
   complete. Tar members carry fixed metadata (mtime 0, fixed owner and mode)
   and sorted names, so a shard's bytes depend only on the plan: any worker
   count, any scheduling, a retried task after a node died, all give the same
   sha256.

``DIR/manifest.json`` (:mod:`harness.data.manifest`) is rewritten (atomically)
after every finished shard, so an interrupted run resumes: shards whose file
matches the sha256 recorded in the manifest are kept, the rest are written again. The run holds ``DIR``'s lock
(:mod:`harness.lock`) from the scan to the last manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.atomic import atomic_path, check_folder
from harness.configs import build, field_names
from harness.data import registry
from harness.data.manifest import FORMAT, MANIFEST, ShardManifest, ShardRecord, read_manifest, write_manifest
from harness.data.recipe import RECIPE_VERSION, PatchRecipe, cut_patch, plan_patches, small_image_reason
from harness.errors import HarnessError
from harness.hashing import sha256_file
from harness.lock import check_wait, folder_lock
from harness.pixels.images import image_size, load_rgb
from harness.raycluster import as_completed, connect, one_line

TASK_RETRIES = 5  # Ray re-runs a shard task this often after its worker or node dies


@dataclass(frozen=True)
class PrepareConfig:
    sources: tuple[str, ...]
    out: Path
    recipe: PatchRecipe = field(default_factory=PatchRecipe)
    root: Path | None = None  # data root for registry names
    target_patches: int | None = None  # total train patches, spread evenly over the sources
    val_fraction: float = 0.05
    shard_patches: int = 256
    workers: int | None = None  # concurrent shard tasks (and CPUs of a local Ray instance)
    address: str | None = None  # existing Ray cluster to join
    progress: bool = True
    wait_s: float = 0.0  # wait this long for another command's lock on ``out``

    def __post_init__(self) -> None:
        check_wait(self.wait_s)
        if not self.sources:
            raise HarnessError("give at least one --source")
        if not 0 <= self.val_fraction < 1:
            raise HarnessError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_patches < 1:
            raise HarnessError(f"--shard-patches must be >= 1, got {self.shard_patches}")
        if self.target_patches is not None and self.target_patches < 1:
            raise HarnessError(f"--target-patches must be >= 1, got {self.target_patches}")
        if self.workers is not None and self.workers < 1:
            raise HarnessError(f"--workers must be >= 1, got {self.workers}")


def prepare_config(values: Mapping[str, Any], where: str = "") -> PrepareConfig:
    """A :class:`PrepareConfig` from flat keys, the recipe's fields beside the rest, as
    both the command line and a rerun plan's ``[data]`` section give them (TOML has no null:
    ``resize = "none"`` keeps the source size)."""
    if isinstance(values.get("resize"), str) and values["resize"].lower() == "none":
        values = {**values, "resize": None}
    recipe_keys = field_names(PatchRecipe)
    recipe = build(PatchRecipe, {k: v for k, v in values.items() if k in recipe_keys}, where)
    return build(PrepareConfig, {**{k: v for k, v in values.items() if k not in recipe_keys}, "recipe": recipe}, where)


@dataclass(frozen=True)
class SourceImage:
    source: str  # label written into every sample: registry name or folder:<name>
    file: str  # path relative to the source's root (stable across machines)
    path: str  # where to read it
    sha256: str


@dataclass(frozen=True)
class ImageJob:
    image: SourceImage
    patches: int


@dataclass(frozen=True)
class ShardPlan:
    name: str
    split: str
    jobs: tuple[ImageJob, ...]

    @property
    def planned_patches(self) -> int:
        return sum(job.patches for job in self.jobs)


@dataclass(frozen=True)
class Rejection:
    source: str
    file: str
    reason: str


@dataclass
class ScanResult:
    images: list[SourceImage]
    rejected: list[Rejection]
    found: dict[str, int]  # image files listed per source


# --------------------------------------------------------------------- scan


def _resolve_source(spec: str, root: Path | None) -> tuple[str, Path, list[Path]]:
    """``(label, directory, image files)`` of one ``--source``, through the dataset registry."""
    files = registry.dataset_images(spec, root)
    if spec.startswith(registry.FOLDER_PREFIX):
        folder = Path(spec.removeprefix(registry.FOLDER_PREFIX)).expanduser()
        return f"folder:{folder.resolve().name}", folder, files
    return spec, registry.dataset_dir(registry.load_manifest(spec), root), files


def _reason(error: HarnessError, path: Path) -> str:
    return str(error).removeprefix(f"cannot read image {path}: ")


def _screen(path: Path, recipe: PatchRecipe) -> tuple[str | None, str | None]:
    """``(sha256, None)`` for a usable file, ``(sha256 or None, reason)`` otherwise."""
    try:
        width, height = image_size(path)
    except HarnessError as error:
        return None, _reason(error, path)
    small = small_image_reason(recipe, width, height)
    return sha256_file(path), small


def scan_sources(config: PrepareConfig) -> ScanResult:
    """List, hash and screen every source; duplicates (by sha256) are kept once, first seen wins."""
    result = ScanResult([], [], {})
    seen: dict[str, SourceImage] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:  # hashing is I/O bound and releases the GIL
        for spec in config.sources:
            label, root, files = _resolve_source(spec, config.root)
            result.found[label] = result.found.get(label, 0) + len(files)
            for path, (sha, reason) in zip(files, pool.map(lambda p: _screen(p, config.recipe), files)):
                relative = path.relative_to(root).as_posix()
                if reason is not None:
                    result.rejected.append(Rejection(label, relative, reason))
                elif sha in seen:
                    first = seen[sha]
                    result.rejected.append(Rejection(label, relative, f"duplicate of {first.source}/{first.file}"))
                else:
                    seen[sha] = SourceImage(label, relative, str(path.resolve()), sha)
                    result.images.append(seen[sha])
    if not result.images:
        raise HarnessError(
            f"no usable images in {', '.join(config.sources)}: {len(result.rejected)} rejected, "
            f"e.g. {result.rejected[0].file}: {result.rejected[0].reason}"
        )
    return result


# --------------------------------------------------------------------- plan


def _rank(seed: int, image: SourceImage) -> str:
    """Seeded order of images: decides the val split and how images mix in shards."""
    return hashlib.sha256(f"split:{seed}:{image.sha256}".encode()).hexdigest()


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _chunk(jobs: list[ImageJob], split: str, shard_patches: int) -> list[ShardPlan]:
    shards: list[ShardPlan] = []
    current: list[ImageJob] = []
    for job in jobs:
        current.append(job)
        if sum(j.patches for j in current) >= shard_patches:
            shards.append(ShardPlan(f"{split}-{len(shards):06d}.tar", split, tuple(current)))
            current = []
    if current:
        shards.append(ShardPlan(f"{split}-{len(shards):06d}.tar", split, tuple(current)))
    return shards


def plan_shards(images: list[SourceImage], config: PrepareConfig) -> list[ShardPlan]:
    """Split by image into train/val per source, assign patch counts, chunk into shards."""
    recipe = config.recipe
    by_source: dict[str, list[SourceImage]] = {}
    for image in images:
        by_source.setdefault(image.source, []).append(image)
    train: list[ImageJob] = []
    val: list[ImageJob] = []
    shares = _spread(config.target_patches, len(by_source)) if config.target_patches else None
    for number, members in enumerate(by_source.values()):
        ranked = sorted(members, key=lambda image: _rank(recipe.seed, image))
        n_val = math.floor(config.val_fraction * len(ranked) + 0.5)
        if config.val_fraction > 0 and len(ranked) >= 2:
            n_val = min(max(n_val, 1), len(ranked) - 1)
        val += [ImageJob(image, recipe.patches_per_image) for image in ranked[:n_val]]
        rest = ranked[n_val:]
        counts = _spread(shares[number], len(rest)) if shares else [recipe.patches_per_image] * len(rest)
        train += [ImageJob(image, count) for image, count in zip(rest, counts) if count > 0]
    # Shards mix sources and images in the seeded order rather than listing order.
    order = lambda job: _rank(recipe.seed, job.image)  # noqa: E731
    return _chunk(sorted(train, key=order), "train", config.shard_patches) + _chunk(
        sorted(val, key=order), "val", config.shard_patches
    )


def plan_digest(shards: list[ShardPlan], recipe: PatchRecipe) -> str:
    """sha256 of everything that determines the shards' bytes."""
    canonical = {
        "format": FORMAT,
        "recipe": recipe.describe(),
        "shards": [
            [s.name, [[j.image.source, j.image.file, j.image.sha256, j.patches] for j in s.jobs]] for s in shards
        ],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------- write


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def write_shard(shard: ShardPlan, out_dir: str, recipe: PatchRecipe) -> ShardRecord:
    """Write one shard (runs as a Ray task). Returns its record for the manifest.

    An image that fails to decode (e.g. truncated) is left out of the shard and
    reported; that is a property of the file, so every attempt agrees.
    """
    from PIL import Image
    from webdataset import TarWriter

    samples = 0
    rejected: list[dict] = []
    per_source: dict[str, dict[str, int]] = {}  # images and patches actually written
    target = Path(out_dir) / shard.name
    with atomic_path(target) as tmp, open(tmp, "wb") as stream:
        writer = TarWriter(stream, encoder=False, mtime=0, user="harness", group="harness", mode=0o444)
        for job in shard.jobs:
            image = job.image
            try:
                decoded = load_rgb(image.path)
                transforms = plan_patches(recipe, decoded.width, decoded.height, image.sha256, job.patches)
            except HarnessError as error:
                rejected.append({"source": image.source, "file": image.file, "reason": _reason(error, Path(image.path))})
                continue
            pil = Image.fromarray(decoded.pixels, "RGB")
            for transform in transforms:
                meta = {
                    "source": image.source,
                    "file": image.file,
                    "sha256": image.sha256,
                    "split": shard.split,
                    "patch": transform.describe(),
                    "source_size": [decoded.width, decoded.height],
                    "conversion": decoded.notice,
                    "recipe_version": RECIPE_VERSION,
                }
                writer.write({
                    "__key__": f"{image.sha256[:20]}_{transform.index:04d}",
                    "png": _png_bytes(cut_patch(pil, transform, recipe.patch)),
                    "json": json.dumps(meta, sort_keys=True).encode(),
                })
                samples += 1
            counts = per_source.setdefault(image.source, {"images": 0, "patches": 0})
            counts["images"] += 1
            counts["patches"] += len(transforms)
        writer.close()
        stream.flush()
    return ShardRecord(
        name=shard.name,
        split=shard.split,
        images=len(shard.jobs) - len(rejected),
        planned_patches=shard.planned_patches,
        sha256=sha256_file(target),
        samples=samples,
        bytes=target.stat().st_size,
        per_source=per_source,
        rejected=tuple(rejected),
    )


# --------------------------------------------------------------------- run


def _kept_shards(out: Path, previous: ShardManifest | None, digest: str) -> dict[str, ShardRecord]:
    """Shards from an earlier run of the same plan whose file still matches its recorded sha256."""
    if previous is None:
        if any(out.glob("*.tar")):
            raise HarnessError(f"{out} holds .tar files but no {MANIFEST}; choose an empty --out directory")
        return {}
    if previous.plan_sha256 != digest:
        raise HarnessError(
            f"{out} holds shards of a different plan (sources, options or seed changed); "
            "choose another --out or delete it"
        )
    kept = {}
    for record in previous.shards:
        path = out / record.name
        if record.sha256 and path.is_file() and sha256_file(path) == record.sha256:
            kept[record.name] = record
    return kept


@dataclass
class _Ledger:
    """The manifest as it grows; written after every shard so a crash loses at most running tasks."""

    out: Path
    config: PrepareConfig
    digest: str
    shards: list[ShardPlan]
    done: dict[str, ShardRecord]
    scan: ScanResult
    started: float = field(default_factory=time.perf_counter)

    def manifest(self, complete: bool, kept: int) -> ShardManifest:
        records = [self.done.get(s.name) or ShardRecord(s.name, s.split, len(s.jobs), s.planned_patches)
                   for s in self.shards]
        rejected = [asdict(r) for r in self.scan.rejected]
        for record in records:
            rejected += record.rejected
        per_source: dict[str, dict] = {}
        for label, found in self.scan.found.items():
            per_source[label] = {"files": found, "rejected": 0, "train_images": 0, "val_images": 0,
                                 "train_patches": 0, "val_patches": 0}
        for entry in rejected:
            per_source[entry["source"]]["rejected"] += 1
        for record in records:
            for label, counts in record.per_source.items():
                per_source[label][f"{record.split}_images"] += counts["images"]
                per_source[label][f"{record.split}_patches"] += counts["patches"]
        totals = {
            "shards": len(self.shards),
            "shards_done": len(self.done),
            "images": sum(r.images for r in records),
            "train_patches": sum(r.samples for r in records if r.split == "train"),
            "val_patches": sum(r.samples for r in records if r.split == "val"),
            "rejected": len(rejected),
        }
        config = self.config
        return ShardManifest(
            plan_sha256=self.digest,
            recipe=config.recipe.describe(),
            sources=config.sources,
            target_patches=config.target_patches,
            val_fraction=config.val_fraction,
            shard_patches=config.shard_patches,
            status="complete" if complete else "incomplete",
            shards=tuple(records),
            per_source=per_source,
            rejected=tuple(sorted(rejected, key=lambda r: (r["source"], r["file"]))),
            totals=totals,
            resume={"kept": kept, "written": len(self.done) - kept},
            wall_time_s=round(time.perf_counter() - self.started, 3),
        )

    def save(self, complete: bool, kept: int) -> ShardManifest:
        manifest = self.manifest(complete, kept)
        write_manifest(manifest, self.out)
        return manifest


def _remove_stale_temporaries(out: Path) -> None:
    for stale in out.glob(".*.tmp"):
        if stale.name.startswith((".train-", ".val-", f".{MANIFEST}")):
            stale.unlink(missing_ok=True)


def _write_shards(config: PrepareConfig, todo: list[ShardPlan], ledger: _Ledger,
                  on_shard_done: Callable[[ShardRecord], None] | None) -> None:
    """One Ray task per shard, at most ``config.workers`` at a time; the ledger records each as it lands."""
    import ray
    from tqdm import tqdm

    out = ledger.out
    kept = len(ledger.done)
    started_ray = connect(config.address, num_cpus=config.workers or os.cpu_count())
    try:
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(write_shard)
        recipe_ref = ray.put(config.recipe)
        target = str(out.resolve())
        written = 0
        start = time.perf_counter()
        with tqdm(total=len(ledger.shards), initial=kept, unit="shard", disable=not config.progress,
                  desc="prepare-data", dynamic_ncols=True) as bar:
            for finished in as_completed(lambda shard: task.remote(shard, target, recipe_ref), todo,
                                         limit=config.workers):
                for done in finished:
                    if done.error is not None:
                        raise HarnessError(f"shard {done.item.name} failed: {one_line(done.error)}; "
                                           "rerun the same command to resume")
                    record = done.value
                    ledger.done[record.name] = record
                    ledger.save(complete=False, kept=kept)
                    written += record.samples
                    bar.update(1)
                    bar.set_postfix_str(f"{written / max(time.perf_counter() - start, 1e-9):.1f} patches/s")
                    if on_shard_done is not None:
                        on_shard_done(record)
    finally:
        if started_ray:
            ray.shutdown()


def run(config: PrepareConfig, on_shard_done: Callable[[ShardRecord], None] | None = None) -> ShardManifest:
    """Prepare (or resume) ``config.out``, holding its lock throughout (two runs on one folder
    would delete each other's temporaries); returns the final manifest.

    ``on_shard_done`` is called with each newly written shard's record.
    """
    with folder_lock(config.out, config.wait_s):
        return _prepare(config, on_shard_done)


def _prepare(config: PrepareConfig, on_shard_done: Callable[[ShardRecord], None] | None) -> ShardManifest:
    started = time.perf_counter()
    check_folder(config.out)  # before the sources are hashed
    scan = scan_sources(config)
    shards = plan_shards(scan.images, config)
    digest = plan_digest(shards, config.recipe)
    out = Path(config.out)  # made by the lock
    _remove_stale_temporaries(out)
    kept = _kept_shards(out, read_manifest(out), digest)
    ledger = _Ledger(out, config, digest, shards, dict(kept), scan, started)
    ledger.save(complete=False, kept=len(kept))
    todo = [s for s in shards if s.name not in kept]
    if kept:
        print(f"resuming {out}: kept {len(kept)} of {len(shards)} shards (sha256 verified), "
              f"writing {len(todo)}")

    if todo:
        _write_shards(config, todo, ledger, on_shard_done)
    _remove_stale_temporaries(out)  # left by tasks whose node died mid-write
    return ledger.save(complete=True, kept=len(kept))


def summary_line(manifest: ShardManifest, out: Path) -> str:
    totals, resume = manifest.totals, manifest.resume
    return (
        f"prepared {totals['train_patches']} train + {totals['val_patches']} val patches "
        f"({manifest.patch}px) from {totals['images']} images in {totals['shards']} shards "
        f"(kept {resume['kept']}, wrote {resume['written']}); {totals['rejected']} files rejected; "
        f"{manifest.wall_time_s:.1f} s -> {out / MANIFEST}"
    )
