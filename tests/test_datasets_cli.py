"""`harness datasets ...` end to end: a tiny dataset served from 127.0.0.1, Kodak, exit codes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from loopback_http import LoopbackServer, closed_port
from PIL import Image

from harness.cli import main
from harness.data.registry import DATASETS_DIR_ENV, STATE_FILE

REPO = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
role = "test"
description = "three generated images in a zip"
homepage = "https://example.org/tiny"
license = "CC0"
citation = "none"
count = 3
glob = "tiny/*.png"
[[files]]
url = "{url}"
filename = "{filename}"
archive = "{archive}"
sha256 = "{sha256}"
"""


def _harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=60)


def _png_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (shade, 255 - shade, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def registry_env(tmp_path: Path, monkeypatch):
    """A manifest directory, a data root and a web root served on 127.0.0.1."""
    manifests, root, www = tmp_path / "manifests", tmp_path / "data", tmp_path / "www"
    for directory in (manifests, www):
        directory.mkdir()
    monkeypatch.setenv(DATASETS_DIR_ENV, str(manifests))
    with LoopbackServer(www) as server:
        def publish(archive: bytes, filename: str = "tiny.zip", kind: str = "zip", sha256: str | None = None) -> None:
            (www / filename).write_bytes(archive)
            digest = hashlib.sha256(archive).hexdigest() if sha256 is None else sha256
            (manifests / "tiny.toml").write_text(
                TINY.format(url=server.url(filename), filename=filename, archive=kind, sha256=digest))
        yield server, publish, root, tmp_path


def _tiny_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for index in range(3):
            bundle.writestr(f"tiny/{index}.png", _png_bytes(40 * index))
        bundle.writestr("__MACOSX/tiny/._0.png", b"resource fork")
    return buffer.getvalue()


@pytest.mark.slow
def test_help_lists_subcommands_and_examples():
    top = _harness("--help")
    assert top.returncode == 0 and "datasets" in top.stdout
    sub = _harness("datasets", "fetch", "--help")
    assert sub.returncode == 0 and "examples:" in sub.stdout and "--root" in sub.stdout


@pytest.mark.slow
def test_usage_errors_exit_2(capsys):
    """The process exits 2 with a one-line error; the other usage errors take the same path (the
    parser's one-line ``error``), checked in this process."""
    result = _harness("nope")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") <= 1 and "error:" in result.stderr
    for args in (("datasets",), ("datasets", "fetch"), ("datasets", "verify", "kodak", "--bogus")):
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        assert exit_.value.code == 2, args
        err = capsys.readouterr().err
        assert err.strip().count("\n") <= 1 and "error:" in err, args


@pytest.mark.slow
def test_failure_is_one_line_exit_1_and_verbose_adds_traceback():
    result = _harness("datasets", "verify", "kodakk")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "unknown dataset 'kodakk'; known datasets: " in result.stderr
    verbose = _harness("--verbose", "datasets", "verify", "kodakk")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_verify_kodak_uses_vendored_copy(capsys, tmp_path: Path):
    assert main(["datasets", "verify", "kodak", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "kodak: 24 images verified"
    assert main(["datasets", "fetch", "kodak", "--root", str(tmp_path)]) == 0
    assert "vendored in" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_verify_lists_bad_kodak_files_and_exits_1(tmp_path: Path, monkeypatch, capsys):
    shutil.copytree(REPO / "datasets", tmp_path / "datasets", ignore=shutil.ignore_patterns("[!k]*.toml"))
    kodak = tmp_path / "datasets" / "kodak"
    (kodak / "kodim03.png").write_bytes(b"\x89PNG truncated")
    (kodak / "kodim17.png").unlink()
    monkeypatch.setenv(DATASETS_DIR_ENV, str(tmp_path / "datasets"))
    assert main(["datasets", "verify", "kodak"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"BAD {kodak / 'kodim03.png'}: sha256 mismatch",
                                         f"BAD {kodak / 'kodim17.png'}: missing"]
    assert captured.err.count("\n") == 1 and "kodak: 2 problem(s) among 24 images" in captured.err


def test_fetch_list_verify_roundtrip(registry_env, capsys):
    server, publish, root, _ = registry_env
    publish(_tiny_zip())
    assert main(["datasets", "list", "--root", str(root)]) == 0
    assert "tiny  test  3       no" in capsys.readouterr().out

    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 0
    assert f"tiny: 3 images in {root / 'tiny'}" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "tiny" / "tiny").iterdir()) == ["0.png", "1.png", "2.png"]
    assert (root / "tiny" / STATE_FILE).is_file() and not (root / "tiny" / ".downloads").exists()

    assert main(["datasets", "list", "--root", str(root)]) == 0
    assert "tiny  test  3       yes" in capsys.readouterr().out
    assert main(["datasets", "verify", "tiny", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "tiny: 3 images verified"

    requests = len(server.behaviour.requests)
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 0
    assert "already fetched" in capsys.readouterr().out and len(server.behaviour.requests) == requests

    (root / "tiny" / "tiny" / "1.png").write_bytes(_png_bytes(200))
    (root / "tiny" / "tiny" / "extra.png").write_bytes(_png_bytes(9))
    assert main(["datasets", "verify", "tiny", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "1.png: sha256 mismatch" in out and "extra.png: not in the dataset" in out


def test_data_root_from_environment(registry_env, monkeypatch, capsys):
    _, publish, root, _ = registry_env
    publish(_tiny_zip())
    monkeypatch.setenv("HARNESS_DATA", str(root))
    assert main(["datasets", "fetch", "tiny"]) == 0
    assert (root / "tiny" / STATE_FILE).is_file()


def test_fetch_resumes_after_interruption(registry_env, capsys):
    server, publish, root, _ = registry_env
    archive = _tiny_zip()
    publish(archive)
    server.drop("tiny.zip", after=len(archive) // 2)
    assert main(["datasets", "fetch", "tiny", "--root", str(root), "--retries", "0"]) == 1
    assert "run the same command again to resume" in capsys.readouterr().err
    assert (root / "tiny" / ".downloads" / "tiny.zip.part").stat().st_size == len(archive) // 2
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 0
    assert f"resumed after {len(archive) // 2} bytes" in capsys.readouterr().out
    assert server.behaviour.requests[-1][1] == f"bytes={len(archive) // 2}-"


def test_fetch_checksum_mismatch_exits_1_and_keeps_corrupt_copy(registry_env, capsys):
    _, publish, root, _ = registry_env
    publish(_tiny_zip(), sha256="f" * 64)
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    downloads = root / "tiny" / ".downloads"
    assert sorted(p.name for p in downloads.iterdir()) == ["tiny.zip.corrupt"]
    assert not (root / "tiny" / "tiny").exists()


def test_fetch_unreachable_url(tmp_path: Path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}/tiny.zip"
    (tmp_path / "tiny.toml").write_text(TINY.format(url=url, filename="tiny.zip", archive="zip", sha256="unpublished"))
    monkeypatch.setenv(DATASETS_DIR_ENV, str(tmp_path))
    assert main(["datasets", "fetch", "tiny", "--root", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and url in err and "--root DIR" in err
    assert not (tmp_path / "data" / "tiny" / ".downloads" / "tiny.zip").exists()


def test_fetch_hostile_tar_writes_nothing_outside_root(registry_env, capsys):
    _, publish, root, tmp = registry_env
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name in ("tiny/0.png", "../../escaped.png"):
            data = _png_bytes(1)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    publish(buffer.getvalue(), filename="tiny.tar.gz", kind="tar.gz")
    def outside_root() -> list[Path]:
        return sorted(p for p in tmp.rglob("*") if root not in p.parents and p != root)

    before = outside_root()
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 1
    assert "refusing to extract member '../../escaped.png'" in capsys.readouterr().err
    assert outside_root() == before
    assert sorted(p.name for p in (root / "tiny").iterdir()) == [".downloads"]


def test_fetch_wrong_image_count_is_reported(registry_env, capsys):
    _, publish, root, _ = registry_env
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("tiny/0.png", _png_bytes(0))
    publish(buffer.getvalue())
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "1 images match 'tiny/*.png'" in err and "expected 3" in err


def test_manual_dataset_explains_where_to_put_it(tmp_path: Path, capsys):
    assert main(["datasets", "fetch", "liu4k", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot be downloaded automatically" in err and str(tmp_path / "liu4k") in err


@pytest.mark.slow
def test_list_real_registry_without_local_data():
    result = _harness("datasets", "list", env={"HARNESS_DATA": "/nonexistent-harness-root"})
    assert result.returncode == 0 and "coco2017-train" in result.stdout and "118287" in result.stdout


def test_dataset_placed_by_hand_is_counted_then_hashes_recorded(tmp_path: Path, monkeypatch, capsys):
    manual = TINY.split("[[files]]")[0] + 'manual = "unpack the archive under <data root>/tiny/"\n'
    (tmp_path / "tiny.toml").write_text(manual)
    monkeypatch.setenv(DATASETS_DIR_ENV, str(tmp_path))
    root = tmp_path / "data"
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 1
    assert f"unpack the archive under {root / 'tiny'}/" in capsys.readouterr().err

    (root / "tiny" / "tiny").mkdir(parents=True)
    for index in range(3):
        (root / "tiny" / "tiny" / f"{index}.png").write_bytes(_png_bytes(index))
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 0
    assert "3 images placed in" in capsys.readouterr().out
    assert main(["datasets", "verify", "tiny", "--root", str(root)]) == 0
    assert "no published checksums, sha256 of each recorded" in capsys.readouterr().out
    assert main(["datasets", "verify", "tiny", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "tiny: 3 images verified"
    (root / "tiny" / "tiny" / "2.png").unlink()
    assert main(["datasets", "verify", "tiny", "--root", str(root)]) == 1
    assert "2.png: missing" in capsys.readouterr().out


def test_archive_downloaded_by_hand_is_used_offline(tmp_path: Path, monkeypatch, capsys):
    archive = _tiny_zip()
    url = f"http://127.0.0.1:{closed_port()}/tiny.zip"
    digest = hashlib.sha256(archive).hexdigest()
    (tmp_path / "tiny.toml").write_text(TINY.format(url=url, filename="tiny.zip", archive="zip", sha256=digest))
    monkeypatch.setenv(DATASETS_DIR_ENV, str(tmp_path))
    root = tmp_path / "data"
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 1
    assert str(root / "tiny" / ".downloads" / "tiny.zip") in capsys.readouterr().err
    (root / "tiny" / ".downloads" / "tiny.zip").write_bytes(archive)
    assert main(["datasets", "fetch", "tiny", "--root", str(root)]) == 0
    assert "using the file already in" in capsys.readouterr().out
    assert len(list((root / "tiny" / "tiny").glob("*.png"))) == 3
