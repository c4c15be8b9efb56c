"""`harness prepare-data` end to end on a real local Ray instance: bad input,
determinism across worker counts, resume, the 480px acceptance run and the
reading side used by train-sweep."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from harness.cli import main
from harness.data import stream
from harness.data.manifest import ShardManifest, read_manifest
from harness.data.recipe import PatchRecipe
from harness.data.shards import PrepareConfig, run
from harness.errors import HarnessError

SMALL = PatchRecipe(patch=64, resize=None, patches_per_image=2)


def _config(sources, out, recipe=SMALL, **kwargs) -> PrepareConfig:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("shard_patches", 4)
    return PrepareConfig(sources=tuple(f"folder:{s}" for s in sources), out=out, recipe=recipe, **kwargs)


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _samples(out: Path, split: str = "train") -> list[dict]:
    urls = sorted(str(p) for p in out.glob(f"{split}-*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"))


def _shard_hashes(manifest: ShardManifest) -> dict[str, str]:
    return {record.name: record.sha256 for record in manifest.shards}


@pytest.fixture(scope="module")
def photo_subset(photos_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for photo in sorted(photos_dir.glob("*.png"))[:6]:
        (folder / photo.name).symlink_to(photo)
    return folder


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """One of every kind of file a real corpus throws at the tool."""
    folder = tmp_path_factory.mktemp("odd")
    good = Image.fromarray(_noise(120, 160, 1))
    good.save(folder / "good.png")
    shutil.copy(folder / "good.png", folder / "sub_copy_of_good.png")
    data = io.BytesIO()
    Image.fromarray(_noise(120, 160, 2)).save(data, "PNG")
    (folder / "truncated.png").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    data = io.BytesIO()
    Image.fromarray(_noise(120, 160, 3)).save(data, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    (folder / "notes.jpg").write_text("this is not a JPEG\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "README.txt").write_text("not an image suffix: not even listed\n")
    Image.fromarray(_noise(120, 160, 4)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray((np.arange(120 * 160).reshape(120, 160) * 3).astype(np.uint16)).save(folder / "gray16.png")
    Image.fromarray(np.dstack([_noise(120, 160, 5), np.full((120, 160, 1), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(_noise(120, 160, 6)).convert("P").save(folder / "palette.png")
    Image.fromarray(_noise(120, 160, 7)).convert("L").save(folder / "gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    Image.fromarray(_noise(100, 180, 8)).save(folder / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(_noise(40, 50, 9)).save(folder / "tiny.png")
    return folder


def test_bad_files_are_rejected_with_reasons_and_the_rest_is_used(ray_local, odd_folder, tmp_path):
    out = tmp_path
    manifest = run(_config([odd_folder], out, val_fraction=0.0))
    reasons = {r["file"]: r["reason"] for r in manifest.rejected}
    assert set(reasons) == {"truncated.png", "truncated.jpg", "notes.jpg", "empty.png", "tiny.png",
                            "sub_copy_of_good.png"}
    assert "truncated" in reasons["truncated.png"] or "broken" in reasons["truncated.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "cannot identify" in reasons["notes.jpg"]
    assert reasons["empty.png"] == "empty file"
    assert "40x50" in reasons["tiny.png"] or "50x40" in reasons["tiny.png"]
    assert reasons["sub_copy_of_good.png"].startswith("duplicate of folder:")
    assert reasons["sub_copy_of_good.png"].endswith("/good.png")
    source = manifest.per_source[next(iter(manifest.per_source))]
    assert source["files"] == 13 and source["rejected"] == 6 and source["train_images"] == 7
    assert manifest.totals["images"] == 7  # the truncated files were planned, then dropped at decode
    used = {s["json"]["file"]: s for s in _samples(out)}
    assert set(used) == {"good.png", "cmyk.jpg", "gray16.png", "rgba.png", "palette.png", "gray.png", "rotated.jpg"}
    assert manifest.totals["train_patches"] == 2 * 7 == len(_samples(out))
    for sample in used.values():
        assert sample["png"].mode == "RGB" and sample["png"].size == (64, 64)
    assert used["rotated.jpg"]["json"]["source_size"] == [100, 180]  # EXIF orientation applied
    assert "EXIF" in used["rotated.jpg"]["json"]["conversion"]
    assert "16-bit" in used["gray16.png"]["json"]["conversion"]


def test_small_images_can_be_upscaled_instead(ray_local, odd_folder, tmp_path):
    recipe = PatchRecipe(patch=64, resize=None, patches_per_image=1, small="upscale")
    manifest = run(_config([odd_folder], tmp_path, recipe, val_fraction=0.0))
    assert "tiny.png" not in {r["file"] for r in manifest.rejected}
    assert "tiny.png" in {s["json"]["file"] for s in _samples(tmp_path)}


def test_empty_or_imageless_source_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="no image files"):
        run(_config([tmp_path / "empty"], tmp_path / "out"))
    with pytest.raises(HarnessError, match="no such directory"):
        run(_config([tmp_path / "missing"], tmp_path / "out"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"")
    with pytest.raises(HarnessError, match="no usable images"):
        run(_config([tmp_path / "bad"], tmp_path / "out"))


def test_same_bytes_with_one_or_two_workers(ray_local, photo_subset, tmp_path):
    one = run(_config([photo_subset], tmp_path / "one", workers=1))
    two = run(_config([photo_subset], tmp_path / "two", workers=2))
    assert len(one.shards) >= 3
    assert _shard_hashes(one) == _shard_hashes(two)
    for name, digest in _shard_hashes(one).items():
        assert hashlib.sha256((tmp_path / "two" / name).read_bytes()).hexdigest() == digest
    # Split by source image: no file in both train and val.
    train = {s["json"]["sha256"] for s in _samples(tmp_path / "one", "train")}
    val = {s["json"]["sha256"] for s in _samples(tmp_path / "one", "val")}
    assert val and train and not train & val


def test_resume_rewrites_only_missing_or_corrupt_shards(ray_local, photo_subset, tmp_path, capsys):
    config = _config([photo_subset], tmp_path)
    first = run(config)
    names = sorted(_shard_hashes(first))
    (tmp_path / names[0]).unlink()
    corrupt = bytearray((tmp_path / names[1]).read_bytes())
    corrupt[700] ^= 0xFF
    (tmp_path / names[1]).write_bytes(bytes(corrupt))
    (tmp_path / f".{names[2]}.abc123.tmp").write_bytes(b"half a shard")  # left by a killed task
    capsys.readouterr()
    second = run(config)
    assert f"kept {len(names) - 2} of {len(names)} shards" in capsys.readouterr().out
    assert second.resume == {"kept": len(names) - 2, "written": 2}
    assert _shard_hashes(second) == _shard_hashes(first)
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(HarnessError, match="different plan"):
        run(_config([photo_subset], tmp_path, PatchRecipe(patch=64, resize=None, seed=7)))


@pytest.mark.slow
def test_acceptance_480px_patches_on_the_photos(ray_local, photos_dir, tmp_path, capsys):
    """Issue acceptance: the paper's recipe (2000x2000 resize, rotation/scaling, 480x480) on
    ../shared/data/photos through the CLI, 1 and 2 workers, one patch per photo to stay fast."""
    argv = ["prepare-data", "--source", f"folder:{photos_dir}", "--patches-per-image", "1",
            "--shard-patches", "8", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    assert "prepared 47 train + 2 val patches (480px) from 49 images in 7 shards" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    manifest = read_manifest(tmp_path / "a")
    assert _shard_hashes(manifest) == _shard_hashes(read_manifest(tmp_path / "b"))
    assert manifest.status == "complete" and manifest.recipe["resize"] == 2000
    for record in manifest.shards:
        samples = list(wds.WebDataset(str(tmp_path / "a" / record.name), shardshuffle=False).decode("pil"))
        assert len(samples) == record.samples
        for sample in samples:
            assert sample["png"].mode == "RGB" and sample["png"].size == (480, 480)
            assert sample["json"]["patch"]["rotation"] in (0, 90, 180, 270)
    assert manifest.totals["train_patches"] + manifest.totals["val_patches"] == 49


def test_cli_reports_bad_source_on_one_line(tmp_path, capsys):
    assert main(["prepare-data", "--source", f"folder:{tmp_path / 'nope'}", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness prepare-data: error:") and "\n" not in err


def test_stream_gives_seeded_float_crops_and_checks_the_shards(ray_local, photo_subset, tmp_path):
    run(_config([photo_subset], tmp_path))
    batches = [b for _, b in zip(range(3), stream.train_loader(tmp_path, 48, 4, shuffle_buffer=8, seed=3))]
    again = [b for _, b in zip(range(3), stream.train_loader(tmp_path, 48, 4, shuffle_buffer=8, seed=3))]
    assert all(b.shape == (4, 3, 48, 48) and b.dtype.is_floating_point for b in batches)
    assert all(0.0 <= float(b.min()) and float(b.max()) <= 1.0 for b in batches)
    assert all((a == b).all() for a, b in zip(batches, again))
    val = list(stream.val_loader(tmp_path, 64, 100))
    assert sum(len(b) for b in val) == json.loads((tmp_path / "manifest.json").read_text())["totals"]["val_patches"]
    with pytest.raises(HarnessError, match="smaller than the 128px training crop"):
        stream.train_dataset(tmp_path, 128)
    with pytest.raises(HarnessError, match="no prepared data"):
        stream.train_dataset(tmp_path / "missing", 48)


@pytest.mark.slow
def test_stream_replays_in_another_process(ray_local, photo_subset, tmp_path):
    """Seeded means the same patches in every process (each Ray trial is one), whatever
    Python's per-process string hashing."""
    import subprocess
    import sys

    run(_config([photo_subset], tmp_path))
    script = (
        "import sys, torch; from harness.data import stream; "
        "b = next(iter(stream.train_loader(sys.argv[1], 48, 4, shuffle_buffer=8, seed=3))); "
        "print(float(b.double().sum()), float((b.double() ** 2).sum()))"
    )
    sums = {
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": hashseed}).stdout
        for hashseed in ("1", "2")
    }
    assert len(sums) == 1, sums


def test_registry_sources_by_name(ray_local, tmp_path):
    """Registry names resolve through harness.data.registry (Kodak is vendored, so no download)."""
    recipe = PatchRecipe(patch=64, resize=None, patches_per_image=1)
    manifest = run(PrepareConfig(sources=("kodak",), out=tmp_path / "k", recipe=recipe, shard_patches=12,
                                 val_fraction=0.0, progress=False))
    assert manifest.per_source["kodak"]["train_patches"] == 24
    assert {s["json"]["source"] for s in _samples(tmp_path / "k")} == {"kodak"}
    assert {s["json"]["file"] for s in _samples(tmp_path / "k")} >= {"kodim01.png", "kodim24.png"}
    with pytest.raises(HarnessError, match="clic-train is not present"):
        run(PrepareConfig(sources=("clic-train",), out=tmp_path / "c", root=tmp_path / "empty-root",
                          progress=False))


def test_target_patches_are_spread_over_sources_then_images(tmp_path):
    from harness.data.shards import SourceImage, plan_shards

    images = [SourceImage("a", f"{i}.png", f"/a/{i}.png", f"{i:064x}") for i in range(3)]
    images += [SourceImage("b", f"{i}.png", f"/b/{i}.png", f"{i + 100:064x}") for i in range(5)]
    config = PrepareConfig(sources=("folder:a",), out=tmp_path, target_patches=11, val_fraction=0.25,
                           shard_patches=4, progress=False)
    shards = plan_shards(images, config)
    jobs = [job for shard in shards for job in shard.jobs]
    train = [job for shard in shards if shard.split == "train" for job in shard.jobs]
    val = [job for shard in shards if shard.split == "val" for job in shard.jobs]
    assert sum(j.patches for j in train) == 11
    assert sum(j.patches for j in train if j.image.source == "a") == 6  # 11 split 6/5 over two sources
    assert sorted(j.patches for j in train if j.image.source == "a") == [3, 3]  # a: 3 images, 1 held out
    assert len(val) == 1 + 1 and all(j.patches == config.recipe.patches_per_image for j in val)
    assert len({j.image.sha256 for j in jobs}) == len(jobs) == 8
    assert [s.name for s in shards] == [f"train-{i:06d}.tar" for i in range(len(shards) - 2)] + [
        "val-000000.tar", "val-000001.tar"]  # shards end at image boundaries: one 8-patch val image each
    # The order files are listed in within a source does not matter.
    assert shards == plan_shards(images[:3][::-1] + images[3:][::-1], config)
