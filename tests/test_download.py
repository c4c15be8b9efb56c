"""Downloads against a real HTTP server on 127.0.0.1: checksum, resume, failures."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from loopback_http import LoopbackServer, closed_port

from harness.data.download import download
from harness.errors import HarnessError

SIZE = 300_000


@pytest.fixture()
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    payload = os.urandom(SIZE)
    (root / "blob.bin").write_bytes(payload)
    with LoopbackServer(root) as server:
        yield server, payload, hashlib.sha256(payload).hexdigest(), tmp_path / "out"


def test_download_checks_published_checksum(served):
    server, payload, digest, out = served
    result = download(server.url("blob.bin"), out / "blob.bin", digest, progress=False)
    assert result.sha256 == digest and result.resumed_from == 0
    assert (out / "blob.bin").read_bytes() == payload
    assert not (out / "blob.bin.part").exists()


def test_checksum_mismatch_moves_file_aside(served):
    server, payload, _, out = served
    with pytest.raises(HarnessError, match="checksum mismatch for http://127.0.0.1") as error:
        download(server.url("blob.bin"), out / "blob.bin", "0" * 64, progress=False)
    assert "blob.bin.corrupt" in str(error.value)
    assert not (out / "blob.bin").exists() and not (out / "blob.bin.part").exists()
    assert (out / "blob.bin.corrupt").read_bytes() == payload


def test_unreachable_url_names_url_and_suggests_root(tmp_path: Path):
    url = f"http://127.0.0.1:{closed_port()}/archive.zip"
    with pytest.raises(HarnessError) as error:
        download(url, tmp_path / "archive.zip", progress=False)
    message = str(error.value)
    assert url in message and "--root" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_missing_file_reports_http_status(served):
    server, _, _, out = served
    with pytest.raises(HarnessError, match=r"cannot download .*/nothing.zip: HTTP 404"):
        download(server.url("nothing.zip"), out / "nothing.zip", progress=False)
    assert not (out / "nothing.zip").exists() and not (out / "nothing.zip.part").exists()


def test_interrupted_download_resumes_on_next_call(served):
    server, payload, digest, out = served
    server.drop("blob.bin", after=100_000)
    with pytest.raises(HarnessError, match="interrupted.*run the same command again to resume"):
        download(server.url("blob.bin"), out / "blob.bin", digest, retries=0, progress=False)
    part = out / "blob.bin.part"
    assert part.stat().st_size == 100_000 and not (out / "blob.bin").exists()

    result = download(server.url("blob.bin"), out / "blob.bin", digest, retries=0, progress=False)
    assert result.resumed_from == 100_000
    assert server.behaviour.requests[-1] == ("/blob.bin", "bytes=100000-")
    assert (out / "blob.bin").read_bytes() == payload and not part.exists()


def test_dropped_connection_is_resumed_within_one_call(served):
    server, payload, digest, out = served
    server.drop("blob.bin", after=50_000, times=2)
    download(server.url("blob.bin"), out / "blob.bin", digest, retries=3, progress=False)
    assert [rng for _, rng in server.behaviour.requests] == [None, "bytes=50000-", "bytes=100000-"]
    assert (out / "blob.bin").read_bytes() == payload


def test_server_ignoring_range_restarts_from_zero(served):
    server, payload, digest, out = served
    out.mkdir()
    (out / "blob.bin.part").write_bytes(b"stale bytes from another file")
    server.behaviour.ignore_range = True
    download(server.url("blob.bin"), out / "blob.bin", digest, progress=False)
    assert (out / "blob.bin").read_bytes() == payload


def test_complete_part_file_is_finished_after_416(served):
    server, payload, digest, out = served
    out.mkdir()
    (out / "blob.bin.part").write_bytes(payload)
    download(server.url("blob.bin"), out / "blob.bin", digest, progress=False)
    assert (out / "blob.bin").read_bytes() == payload


def test_existing_file_is_checked_not_downloaded_again(served):
    server, payload, digest, out = served
    out.mkdir()
    (out / "blob.bin").write_bytes(payload)
    assert download(server.url("blob.bin"), out / "blob.bin", digest, progress=False).reused
    assert server.behaviour.requests == []
    (out / "blob.bin").write_bytes(payload[:-1] + bytes([payload[-1] ^ 0xFF]))  # b"!" was the last byte 1 in 256 runs
    with pytest.raises(HarnessError, match="checksum mismatch"):
        download(server.url("blob.bin"), out / "blob.bin", digest, progress=False)
    assert (out / "blob.bin.corrupt").exists() and not (out / "blob.bin").exists()


def test_server_errors_are_retried_then_reported(served):
    server, payload, digest, out = served
    server.behaviour.unavailable = 2
    download(server.url("blob.bin"), out / "blob.bin", digest, retries=2, backoff=0, progress=False)
    assert (out / "blob.bin").read_bytes() == payload and len(server.behaviour.requests) == 3

    server.behaviour.unavailable = 5
    with pytest.raises(HarnessError, match="HTTP 503"):
        download(server.url("blob.bin"), out / "again.bin", digest, retries=1, backoff=0, progress=False)
