"""What every codec in the leaderboard is: a class that turns an 8-bit RGB image
into a real bitstream at one point of its quality ladder and back.

A codec is built from its configuration (one table of ``codecs/<id>.toml``,
see :mod:`harness.codecs.config`). ``probe()`` runs once per process and
either returns the version string recorded with every result row or raises
:class:`CodecUnavailable` with the reason (binary missing, encoder not compiled
in, ...), which the run summary lists instead of crashing.

Classical codecs are stateless: the runner builds one per cell inside a Ray
task. A learned codec is another subclass whose constructor loads its
checkpoint (``probe`` returning the checkpoint hash, ``params`` its parameter
count), to be held by a Ray actor so that the model loads once per worker.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from harness.errors import HarnessError
from harness.process_memory import process_peak


class CodecUnavailable(HarnessError):
    """The codec cannot run on this machine; the message says why."""


class CodecError(HarnessError):
    """One encode or decode failed (crash, timeout, bad bitstream)."""


class Codec(ABC):
    """Base class. Subclasses set ``id`` and implement ``probe``, ``encode``, ``decode``."""

    id: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        self.timeout_s = float(self.settings.get("timeout_s", 300.0))
        self.tile: int | None = None  # the tile side the last encode or decode ran on (learned codecs)
        self.tool_peak = 0  # the largest peak RSS of a binary run_tool ran since it was last reset (bytes)
        self.subject = "image"  # what the codec's one-line errors call the image (the leaderboard: its file name)

    @abstractmethod
    def probe(self) -> str:
        """Return the version string of everything that shapes the bitstream, or
        raise :class:`CodecUnavailable`."""

    @abstractmethod
    def encode(self, rgb: np.ndarray, quality: float, workdir: Path) -> bytes:
        """Compress an H×W×3 uint8 image at ladder point ``quality``; return the bitstream."""

    @abstractmethod
    def decode(self, bitstream: bytes, height: int, width: int, workdir: Path) -> np.ndarray:
        """Reconstruct the H×W×3 uint8 image from the bitstream alone (plus its size)."""

    @property
    def params(self) -> float | None:
        """Number of model parameters (learned codecs); ``None`` for classical codecs."""
        return None

    @property
    def device(self) -> str | None:
        """Where the codec computes when not on the worker's CPU (e.g. ``cuda: <name>``)."""
        return None

    @property
    def precision(self) -> str | None:
        """The precision learned codecs run their transforms in (fp32, bf16); ``None`` for classical codecs."""
        return None

    def version_at(self, version: str, quality: float) -> str:
        """The version recorded for one ladder point (learned codecs add that point's checkpoint)."""
        return version

    def estimates(self, rgb: np.ndarray, quality: float) -> dict[str, float]:
        """What the codec's own model says of the image, as result columns (learned codecs: the
        bits it expects, ``est_bits`` and ``pad_bits``, and its networks' seconds, ``enc_net_s``
        and ``dec_net_s``); classical codecs have none."""
        return {}

    def prepare(self, quality: float) -> None:
        """Load whatever a ladder point needs before the encode timer starts."""

    def run_tool(self, args: Sequence[str | os.PathLike], what: str) -> subprocess.CompletedProcess:
        """Run an external binary with an argument list (no shell) under the codec's timeout; its
        peak RSS raises :attr:`tool_peak`."""
        argv = [os.fspath(a) for a in args]
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
            except OSError as error:
                raise CodecError(f"{self.id} {what} could not start {argv[0]}: {error.strerror}") from None
            status, peak = _wait(process, self.timeout_s)
            if status is None:
                raise CodecError(f"{self.id} {what} timed out after {self.timeout_s:g} s")
            self.tool_peak = max(self.tool_peak, peak)
            stdout.seek(0)
            stderr.seek(0)
            done = subprocess.CompletedProcess(argv, status, stdout.read(), stderr.read())
        if done.returncode != 0:
            tail = _last_line(done.stderr) or _last_line(done.stdout) or "no output"
            raise CodecError(f"{self.id} {what} failed (exit {done.returncode}): {tail}")
        return done


def _wait(process: subprocess.Popen, timeout_s: float) -> tuple[int | None, int]:
    """(exit status, or None when killed at ``timeout_s``; peak RSS in bytes) of ``process``. The
    peak is the binary's own high-water mark (``VmHWM``), read every 10 ms while it runs: only its
    last 10 ms can be missed. (``wait4``'s ru_maxrss would count the forked worker's RSS too.)"""
    deadline, peak = time.monotonic() + timeout_s, 0
    while process.poll() is None:
        peak = max(peak, process_peak(process.pid) or 0)
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            return None, peak
        time.sleep(0.01)
    return process.returncode, peak


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
