"""Safe extraction of downloaded zip and tar archives.

Every member is checked before a single byte is written: absolute paths
(``/x``, ``\\x``, ``C:x``), ``..`` components, device files and FIFOs, and
links whose target leaves the extraction root are refused with a
:class:`HarnessError` naming the member (the attacks of CVE-2007-4559 and
"zip slip"). Zip archives may not contain symbolic links at all (image datasets
never need them). Tar members are then written through Python's ``data``
extraction filter (PEP 706), which also resolves link chains on disk. The
declared uncompressed size must fit in the free space of the destination
(zipfile never inflates a member beyond its declared size, so a "zip bomb"
cannot exceed this check).

Extraction happens in a staging directory inside the destination that is
merged into place only when the whole archive has been unpacked, so a failure
leaves the destination as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from harness.errors import HarnessError

_DRIVE = re.compile(r"^[A-Za-z]:")
_TAR_MODES = {"tar": "r:", "tar.gz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}


def _parts(name: str) -> list[str]:
    return [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]


def _check_name(archive: Path, name: str) -> None:
    if not name or name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise HarnessError(f"{archive}: refusing to extract member {name!r}: absolute path")
    if ".." in _parts(name):
        raise HarnessError(f"{archive}: refusing to extract member {name!r}: '..' in path")


def _inside(link_dir: list[str], target: str) -> bool:
    """Whether ``target``, read relative to the directory ``link_dir``, stays under the root."""
    depth = len(link_dir)
    for part in _parts(target):
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return False
    return True


def _check_tar(archive: Path, members: list[tarfile.TarInfo]) -> None:
    for member in members:
        _check_name(archive, member.name)
        if member.isdev():
            raise HarnessError(f"{archive}: refusing to extract member {member.name!r}: device file or FIFO")
        if member.issym() or member.islnk():
            kind = "symlink" if member.issym() else "hard link"
            target = member.linkname
            if not target or target.startswith(("/", "\\")) or _DRIVE.match(target):
                raise HarnessError(f"{archive}: refusing to extract {kind} {member.name!r} -> {target!r}: absolute target")
            base = _parts(member.name)[:-1] if member.issym() else []
            if not _inside(base, target):
                raise HarnessError(f"{archive}: refusing to extract {kind} {member.name!r} -> {target!r}: "
                                   f"target outside the extraction directory")
        elif not (member.isfile() or member.isdir()):
            raise HarnessError(f"{archive}: refusing to extract member {member.name!r}: unsupported type")


def _check_zip(archive: Path, infos: list[zipfile.ZipInfo]) -> None:
    for info in infos:
        _check_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise HarnessError(f"{archive}: refusing to extract member {info.filename!r}: symbolic link")
        if stat.S_IFMT(mode) in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            raise HarnessError(f"{archive}: refusing to extract member {info.filename!r}: device file or FIFO")


def _check_space(archive: Path, needed: int, dest: Path) -> None:
    """Refuse archives whose declared contents do not fit on the destination's file system."""
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise HarnessError(f"{archive}: unpacking needs {needed / 1e9:.1f} GB but {dest} has "
                           f"{free / 1e9:.1f} GB free; free space or pass --root on a larger disk")


def _extract_zip(archive: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            infos = bundle.infolist()
            _check_zip(archive, infos)
            _check_space(archive, sum(info.file_size for info in infos), staging)
            for info in infos:
                target = staging.joinpath(*_parts(info.filename))
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except zipfile.BadZipFile as error:
        raise HarnessError(f"{archive}: not a valid zip archive ({error}); delete it and fetch again") from None


def _extract_tar(archive: Path, kind: str, staging: Path) -> None:
    def invalid(error: BaseException) -> HarnessError:
        return HarnessError(f"{archive}: not a valid {kind} archive ({error}); delete it and fetch again")

    try:
        bundle = tarfile.open(archive, _TAR_MODES[kind])
        members = bundle.getmembers()
    except (tarfile.TarError, EOFError, OSError) as error:  # OSError: seeking past a bogus member size
        raise invalid(error) from None
    with bundle:
        _check_tar(archive, members)
        _check_space(archive, sum(member.size for member in members if member.isfile()), staging)
        try:
            bundle.extractall(staging, members=members, filter="data")
        except tarfile.FilterError as error:
            raise HarnessError(f"{archive}: refusing to extract: {error}") from None
        except (tarfile.TarError, EOFError) as error:
            raise invalid(error) from None


def _merge(staging: Path, dest: Path) -> None:
    """Move everything from ``staging`` into ``dest``, replacing files of the same name."""
    for directory, subdirs, files in os.walk(staging):
        relative = Path(directory).relative_to(staging)
        (dest / relative).mkdir(parents=True, exist_ok=True)
        for name in files + [d for d in subdirs if (Path(directory) / d).is_symlink()]:
            os.replace(Path(directory) / name, dest / relative / name)


def extract(archive: str | Path, kind: str, dest: str | Path) -> None:
    """Unpack ``archive`` (``zip``, ``tar``, ``tar.gz``, ``tar.bz2``, ``tar.xz``) into ``dest``."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extracting-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if kind == "zip":
            _extract_zip(archive, staging)
        elif kind in _TAR_MODES:
            _extract_tar(archive, kind, staging)
        else:
            raise HarnessError(f"{archive}: unknown archive type {kind!r}")
        _merge(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

