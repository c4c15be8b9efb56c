"""Manifests, data root resolution and the image lists other stages consume."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from harness.data import registry
from harness.errors import HarnessError
from harness.hashing import sha256_file

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {
    "kodak": ("test", 24),
    "tecnick": ("test", 100),
    "clic2021-test": ("test", 60),
    "clic2020-professional-valid": ("test", 41),
    "clic-train": ("train", 1633),
    "liu4k": ("train", 1600),
    "coco2017-train": ("train", 118287),
}

MINIMAL = """
name = "{name}"
role = "test"
description = "d"
homepage = "https://example.org/"
license = "l"
citation = "c"
count = 2
glob = "*.png"
[[files]]
url = "https://example.org/x.zip"
filename = "x.zip"
archive = "zip"
sha256 = "unpublished"
"""


def test_every_manifest_in_the_repository_is_valid():
    manifests = {manifest.name: manifest for manifest in registry.load_all()}
    assert {name: (m.role, m.count) for name, m in manifests.items()} == EXPECTED
    for manifest in manifests.values():
        assert manifest.license and manifest.citation and manifest.homepage
        assert manifest.files or manifest.vendored or manifest.manual
        for remote in manifest.files:
            assert remote.url.startswith("http") and remote.archive == "zip"


def test_vendored_kodak_matches_published_sums(kodak_dir: Path):
    kodak = registry.load_manifest("kodak")
    assert kodak.vendored == REPO / "datasets" / "kodak"
    published = dict(line.split()[::-1] for line in (kodak_dir / "SHA256SUMS").read_text().splitlines())
    assert dict(kodak.images) == published
    assert {path.name: sha256_file(path) for path in registry.dataset_images("kodak")} == published


def test_kodak_resolves_to_vendored_copy_whatever_the_root(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(registry.DATA_ROOT_ENV, str(tmp_path))
    images = registry.dataset_images("kodak", root=tmp_path / "elsewhere")
    assert len(images) == 24 and all(path.parent == REPO / "datasets" / "kodak" for path in images)
    assert images == sorted(images)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(HarnessError) as error:
        registry.load_manifest("kodakk")
    message = str(error.value)
    assert "unknown dataset 'kodakk'" in message and "kodak" in message and "tecnick" in message
    with pytest.raises(HarnessError, match="unknown dataset"):
        registry.dataset_images("../datasets/kodak")


def test_data_root_precedence(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(registry.DATA_ROOT_ENV, raising=False)
    assert registry.data_root() == tmp_path / "home" / ".cache" / "harness"
    monkeypatch.setenv(registry.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert registry.data_root() == tmp_path / "env"
    assert registry.data_root(tmp_path / "flag") == tmp_path / "flag"


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda text: text.replace('role = "test"', 'role = "dev"'), "role must be one of"),
        (lambda text: text.replace("count = 2", "count = -1"), "count must be positive"),
        (lambda text: text.replace("count = 2", 'count = "2"'), "'count' must be a int"),
        (lambda text: text.replace('license = "l"\n', ""), "missing field 'license'"),
        (lambda text: text.replace('"unpublished"', '"abc"'), "sha256 must be 64 lowercase hex"),
        (lambda text: text.replace('archive = "zip"', 'archive = "rar"'), "archive must be one of"),
        (lambda text: text.replace('"x.zip"\narchive', '"../x.zip"\narchive'), "plain file name"),
        (lambda text: text.replace('name = "broken"', 'name = "other"'), "must match the file name"),
        (lambda text: text + "\n[oops", "invalid TOML"),
    ],
)
def test_invalid_manifest_is_rejected_naming_file_and_field(tmp_path: Path, edit, complaint):
    (tmp_path / "broken.toml").write_text(edit(MINIMAL.format(name="broken")))
    with pytest.raises(HarnessError, match=complaint) as error:
        registry.load_manifest("broken", tmp_path)
    assert "broken.toml" in str(error.value)


def test_manifest_directory_from_environment(tmp_path: Path, monkeypatch):
    (tmp_path / "tiny.toml").write_text(MINIMAL.format(name="tiny"))
    monkeypatch.setenv(registry.DATASETS_DIR_ENV, str(tmp_path))
    assert registry.known_names() == ["tiny"]


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)


def test_dataset_images_of_a_fetched_dataset(tmp_path: Path):
    manifests, root = tmp_path / "manifests", tmp_path / "root"
    manifests.mkdir()
    (manifests / "tiny.toml").write_text(MINIMAL.format(name="tiny"))
    with pytest.raises(HarnessError, match=r"not present in .*harness datasets fetch tiny --root"):
        registry.dataset_images("tiny", root, manifests)
    _png(root / "tiny" / "b.png")
    with pytest.raises(HarnessError, match="has 1 images, expected 2"):
        registry.dataset_images("tiny", root, manifests)
    _png(root / "tiny" / "a.png")
    _png(root / "tiny" / "__MACOSX" / "._a.png")
    assert registry.dataset_images("tiny", root, manifests) == [root / "tiny/a.png", root / "tiny/b.png"]


def test_folder_spec(tmp_path: Path):
    _png(tmp_path / "imgs" / "z.png")
    _png(tmp_path / "imgs" / "sub" / "a.PNG")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    _png(tmp_path / "imgs" / ".hidden" / "x.png")
    assert registry.dataset_images(f"folder:{tmp_path / 'imgs'}") == [
        tmp_path / "imgs/sub/a.PNG", tmp_path / "imgs/z.png"]
    with pytest.raises(HarnessError, match="no such directory"):
        registry.dataset_images(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="no image files"):
        registry.dataset_images(f"folder:{tmp_path / 'empty'}")
