"""The atomic writer keeps what it must not replace: file modes as the umask says, FIFOs,
devices and symlinks; and the output checks that run before any work."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pandas as pd
import pytest

from harness.atomic import (atomic_open, check_folder, check_output, umask, write_atomic,
                            write_parquet_atomic)
from harness.errors import HarnessError


@pytest.fixture(params=[0o022, 0o007])
def mask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_umask_is_read_without_changing_it(mask):
    assert umask() == mask
    assert umask() == mask


def test_files_get_the_mode_the_umask_gives(mask, tmp_path):
    """New files and replaced ones (even a 0600 one) get 0o666 & ~umask, as open() gives,
    not mkstemp's 0600."""
    expected = 0o666 & ~mask
    fresh, text, table = tmp_path / "fresh.bin", tmp_path / "notes.md", tmp_path / "results.parquet"
    old = tmp_path / "old.bin"
    old.write_bytes(b"old")
    old.chmod(0o600)
    write_atomic(fresh, lambda tmp: tmp.write_bytes(b"new"))
    write_atomic(old, lambda tmp: tmp.write_bytes(b"new"))
    with atomic_open(text) as handle:
        handle.write("# report\n")
    write_parquet_atomic(pd.DataFrame({"a": [1]}), table)
    for path in (fresh, old, text, table):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert old.read_bytes() == b"new"


def test_a_fifo_is_written_in_place(tmp_path):
    """The bytes go into the FIFO (a reader gets them); no regular file takes its place."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = os.urandom(200_000)  # more than a pipe buffer: the reader must drain it
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, lambda tmp: tmp.write_bytes(data))
    reader.join(timeout=60)  # not a timing check: a replaced FIFO would leave the reader blocked forever
    assert not reader.is_alive() and received == [data]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_character_device_stays_a_device(null_device):
    """A /dev/null made in tmp_path (never the machine's own): written to, not replaced."""
    write_atomic(null_device, lambda tmp: tmp.write_bytes(b"x" * 1000))
    assert stat.S_ISCHR(os.lstat(null_device).st_mode)
    assert os.lstat(null_device).st_rdev == os.makedev(1, 3)


def test_a_symlink_is_kept_and_its_target_written(tmp_path):
    """The link keeps pointing where it did (into another folder); the target gets the bytes."""
    (tmp_path / "store").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "store" / "results.parquet"
    target.write_bytes(b"old")
    link = tmp_path / "links" / "results.parquet"
    link.symlink_to(target)
    write_atomic(link, lambda tmp: tmp.write_bytes(b"new"))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["results.parquet"]  # no temporary left
    dangling = tmp_path / "links" / "card.json"
    dangling.symlink_to(tmp_path / "store" / "card.json")
    write_atomic(dangling, lambda tmp: tmp.write_text("{}"))
    assert dangling.is_symlink() and (tmp_path / "store" / "card.json").read_text() == "{}"


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_an_output_that_is_an_input_is_refused(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"pixels")
    link, hard = tmp_path / "link.png", tmp_path / "hard.png"
    link.symlink_to(image)
    os.link(image, hard)
    for out in (image, link, hard, tmp_path / "." / "a.png"):
        with pytest.raises(HarnessError) as error:
            check_output(out, {"model": tmp_path / "m.pt", "input image": image})
        assert f"output {out} is the same file as the input image {image}" in _one_line(error)
    check_output(tmp_path / "a.3dmw", {"input image": image})  # another file: fine
    assert image.read_bytes() == b"pixels"


def test_unwritable_outputs_are_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HarnessError) as error:
        check_output(tmp_path, {})
    assert "it is a folder" in _one_line(error)
    with pytest.raises(HarnessError) as error:
        check_output(blocker / "x.3dmw", {})
    assert f"{blocker} is a file, not a folder" in _one_line(error)
    with pytest.raises(HarnessError) as error:
        check_output(tmp_path / "missing" / "x.3dmw", {})
    assert "no folder" in _one_line(error)
    check_output(tmp_path / "missing" / "deeper" / "m.pt", {}, make_parents=True)
    assert not (tmp_path / "missing").exists()  # the check makes nothing
    with pytest.raises(HarnessError) as error:
        check_folder(blocker / "sub" / "shards")
    assert f"{blocker} is a file, not a folder" in _one_line(error)


def test_a_folder_that_refuses_files_is_found_by_probing():
    """Root passes os.access on anything: the check creates a file to find out. /sys refuses
    new files to root and everyone else alike."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys here")
    with pytest.raises(HarnessError) as error:
        check_output(Path("/sys/kernel/x.3dmw"), {})
    assert "cannot create files in /sys/kernel" in _one_line(error)
    with pytest.raises(HarnessError) as error:
        check_folder(Path("/sys/kernel/run/reports"))
    assert "cannot create files in /sys/kernel" in _one_line(error)
