"""`harness datasets list|fetch|verify`: obtain registered datasets and prove they are intact.

``fetch`` downloads every file of a manifest (resuming partial downloads),
checks published checksums, unpacks archives safely, checks the image count
and records the SHA-256 of every image in ``<root>/NAME/.harness-dataset.json``.
``verify`` re-hashes the images against the manifest's per-image checksums
(Kodak) or against that record, so that datasets whose authors publish no
checksums can still be checked later (trust on first download).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from harness.data import registry
from harness.data.archive import extract
from harness.data.download import download
from harness.data.registry import Manifest
from harness.errors import HarnessError
from harness.hashing import sha256_file

ACTIONS = ("list", "fetch", "verify")
DOWNLOADS = ".downloads"


@dataclass(frozen=True)
class DatasetsConfig:
    action: str  # one of ACTIONS
    name: str | None = None
    root: Path | None = None
    manifests: Path | None = None  # manifest directory override (tests, private registries)
    retries: int = 3
    keep_archives: bool = False


def _hash_images(images: list[Path], directory: Path, label: str) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in tqdm(images, desc=f"hashing {label}", unit="img", disable=None, leave=False)
    }


def list_datasets(config: DatasetsConfig, out: Callable[[str], None] = print) -> None:
    rows = [("NAME", "ROLE", "IMAGES", "PRESENT", "LOCATION")]
    for manifest in registry.load_all(config.manifests):
        directory = registry.dataset_dir(manifest, config.root)
        found = len(registry.matching_images(manifest, directory)) if directory.is_dir() else 0
        present = "yes" if found == manifest.count else ("no" if found == 0 else f"partial ({found})")
        where = "vendored" if manifest.vendored is not None else str(directory)
        rows.append((manifest.name, manifest.role, str(manifest.count), present, where))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _manual_message(manifest: Manifest, directory: Path) -> str:
    steps = (manifest.manual or "").replace("<data root>/" + manifest.name, str(directory))
    return f"{manifest.name} cannot be downloaded automatically: {steps} ({manifest.homepage}); then run " \
           f"`harness datasets verify {manifest.name}`"


def fetch(config: DatasetsConfig, out: Callable[[str], None] = print) -> Path:
    """Download, check and unpack dataset ``config.name``; return its directory."""
    manifest = registry.load_manifest(config.name, config.manifests)
    directory = registry.dataset_dir(manifest, config.root)
    if manifest.vendored is not None:
        out(f"{manifest.name}: vendored in {directory}, nothing to download")
        return directory
    if registry.is_present(manifest, config.root):
        if registry.read_state(directory) is not None:
            out(f"{manifest.name}: already fetched, {manifest.count} images in {directory}")
            return directory
        if not manifest.files:
            out(f"{manifest.name}: {manifest.count} images placed in {directory}; "
                f"`harness datasets verify {manifest.name}` checks and records them")
            return directory
    if not manifest.files:
        raise HarnessError(_manual_message(manifest, directory))
    downloads = directory / DOWNLOADS
    archives: dict[str, str] = {}
    for remote in manifest.files:
        expected = remote.sha256 if remote.checksum_published else None
        result = download(remote.url, downloads / remote.filename, expected, retries=config.retries)
        if result.reused:
            out(f"{remote.filename}: using the file already in {downloads}")
        elif result.resumed_from:
            out(f"{remote.filename}: resumed after {result.resumed_from} bytes")
        if expected is None:
            out(f"{remote.filename}: no published checksum; sha256 {result.sha256} recorded")
        archives[remote.filename] = result.sha256
        if remote.archive == "none":
            shutil.copyfile(result.path, directory / remote.filename)
        else:
            extract(result.path, remote.archive, directory)
    images = registry.matching_images(manifest, directory)
    if len(images) != manifest.count:
        raise HarnessError(
            f"{manifest.name}: {len(images)} images match {manifest.glob!r} in {directory}, expected "
            f"{manifest.count}; the archive may have changed upstream (check {manifest.homepage})"
        )
    registry.write_state(directory, {
        "name": manifest.name,
        "count": manifest.count,
        "archives": archives,
        "images": _hash_images(images, directory, manifest.name),
    })
    if not config.keep_archives:
        shutil.rmtree(downloads, ignore_errors=True)
    out(f"{manifest.name}: {len(images)} images in {directory}")
    return directory


def verify(config: DatasetsConfig, out: Callable[[str], None] = print) -> None:
    """Check count and SHA-256 of every image; raise listing the bad files."""
    manifest = registry.load_manifest(config.name, config.manifests)
    directory = registry.dataset_dir(manifest, config.root)
    if not directory.is_dir():
        hint = _manual_message(manifest, directory) if not manifest.files else \
            f"run `harness datasets fetch {manifest.name}` or pass --root DIR"
        raise HarnessError(f"{manifest.name}: not present in {directory}; {hint}")
    state = registry.read_state(directory)
    if manifest.images:
        expected = dict(manifest.images)
    elif state is not None:
        expected = state.get("images", {})
    else:
        expected = {}
    images = registry.matching_images(manifest, directory)
    if not expected:
        # Placed by hand and no checksums published: check the count, then record hashes for next time.
        if len(images) != manifest.count:
            raise HarnessError(f"{manifest.name}: {len(images)} images match {manifest.glob!r} in {directory}, "
                               f"expected {manifest.count}")
        hashes = _hash_images(images, directory, manifest.name)
        registry.write_state(directory, {"name": manifest.name, "count": manifest.count, "images": hashes})
        out(f"{manifest.name}: {len(images)} images counted; no published checksums, sha256 of each recorded "
            f"in {directory / registry.STATE_FILE}")
        return
    found = {path.relative_to(directory).as_posix(): path for path in images}
    bad: list[str] = []
    for relative, digest in tqdm(sorted(expected.items()), desc=f"verifying {manifest.name}", unit="img",
                                 disable=None, leave=False):
        path = directory / relative
        if not path.is_file():
            bad.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            bad.append(f"{path}: sha256 mismatch")
    bad.extend(f"{found[relative]}: not in the dataset" for relative in sorted(set(found) - set(expected)))
    if len(expected) != manifest.count:
        bad.append(f"{directory / registry.STATE_FILE}: records {len(expected)} images, expected {manifest.count}")
    if bad:
        for line in bad:
            out(f"BAD {line}")
        raise HarnessError(f"{manifest.name}: {len(bad)} problem(s) among {manifest.count} images (listed above)")
    out(f"{manifest.name}: {manifest.count} images verified")


def run(config: DatasetsConfig) -> int:
    if config.action == "list":
        list_datasets(config)
    elif config.action == "fetch":
        fetch(config)
    elif config.action == "verify":
        verify(config)
    else:
        raise HarnessError(f"unknown datasets action {config.action!r}; expected one of {', '.join(ACTIONS)}")
    return 0
