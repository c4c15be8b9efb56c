"""Atomic file writes: readers see the old file or the complete new one, never half.

Everything the harness leaves behind for a later run to trust (shards, result
tables, manifests, checkpoints) is written to a temporary name in the same
directory, flushed to disk and renamed over the target. The file gets the mode
the umask gives (as ``open`` would), not mkstemp's 0600, so other users of a
shared disk can read it. A symlink keeps pointing where it did: its target is
what gets replaced. A FIFO or a device (``-o /dev/null``) is written in place,
never replaced by a regular file.

Commands check their outputs before any work (:func:`check_output`): an output
that is one of the command's inputs, or a folder the harness cannot write in, is
a one-line error before a model loads or an image is coded.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterator, Mapping

from harness.errors import HarnessError

if TYPE_CHECKING:
    import pandas as pd


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``os.umask`` sets
    it, and another thread creating a file between the two calls would get the wrong mode)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


def is_special(path: Path) -> bool:
    """An existing FIFO, device or socket (symlinks followed): written in place, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: by device and inode when both exist (so through
    symlinks and hard links), else by their resolved paths."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output(out: Path, inputs: Mapping[str, Path], *, make_parents: bool = False) -> None:
    """Refuse, in one line and before any work, an output file that is one of the command's
    ``inputs`` (``{"input image": path, ...}``) or that cannot be written: a folder, or a file
    in a folder that is missing (unless ``make_parents``: the writer makes it) or not writable."""
    out = Path(out)
    for what, path in inputs.items():
        if same_file(out, path):
            raise HarnessError(f"output {out} is the same file as the {what} {path}: writing it would destroy "
                               "it; choose another output file")
    if out.is_dir():
        raise HarnessError(f"cannot write {out}: it is a folder")
    if is_special(out):
        return
    folder = Path(os.path.realpath(out)).parent  # a symlink's target is written, beside it
    if not make_parents and not folder.exists():
        raise HarnessError(f"cannot write {out}: no folder {folder}")
    problem = _folder_problem(folder)
    if problem:
        raise HarnessError(f"cannot write {out}: {problem}")


def check_folder(folder: Path) -> None:
    """Refuse, in one line, an output folder in which no file can be created (or, when it is
    missing, no folder made)."""
    problem = _folder_problem(Path(folder))
    if problem:
        raise HarnessError(problem)


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot receive files, or None. The nearest folder that exists is probed
    by creating and removing a file in it (``os.access`` says yes to root on a read-only
    mount); nothing is made, so a command refused later leaves no empty folder behind."""
    existing = folder
    while not existing.exists():  # the missing folders would be made in this one
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".harness-probe-", dir=existing)
    except OSError as error:
        return f"cannot create files in {existing} ({error.strerror or error})"
    os.close(fd)
    os.unlink(probe)
    return None


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` if the block succeeds.
    A FIFO or device ``target`` gets the temporary file's bytes copied into it instead: writers
    such as Pillow seek, which a FIFO cannot."""
    target = Path(target)
    if is_special(target):
        with tempfile.TemporaryDirectory(prefix="harness-") as scratch:
            tmp_path = Path(scratch) / target.name
            yield tmp_path
            with open(tmp_path, "rb") as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
        return
    final = Path(os.path.realpath(target))
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, file_mode())
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_open(target: str | Path, mode: str = "w") -> Iterator[IO]:
    """``open()`` for writing whose result appears at ``target`` only when complete."""
    with atomic_path(target) as tmp, open(tmp, mode) as handle:
        yield handle


def write_atomic(target: str | Path, write: Callable[[Path], None], *, what: str = "",
                 make_parents: bool = True) -> None:
    """``write(tmp)`` a file beside ``target`` and rename it over ``target``; an OSError
    (missing folder, full disk, no permission) becomes a one-line :class:`HarnessError`."""
    target = Path(target)
    try:
        if not make_parents and not Path(os.path.realpath(target)).parent.is_dir():
            raise FileNotFoundError(2, f"no folder {target.parent}")
        with atomic_path(target) as tmp:
            write(tmp)
    except OSError as error:
        raise HarnessError(f"cannot write {what}{target}: {error.strerror or error}") from None


def write_parquet_atomic(frame: "pd.DataFrame", target: str | Path) -> None:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
