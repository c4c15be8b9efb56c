"""The dataset registry: one TOML manifest per dataset in ``datasets/``.

A manifest records what a user needs to obtain a dataset and to know that the
copy on disk is the real one: download URLs, archive type, published checksums
(or ``"unpublished"``), the expected image count, the glob that selects the
images inside the unpacked archives, licence and citation. Kodak is vendored in
the repository (``datasets/kodak/``) with a SHA-256 per image.

Where datasets live: ``--root`` > ``$HARNESS_DATA`` > ``~/.cache/harness``; a
dataset ``NAME`` is unpacked into ``<root>/NAME/``. Other stages ask for images
through :func:`dataset_images`, which also accepts ``folder:PATH``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.atomic import atomic_open
from harness.errors import HarnessError
from harness.pixels.images import IMAGE_SUFFIXES

DATASETS_DIR_ENV = "HARNESS_DATASETS_DIR"
DATA_ROOT_ENV = "HARNESS_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/harness")
FOLDER_PREFIX = "folder:"
UNPUBLISHED = "unpublished"
ARCHIVE_TYPES = ("zip", "tar", "tar.gz", "tar.bz2", "tar.xz", "none")
ROLES = ("test", "train")
# Written into <root>/NAME/ once a fetch has completed; it records the SHA-256 of
# every image so that `verify` can check datasets whose authors publish none.
STATE_FILE = ".harness-dataset.json"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPO_DATASETS = Path(__file__).resolve().parents[2] / "datasets"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file of a dataset."""

    url: str
    filename: str
    archive: str  # one of ARCHIVE_TYPES; "none" means the file is itself an image
    sha256: str  # lowercase hex, or UNPUBLISHED

    @property
    def checksum_published(self) -> bool:
        return self.sha256 != UNPUBLISHED


@dataclass(frozen=True)
class Manifest:
    """A validated ``datasets/<name>.toml``."""

    name: str
    role: str
    description: str
    homepage: str
    license: str
    citation: str
    count: int
    glob: str
    files: tuple[RemoteFile, ...]
    images: tuple[tuple[str, str], ...]  # (relative path, sha256) where published per image
    vendored: Path | None  # directory holding a copy shipped with the repository
    manual: str | None  # instructions when the dataset cannot be fetched automatically
    source: Path  # the manifest file itself


def datasets_dir(override: str | Path | None = None) -> Path:
    """Directory of the manifests: ``override`` > ``$HARNESS_DATASETS_DIR`` > the repository's."""
    chosen = override or os.environ.get(DATASETS_DIR_ENV) or _REPO_DATASETS
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise HarnessError(f"dataset manifest directory {path} does not exist (set {DATASETS_DIR_ENV})")
    return path


def data_root(root: str | Path | None = None) -> Path:
    """Where datasets are unpacked: ``root`` > ``$HARNESS_DATA`` > ``~/.cache/harness``."""
    chosen = root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().resolve()


def known_names(manifests: str | Path | None = None) -> list[str]:
    return sorted(path.stem for path in datasets_dir(manifests).glob("*.toml"))


def _require(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise HarnessError(f"{where}: missing field '{key}'")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise HarnessError(f"{where}: field '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _checksum(value: Any, where: str) -> str:
    if not isinstance(value, str) or not (value == UNPUBLISHED or _SHA256.match(value)):
        raise HarnessError(f"{where}: sha256 must be 64 lowercase hex digits or '{UNPUBLISHED}', got {value!r}")
    return value


def _parse_file(entry: Any, where: str) -> RemoteFile:
    if not isinstance(entry, dict):
        raise HarnessError(f"{where}: each [[files]] entry must be a table")
    url = _require(entry, "url", str, where)
    if not url.startswith(("http://", "https://")):
        raise HarnessError(f"{where}: url must be http(s), got {url!r}")
    filename = _require(entry, "filename", str, where)
    if Path(filename).name != filename or filename.startswith("."):
        raise HarnessError(f"{where}: filename must be a plain file name, got {filename!r}")
    archive = _require(entry, "archive", str, where)
    if archive not in ARCHIVE_TYPES:
        raise HarnessError(f"{where}: archive must be one of {', '.join(ARCHIVE_TYPES)}, got {archive!r}")
    return RemoteFile(url, filename, archive, _checksum(entry.get("sha256"), f"{where} ({filename})"))


def parse_manifest(path: Path) -> Manifest:
    """Read and validate one manifest file."""
    where = str(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise HarnessError(f"cannot read dataset manifest {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise HarnessError(f"{where}: invalid TOML: {error}") from None
    name = _require(table, "name", str, where)
    if name != path.stem or not _NAME.match(name):
        raise HarnessError(f"{where}: name {name!r} must match the file name and use [a-z0-9._-]")
    role = _require(table, "role", str, where)
    if role not in ROLES:
        raise HarnessError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    count = _require(table, "count", int, where)
    if count <= 0:
        raise HarnessError(f"{where}: count must be positive, got {count}")
    files = tuple(_parse_file(entry, where) for entry in table.get("files", []))
    images_table = table.get("images", {})
    if not isinstance(images_table, dict):
        raise HarnessError(f"{where}: [images] must be a table of 'relative/path' = 'sha256'")
    images = tuple(sorted((rel, _checksum(digest, f"{where} [images] {rel}")) for rel, digest in images_table.items()))
    if images and len(images) != count:
        raise HarnessError(f"{where}: [images] lists {len(images)} files but count is {count}")
    vendored = None
    if "vendored" in table:
        vendored = (path.parent / _require(table, "vendored", str, where)).resolve()
        if not images:
            raise HarnessError(f"{where}: a vendored dataset needs an [images] table with one sha256 per image")
    manual = table.get("manual")
    if not files and vendored is None and not manual:
        raise HarnessError(f"{where}: needs [[files]] to download, a 'vendored' directory or 'manual' instructions")
    return Manifest(
        name=name,
        role=role,
        description=_require(table, "description", str, where),
        homepage=_require(table, "homepage", str, where),
        license=_require(table, "license", str, where),
        citation=_require(table, "citation", str, where),
        count=count,
        glob=_require(table, "glob", str, where),
        files=files,
        images=images,
        vendored=vendored,
        manual=manual,
        source=path,
    )


def load_manifest(name: str, manifests: str | Path | None = None) -> Manifest:
    """The manifest of dataset ``name``; unknown names list the known ones."""
    directory = datasets_dir(manifests)
    path = directory / f"{name}.toml"
    if not _NAME.match(name) or not path.is_file():
        known = ", ".join(known_names(directory)) or "none"
        raise HarnessError(f"unknown dataset {name!r}; known datasets: {known}")
    return parse_manifest(path)


def load_all(manifests: str | Path | None = None) -> list[Manifest]:
    directory = datasets_dir(manifests)
    return [parse_manifest(directory / f"{name}.toml") for name in known_names(directory)]


def dataset_dir(manifest: Manifest, root: str | Path | None = None) -> Path:
    """Directory holding the dataset's images: the vendored copy, else ``<root>/<name>``."""
    if manifest.vendored is not None:
        return manifest.vendored
    return data_root(root) / manifest.name


def is_image(path: Path, base: Path) -> bool:
    """An image file under ``base`` that is not packaging debris (macOS resource forks, hidden files)."""
    return (
        path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(base).parts)
        and path.is_file()
    )


def matching_images(manifest: Manifest, directory: Path) -> list[Path]:
    """Images selected by the manifest's glob under ``directory``, sorted."""
    if manifest.images:
        return [directory / rel for rel in (rel for rel, _ in manifest.images) if (directory / rel).is_file()]
    found = (path for path in directory.glob(manifest.glob) if is_image(path, directory))
    return sorted(found)


def read_state(directory: Path) -> dict[str, Any] | None:
    """The record a completed fetch left in ``directory``, or None."""
    path = directory / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise HarnessError(f"cannot read {path}: {error}; delete it and run `harness datasets verify` again") from None


def write_state(directory: Path, state: dict[str, Any]) -> None:
    with atomic_open(directory / STATE_FILE, "w") as handle:
        json.dump(state, handle, indent=1, sort_keys=True)


def is_present(manifest: Manifest, root: str | Path | None = None) -> bool:
    """Whether the dataset's images are on disk in the expected number."""
    directory = dataset_dir(manifest, root)
    return directory.is_dir() and len(matching_images(manifest, directory)) == manifest.count


def _folder_images(spec: str) -> list[Path]:
    folder = Path(spec[len(FOLDER_PREFIX):]).expanduser()
    if not folder.is_dir():
        raise HarnessError(f"{spec}: no such directory")
    images = sorted(path for path in folder.rglob("*") if is_image(path, folder))
    if not images:
        raise HarnessError(f"{spec}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return images


def dataset_images(spec: str, root: str | Path | None = None, manifests: str | Path | None = None) -> list[Path]:
    """Sorted image paths of a registered dataset or of ``folder:PATH``.

    Raises :class:`HarnessError` when the dataset is not on disk or holds a
    different number of images than its manifest promises, so that no table is
    ever computed on a partial test set.
    """
    if spec.startswith(FOLDER_PREFIX):
        return _folder_images(spec)
    manifest = load_manifest(spec, manifests)
    directory = dataset_dir(manifest, root)
    images = matching_images(manifest, directory) if directory.is_dir() else []
    if not images:
        raise HarnessError(
            f"dataset {spec} is not present in {directory}; run `harness datasets fetch {spec} --root DIR` "
            f"or pass folder:PATH"
        )
    if len(images) != manifest.count:
        raise HarnessError(
            f"dataset {spec} in {directory} has {len(images)} images, expected {manifest.count}; "
            f"run `harness datasets verify {spec}`"
        )
    return images
