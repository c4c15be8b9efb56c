"""Atomic file writes: readers see the old file or the complete new one, never half.

Everything the harness leaves behind for a later run to trust (shards, result
tables, manifests, checkpoints) is written to a temporary name in the same
directory, flushed to disk and renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterator

from harness.errors import HarnessError

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
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
        if not make_parents and not target.parent.is_dir():
            raise FileNotFoundError(2, f"no folder {target.parent}")
        with atomic_path(target) as tmp:
            write(tmp)
    except OSError as error:
        raise HarnessError(f"cannot write {what}{target}: {error.strerror or error}") from None


def write_parquet_atomic(frame: "pd.DataFrame", target: str | Path) -> None:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
