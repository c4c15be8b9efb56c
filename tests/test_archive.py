"""Safe extraction: hostile zip and tar members are refused and nothing lands outside the root."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from harness.data.archive import extract
from harness.errors import HarnessError


def _tree(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def _zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            bundle.writestr(info, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as bundle:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                bundle.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                bundle.addfile(info, io.BytesIO(member[1]))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.fixture()
def sandbox(tmp_path: Path):
    """(archive directory, extraction root); everything outside the root is watched."""
    (tmp_path / "archives").mkdir()
    root = tmp_path / "jail" / "root"
    root.mkdir(parents=True)
    return tmp_path, root


def test_good_zip_and_tar_extract(sandbox):
    tmp, root = sandbox
    extract(_zip(tmp / "archives/a.zip", [("pics/", b"", None), ("pics/a.png", b"A", None)]), "zip", root)
    tar = _tar(tmp / "archives/b.tar.gz", [("pics/b.png", b"B"), _link("pics/latest.png", "b.png")])
    extract(tar, "tar.gz", root)
    assert (root / "pics/a.png").read_bytes() == b"A"
    assert (root / "pics/b.png").read_bytes() == b"B"
    assert (root / "pics/latest.png").is_symlink() and (root / "pics/latest.png").read_bytes() == b"B"
    assert _tree(root) == ["pics", "pics/a.png", "pics/b.png", "pics/latest.png"]


HOSTILE_ZIPS = {
    "dotdot": [("ok.png", b"x", None), ("../evil.txt", b"pwned", None)],
    "nested-dotdot": [("a/../../evil.txt", b"pwned", None)],
    "backslash-dotdot": [("..\\evil.txt", b"pwned", None)],
    "absolute": [("/tmp/evil.txt", b"pwned", None)],
    "drive-letter": [("C:/evil.txt", b"pwned", None)],
    "symlink": [("escape", b"../../outside", stat.S_IFLNK | 0o777)],
    "fifo": [("pipe", b"", stat.S_IFIFO | 0o644)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIPS))
def test_hostile_zip_is_refused_and_nothing_written(sandbox, case):
    tmp, root = sandbox
    archive = _zip(tmp / "archives/evil.zip", HOSTILE_ZIPS[case])
    before = _tree(tmp)
    with pytest.raises(HarnessError, match="refusing to extract"):
        extract(archive, "zip", root)
    assert _tree(tmp) == before  # not even the harmless members, nor a staging directory


HOSTILE_TARS = {
    "dotdot": [("ok.png", b"x"), ("../evil.txt", b"pwned")],
    "absolute": [("/tmp/evil.txt", b"pwned")],
    "symlink-escape": [_link("up", "../../outside")],
    "symlink-absolute": [_link("etc", "/etc")],
    "symlink-then-write-through": [_link("sub/up", "../.."), ("sub/up/evil.txt", b"pwned")],
    "hardlink-escape": [_link("hard", "../outside.txt", tarfile.LNKTYPE)],
    "chardev": [_link("null", "", tarfile.CHRTYPE)],
    "fifo": [_link("pipe", "", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_is_refused_and_nothing_written(sandbox, case):
    tmp, root = sandbox
    (tmp / "jail" / "outside.txt").write_text("secret")
    archive = _tar(tmp / "archives/evil.tar.gz", HOSTILE_TARS[case])
    before = _tree(tmp)
    with pytest.raises(HarnessError, match="refusing to extract"):
        extract(archive, "tar.gz", root)
    assert _tree(tmp) == before
    assert (tmp / "jail" / "outside.txt").read_text() == "secret"


def test_symlink_chain_escaping_on_disk_is_refused(sandbox):
    """Each link looks inside the root on its own; resolved on disk, the second leaves it."""
    tmp, root = sandbox
    archive = _tar(tmp / "archives/chain.tar", [_link("d/l", ".."), _link("d/m", "l/.."), ("d/m/evil.txt", b"x")], "w")
    with pytest.raises(HarnessError, match="refusing to extract"):
        extract(archive, "tar", root)
    assert _tree(root) == [] and not (tmp / "jail" / "evil.txt").exists()


def test_truncated_archive_is_a_clear_error(sandbox):
    tmp, root = sandbox
    archive = _zip(tmp / "archives/a.zip", [("a.png", b"A" * 10_000, None)])
    archive.write_bytes(archive.read_bytes()[:5_000])
    with pytest.raises(HarnessError, match="not a valid zip archive"):
        extract(archive, "zip", root)
    assert _tree(root) == []


def test_archive_larger_than_free_space_is_refused_before_writing(sandbox):
    tmp, root = sandbox
    archive = tmp / "archives/bomb.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("bomb.png", b"tiny")
        bundle.filelist[0].file_size = 1 << 50  # the central directory claims 1 PiB
    with pytest.raises(HarnessError, match="unpacking needs .* GB but .* free"):
        extract(archive, "zip", root)
    assert _tree(root) == []


def test_tar_with_impossible_member_size_is_a_clear_error(sandbox):
    tmp, root = sandbox
    bogus = tarfile.TarInfo("bogus.png")
    bogus.size = 1 << 62
    archive = tmp / "archives/bogus.tar"
    archive.write_bytes(bogus.tobuf(format=tarfile.GNU_FORMAT))
    with pytest.raises(HarnessError, match="not a valid tar archive"):
        extract(archive, "tar", root)
    assert _tree(root) == []
