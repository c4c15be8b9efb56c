"""Streaming HTTP(S) download that survives dropped connections.

Bytes go to ``<file>.part``; an interrupted transfer is resumed with an HTTP
``Range: bytes=N-`` request (RFC 9110 §14), either by the next retry within
the same call or by the next ``harness datasets fetch``. The file only takes its
final name once it is complete and, where a SHA-256 is published, matches it;
a mismatching file is moved aside to ``<file>.corrupt``.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from harness import __version__
from harness.errors import HarnessError
from harness.hashing import sha256_file

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIABLE_RANGE = re.compile(r"bytes\s+\*/(\d+)")
_TRANSIENT = (408, 429)  # with every 5xx: worth asking again
_USER_AGENT = f"harness/{__version__} (dataset fetch)"
# Raised while reading a response whose connection went away mid-body.
_INTERRUPTIONS = (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError, OSError)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    resumed_from: int  # bytes of a .part file already on disk before this call
    reused: bool = False  # dest existed already (earlier fetch or manual download); nothing requested


class _Interrupted(Exception):
    """The body ended early; the bytes received so far are kept in the .part file."""


def _manual_hint(url: str, dest: Path) -> str:
    return (
        f"download {url} by hand and save it as {dest}, or unpack the dataset under a directory "
        f"of your choice and pass --root DIR"
    )


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def _total_size(response, offset: int) -> int | None:
    """Size of the whole file, from Content-Range for a 206 and Content-Length for a 200."""
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        return None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One request: append the rest of ``url`` to ``part`` (or restart it when the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            match = _UNSATISFIABLE_RANGE.match(error.headers.get("Content-Range", "") if error.headers else "")
            if match and int(match.group(1)) == offset:
                return  # the .part file already holds every byte
            part.unlink()  # longer than the remote file: it cannot be a prefix of it
            raise _Interrupted(f"{url} is shorter than the partial download; restarting") from None
        raise
    with response:
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise HarnessError(f"{url}: server answered Range bytes={offset}- with Content-Range "
                                   f"{response.headers.get('Content-Range')!r}")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # server ignored Range: start over
        total = _total_size(response, offset)
        with open(part, mode) as sink, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=None if progress else True, leave=False,
        ) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except _INTERRUPTIONS as error:
                    raise _Interrupted(f"connection lost ({type(error).__name__})") from None
                if not chunk:
                    break
                sink.write(chunk)
                bar.update(len(chunk))
        received = part.stat().st_size
        if total is not None and received < total:
            raise _Interrupted(f"connection closed after {received} of {total} bytes")
        if total is not None and received > total:
            part.unlink()
            raise _Interrupted(f"received {received} bytes, more than the announced {total}; restarting")


def _finish(url: str, part: Path, dest: Path, expected: str | None) -> str:
    digest = sha256_file(part)
    if expected is not None and digest != expected:
        corrupt = dest.with_name(dest.name + ".corrupt")
        os.replace(part, corrupt)
        raise HarnessError(
            f"checksum mismatch for {url}: expected sha256 {expected}, got {digest}; moved to {corrupt}"
        )
    os.replace(part, dest)
    return digest


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    *,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Downloaded:
    """Fetch ``url`` to ``dest`` and return its SHA-256.

    ``sha256`` (lowercase hex) is checked when given. An existing ``dest`` (an
    earlier download, or one made by hand) is used without a request and
    checked like a fresh one. ``retries`` is how many times an interrupted
    transfer is resumed, or a 5xx/429 answer retried (after ``backoff``·2^k
    seconds), within this call; a connection that cannot be opened at all fails
    at once with a message naming the URL.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if sha256 is None:
            return Downloaded(dest, sha256_file(dest), 0, reused=True)
        part.unlink(missing_ok=True)
        os.replace(dest, part)  # re-checked (and moved aside on mismatch) below
        return Downloaded(dest, _finish(url, part, dest, sha256), 0, reused=True)
    resumed_from = part.stat().st_size if part.exists() else 0
    attempt = 0
    while True:
        try:
            _transfer(url, part, timeout, progress)
            break
        except _Interrupted as error:
            kept = part.stat().st_size if part.exists() else 0
            if attempt >= retries:
                raise HarnessError(
                    f"download of {url} interrupted: {error}; {kept} bytes kept in {part}, "
                    f"run the same command again to resume"
                ) from None
            attempt += 1
        except urllib.error.HTTPError as error:
            if (error.code in _TRANSIENT or error.code >= 500) and attempt < retries:
                attempt += 1
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            raise HarnessError(f"cannot download {url}: HTTP {error.code} {error.reason}; "
                               f"{_manual_hint(url, dest)}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            raise HarnessError(f"cannot download {url}: {reason}; {_manual_hint(url, dest)}") from None
    return Downloaded(dest, _finish(url, part, dest, sha256), resumed_from)
