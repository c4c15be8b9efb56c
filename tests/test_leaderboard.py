"""Leaderboard engine end to end on a tiny folder dataset with real codecs on Ray:
schema, incremental reruns, bad images, codec failures, atomic writes, CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from crafted_images import png16

from harness.cli import main
from harness.leaderboard import results
from harness.errors import HarnessError
from harness.leaderboard.cells import crop_points
from harness.leaderboard.kept import bitstream_path, crop_path, original_crop_path
from harness.leaderboard.config import LeaderboardConfig
from harness.leaderboard.plan import plan
from harness.leaderboard.run import execute, run
from harness.leaderboard.summary import read_summary
from harness.pixels.images import load_rgb, save_png
from harness.report.config import ReportConfig
from harness.report.publish import publish

REPO = Path(__file__).resolve().parents[1]
CODECS = ("jpeg", "hevc", "vvc")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, kodak_dir: Path) -> Path:
    """Two 176×176 Kodak crops (large enough for MS-SSIM) and one truncated PNG."""
    root = tmp_path_factory.mktemp("images")
    for name in ("kodim03.png", "kodim19.png"):
        save_png(np.ascontiguousarray(load_rgb(kodak_dir / name).pixels[100:276, 200:376]), root / name)
    (root / "broken.png").write_bytes((root / "kodim03.png").read_bytes()[:300])
    return root


@pytest.fixture()
def codec_dir(tmp_path: Path) -> Path:
    """Two-point ladders of the shipped configs, so the tests stay fast."""
    out = tmp_path / "codecs"
    out.mkdir()
    for codec in CODECS + ("vtm", "jpegxl"):
        text = (REPO / "codecs" / f"{codec}.toml").read_text()
        text = re.sub(r"(\[configs\.quick\][^\[]*?)ladder = \[([\d.]+), ([\d.]+), [^\]]*\]", r"\1ladder = [\2, \3]", text)
        (out / f"{codec}.toml").write_text(text)
    return out


def _config(folder: Path, codec_dir: Path, reports: Path, **kw) -> LeaderboardConfig:
    base = dict(datasets=(f"folder:{folder}",), codecs=CODECS, run_name="t", reports_dir=reports,
                codec_dir=codec_dir, progress=False, checkpoint_s=0.0)
    return LeaderboardConfig(**{**base, **kw})


def test_schema_is_documented() -> None:
    text = (REPO / "docs" / "leaderboard.md").read_text()
    section = text.split("## results.parquet", 1)[1]
    documented = re.findall(r"^\| `(\w+)` \| ([\w\[\], ]+) \|", section, flags=re.M)
    assert [(name, kind) for name, kind in documented] == [(f.name, str(f.type).replace("tz=UTC", "UTC").replace("double", "float64")) for f in results.SCHEMA]


def test_run_rerun_force_and_bad_image(ray_local, folder: Path, codec_dir: Path, tmp_path: Path, capsys) -> None:
    config = _config(folder, codec_dir, tmp_path)
    summary = run(config)
    assert (summary.cells, summary.computed, summary.reused, summary.errors) == (18, 18, 0, 6)
    assert summary == read_summary(tmp_path / "t")
    path = tmp_path / "t" / "results.parquet"
    assert pq.read_schema(path).remove_metadata().equals(results.SCHEMA)
    frame = results.read(path)
    assert len(frame) == 3 * 3 * 2 and not frame.duplicated(list(results.CELL)).any()
    bad = frame[frame["image"] == "broken.png"]
    assert (bad["status"] == "error").all() and bad["error"].str.contains("cannot read image").all()
    good = frame[frame["image"] != "broken.png"]
    assert (good["status"] == "ok").all()
    assert np.allclose(good["bpp"], good["bytes"] * 8 / (good["width"] * good["height"]))
    assert good["ms_ssim_db"].gt(5).all() and good["psnr_rgb"].between(25, 50).all()
    assert good.loc[good["codec"] == "hevc", "codec_version"].str.contains("libx265").all()
    assert good["params"].isna().all() and good["git_commit"].notna().all()
    out = capsys.readouterr()
    assert "6 error" in out.out.replace("errors", "error") and "excluded from averages" in out.err

    again = plan(config)  # nothing changed: only the unreadable image's cells are retried
    assert {c.image for c in again.todo} == {"broken.png"} and len(again.reused) == 12

    forced = plan(_config(folder, codec_dir, tmp_path, force=True))
    assert len(forced.todo) == 18

    (codec_dir / "jpeg.toml").write_text((codec_dir / "jpeg.toml").read_text().replace("optimize = false", "optimize = true"))
    changed = plan(config)  # a bitstream-shaping setting changed: that codec only is recomputed
    assert {c.codec.codec for c in changed.todo if c.image != "broken.png"} == {"jpeg"}


def test_rerun_computes_zero_cells(ray_local, folder: Path, codec_dir: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.png").write_bytes((folder / "kodim19.png").read_bytes())
    config = _config(clean, codec_dir, tmp_path, codecs=("jpeg", "hevc"), crops=1)
    first = plan(config)
    assert len(execute(first, config)) == 4
    before = results.read(tmp_path / "t" / "results.parquet")
    # The crop budget: one reconstruction per image and curve (of two points), and the original's.
    kept = {path: path.stat().st_mtime_ns for path in (tmp_path / "t" / "crops").rglob("*.webp")}
    assert len(kept) == 3
    for row in before.to_dict("records"):
        assert crop_path(tmp_path / "t", row).is_file() == (row["quality"] == min(
            r["quality"] for r in before.to_dict("records") if r["codec"] == row["codec"]))
    original = np.asarray(Image.open(original_crop_path(tmp_path / "t", before["image_sha256"].iloc[0])))
    np.testing.assert_array_equal(original, load_rgb(clean / "a.png").pixels[24:152, 24:152])  # lossless, centred
    second = plan(config)
    assert second.todo == [] and execute(second, config) == []
    after = results.read(tmp_path / "t" / "results.parquet")
    pd.testing.assert_frame_equal(before, after)
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "t" / "crops").rglob("*.webp")} == kept


def test_a_table_from_before_the_rate_estimates_reads_with_them_null_and_merges(tmp_path: Path) -> None:
    row = {c: None for c in results.COLUMNS} | {"dataset": "d", "image": "a.png", "codec": "jpeg", "config": "quick",
                                                "quality": 50.0, "status": "ok", "metrics": "core", "bpp": 1.0,
                                                "psnr_rgb": 30.0}
    path = tmp_path / "results.parquet"
    results.write(pd.DataFrame([row]), path)
    pq.write_table(pq.read_table(path).drop_columns(list(results.ADDED)), path)  # as written before them
    old = results.read(path)
    assert list(old.columns) == list(results.COLUMNS) and old[list(results.ADDED)].isna().all().all()
    learned = row | {"codec": "tiny", "est_bits": 800.0, "pad_bits": 0.0}
    results.write(pd.concat([old, pd.DataFrame([learned])], ignore_index=True), path)
    merged = results.read(path).set_index("codec")
    assert merged.loc["tiny", "est_bits"] == 800.0 and pd.isna(merged.loc["jpeg", "est_bits"])
    pq.write_table(pq.read_table(path).drop_columns(["bpp"]), path)
    with pytest.raises(HarnessError, match="lacks column"):  # any other column missing is still refused
        results.read(path)


def test_crop_points_spread_over_the_ladder_within_the_budget() -> None:
    ladder = (85.0, 15.0, 60.0, 35.0)
    assert crop_points(ladder, 0) == frozenset()
    assert crop_points(ladder, 1) == {15.0}
    assert crop_points(ladder, 2) == {15.0, 85.0}
    assert crop_points(ladder, 3) == {15.0, 60.0, 85.0}
    assert crop_points(ladder, 9) == set(ladder)
    with pytest.raises(HarnessError, match="--crops must be 0 or more"):
        LeaderboardConfig(crops=-1)


def test_more_metrics_remeasure_stored_bitstreams(ray_local, folder: Path, codec_dir: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.png").write_bytes((folder / "kodim19.png").read_bytes())
    config = _config(clean, codec_dir, tmp_path, codecs=("jpeg", "jpegxl"))
    execute(plan(config), config)
    path, run_dir = tmp_path / "t" / "results.parquet", tmp_path / "t"
    first = results.read(path)
    assert (first["status"] == "ok").all() and first["vmaf"].isna().all() and first["psnr_yuv"].notna().all()
    assert set(first["codec"]) == {"jpeg", "jpegxl"}
    for row in first.to_dict("records"):
        assert bitstream_path(run_dir, row).stat().st_size == row["bytes"]

    more = _config(clean, codec_dir, tmp_path, codecs=("jpeg", "jpegxl"), metrics=("vmaf",))
    again = plan(more)
    assert again.todo == [] and len(again.remeasure) == 4 and again.reused == []
    execute(again, more)
    second = results.read(path)
    assert second["vmaf"].between(20, 100).all() and second["metrics"].str.endswith(",vmaf").all()
    kept = ["image", "codec", "quality", "bytes", "enc_s", "dec_s", "psnr_rgb", "psnr_yuv", "created_at"]
    pd.testing.assert_frame_equal(first[kept], second[kept])  # nothing encoded again, earlier values kept
    assert plan(more).remeasure == []

    bitstream_path(run_dir, second.iloc[0].to_dict()).unlink()  # a run from before the store: encoded again
    lost = plan(_config(clean, codec_dir, tmp_path, codecs=("jpeg", "jpegxl"), metrics=("all",)))
    assert [(c.codec.codec, c.quality) for c in lost.todo] == [(second.iloc[0]["codec"], second.iloc[0]["quality"])]
    assert len(lost.remeasure) == 3


def test_codec_failures_are_isolated(ray_local, folder: Path, codec_dir: Path, tmp_path: Path) -> None:
    (codec_dir / "hevc.toml").write_text((codec_dir / "hevc.toml").read_text() + '\n[configs.crash]\nladder = [30]\n'
                                         'preset = "no-such-preset"\n')
    config = _config(folder, codec_dir, tmp_path, codecs=("jpeg", "hevc:crash", "vvc"), timeout_s=None)
    plan_ = plan(config)
    rows = execute(plan_, config)
    frame = pd.DataFrame(rows)
    readable = frame[frame["image"] != "broken.png"]
    crashed = readable[readable["codec"] == "hevc"]
    assert (crashed["status"] == "error").all() and crashed["error"].str.contains("hevc encode failed").all()
    assert (readable.loc[readable["codec"] != "hevc", "status"] == "ok").all()

    slow = _config(folder, codec_dir, tmp_path, codecs=("vvc",), timeout_s=0.001, run_name="slow")
    frame = pd.DataFrame(execute(plan(slow), slow))
    assert frame["error"].str.contains("timed out after 0.001 s|cannot read image").all()


def test_unavailable_codec_is_listed_not_fatal(ray_local, folder: Path, codec_dir: Path, tmp_path: Path,
                                               monkeypatch, capsys) -> None:
    monkeypatch.delenv("HARNESS_VTM_DIR", raising=False)
    config = _config(folder, codec_dir, tmp_path, codecs=("jpeg", "vtm"), max_images=2)
    summary = run(config)
    assert [u["codec"] for u in summary.unavailable] == ["vtm:quick"] and summary.codec_versions.keys() == {"jpeg:quick"}
    out = capsys.readouterr().out
    assert re.search(r"vtm:quick\s+unavailable: VTM not configured", out)
    assert "vtm" not in set(results.read(tmp_path / "t" / "results.parquet")["codec"])
    assert main(["report", str(tmp_path / "t"), "--anchor", "jpeg"]) == 0
    assert "jpeg" in (tmp_path / "t" / "bdrate.md").read_text() and (tmp_path / "t" / "README.md").is_file()


def test_leaderboard_command_runs_the_engine_then_the_report(ray_local, folder: Path, codec_dir: Path, tmp_path: Path,
                                                             capsys) -> None:
    """The command layer: `--no-report` leaves results.parquet and run.json alone; without it the
    report follows the run (options as for `harness report`) and writes its BD-rates into run.json."""
    argv = ["leaderboard", "--dataset", f"folder:{folder}", "--codecs", "jpeg,hevc", "--codec-dir", str(codec_dir),
            "--reports", str(tmp_path), "--run", "cli", "--no-progress"]
    run_dir = tmp_path / "cli"
    assert main([*argv, "--no-report"]) == 0
    assert {p.name for p in run_dir.iterdir()} == {"results.parquet", "run.json", "bitstreams", "crops"}
    assert not any("bd_rate" in curve for curve in read_summary(run_dir).curves.values())
    assert main([*argv, "--anchor", "hevc", "--rd-plots", "psnr"]) == 0  # every cell reused
    assert capsys.readouterr().out.rstrip().endswith(f"report: {run_dir / 'README.md'}\nweb report: {run_dir / 'index.html'}")
    assert (run_dir / "README.md").is_file() and not list(run_dir.glob("rd-*-msssim.png"))
    curves = read_summary(run_dir).curves
    assert all({"enc_s", "dec_s", "bd_rate"} <= set(curves[f"folder:{folder}/{codec}:quick"]) for codec in ("jpeg", "hevc"))

# A writer that runs out of file size mid-write (RLIMIT_FSIZE, as on a full disk): the
# temporary file is half written when write() fails with EFBIG.
_FAILING_WRITE = """
import resource, signal, sys
import numpy as np, pandas as pd
from harness.leaderboard import results
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
rows = pd.DataFrame([{c: None for c in results.COLUMNS} | {"dataset": "d", "image": f"i{k}", "codec": "jpeg",
                      "config": "quick", "quality": 50.0, "status": "ok", "metrics": "core", "bpp": float(k),
                      "error": "x" * 64} for k in range(20000)])
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
try:
    results.write(rows, sys.argv[1])
except OSError as error:
    print(f"OSError errno {error.errno}")
"""


def test_atomic_write_keeps_previous_table(tmp_path: Path) -> None:
    import errno

    path = tmp_path / "results.parquet"
    row = {c: None for c in results.COLUMNS} | {"dataset": "d", "image": "i", "codec": "jpeg", "config": "quick",
                                                 "quality": 50.0, "status": "ok", "metrics": "core",
                                                 "bpp": 1.0}
    results.write(pd.DataFrame([row]), path)
    done = subprocess.run([sys.executable, "-c", _FAILING_WRITE, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.stdout.strip() == f"OSError errno {errno.EFBIG}", done.stderr[-2000:]
    assert results.read(path)["bpp"].tolist() == [1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["results.parquet"]


def test_cli_errors(tmp_path: Path, capsys) -> None:
    assert main(["leaderboard", "--codecs", "h264", "--reports", str(tmp_path), "--no-report"]) == 1
    assert "unknown codec 'h264'; known codecs: av1, bpg, hevc, jpeg, jpeg2000, jpegxl, vtm, vvc, webp" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.parquet").write_bytes(b"PAR1 truncated")
    assert main(["report", str(tmp_path / "run")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["leaderboard", "--dataset", f"folder:{tmp_path / 'missing'}", "--reports", str(tmp_path)]) == 1
    assert "no such directory" in capsys.readouterr().err


@pytest.mark.slow
def test_degenerate_converted_and_broken_images_are_named_and_never_averaged(ray_local, folder: Path, tmp_path: Path,
                                                                               capsys) -> None:
    """A 1x1 image (jpeg and webp code it losslessly: PSNR inf), a 16-bit RGB PNG and a truncated
    PNG in one folder: the BD-rate is the one without the 1x1 image, no inf is printed, the
    16-bit image's reduction and the broken file are named as the dataset has them."""
    clean, dotted = tmp_path / "clean", tmp_path / "dotted"
    for root in (clean, dotted):
        root.mkdir()
        for name in ("kodim03.png", "kodim19.png", "broken.png"):
            (root / name).write_bytes((folder / name).read_bytes())
        ramp = np.linspace(0, 60000, 96 * 128 * 3).reshape(96, 128, 3).astype(np.int64)
        png16(root / "deep.png", ramp + np.random.default_rng(0).integers(0, 4000, ramp.shape))
    save_png(np.full((1, 1, 3), 128, np.uint8), dotted / "dot.png")
    runs = {}
    for root in (clean, dotted):
        config = LeaderboardConfig(datasets=(f"folder:{root}",), codecs=("jpeg", "webp"), run_name=root.name,
                                   reports_dir=tmp_path / "reports", progress=False, checkpoint_s=0.0)
        run(config)
        publish(ReportConfig(config.run_dir, anchor="webp"))
        runs[root.name] = capsys.readouterr()
    out = runs["dotted"]
    assert not re.search(r"\binf\b", out.out) and "set aside" in out.err
    bd = {name: pd.read_csv(tmp_path / "reports" / name / "bdrate.csv").set_index(["codec", "metric"])
          for name in runs}
    assert bd["dotted"].loc[("jpeg", "psnr"), "bd_rate_pct"] == pytest.approx(bd["clean"].loc[("jpeg", "psnr"), "bd_rate_pct"])
    frame = results.read(tmp_path / "reports" / "dotted" / "results.parquet")
    dot = frame[frame["image"] == "dot.png"]
    assert (dot["status"] == "ok").all() and dot["degenerate"].str.contains("psnr_rgb inf").any()
    assert "set aside" in (tmp_path / "reports" / "dotted" / "README.md").read_text()
    deep = frame[frame["image"] == "deep.png"]
    assert (deep["conversion"] == "16-bit RGB samples reduced to 8 bits").all()
    assert "notice: 1 image(s) changed on reading, coded as read: deep.png: 16-bit RGB samples reduced" in out.err
    broken = frame[frame["image"] == "broken.png"]
    assert broken["error"].str.startswith(f"cannot read image {dotted / 'broken.png'}: ").all()
    assert not frame["error"].fillna("").str.contains("harness-cell").any()
