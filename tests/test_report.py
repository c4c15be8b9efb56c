"""Leaderboard report from a synthesized results.parquet, and the published anchors."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.errors import HarnessError
from harness.report.anchors import ANCHORS_DIR, anchor_bdrate_table, load_published_curves
from harness.report.build import build_report
from harness.leaderboard.results import COLUMNS, degenerate, read as read_results

# codec -> (rate factor vs the anchor, qualities, parameter count)
CODECS = {
    "vvc": (1.0, [37, 32, 27, 22], None),
    "hevc": (1.3, [37, 32, 27, 22], None),
    "jpeg": (2.5, [20, 40, 60, 80, 95], None),
    "3dm-weconvene": (0.9, [1, 2, 3, 4, 5, 6], 73.95e6),
}


def _rows(dataset: str, n_images: int, codecs: dict, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        difficulty = rng.uniform(0.7, 1.4)
        for codec, (factor, qualities, params) in codecs.items():
            for k, quality in enumerate(qualities):
                # Same log-spaced quality targets for every codec; the rate factor
                # alone separates the curves, so the true BD-rate is factor - 1.
                base = 0.1 * 2 ** (k * 5 / (len(qualities) - 1)) * difficulty
                psnr = 27.0 + 4.0 * np.log2(base / 0.1) + rng.normal(0, 0.05)
                ms_ssim = 1 - 10 ** (-(10.0 + 3.5 * np.log2(base / 0.1)) / 10)
                bpp = base * factor
                rows.append(
                    dict(
                        dataset=dataset, image=f"img{i:02d}.png", image_sha256=f"{i:064x}", width=768, height=512,
                        codec=codec, codec_version=f"{codec} 1.0", config="quick", config_hash="c0ffee",
                        quality=float(quality), bytes=int(bpp * 768 * 512 / 8), bpp=bpp, psnr_rgb=psnr,
                        ms_ssim=ms_ssim, ms_ssim_db=-10 * np.log10(1 - ms_ssim), enc_s=0.2 * factor, dec_s=0.05,
                        device="cpu", params=params, harness_version="0.1.0", git_commit="abc1234",
                        created_at=pd.Timestamp("2026-11-25T12:00:00Z"), status="ok", error=None,
                    )
                )
    return rows


def _write(run_dir: Path, rows: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    # The leaderboard's rows: every column of the table, the other metrics not measured.
    full = [{**dict.fromkeys(COLUMNS), "metrics": "core", **row} for row in rows]
    pd.DataFrame(full).to_parquet(run_dir / "results.parquet", index=False)
    return run_dir


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    rows = _rows("kodak", 6, CODECS)
    # Bad curves in the same run: too few points, a NaN metric, no overlap with the anchor.
    rows += _rows("kodak", 6, {"short": (1.1, [1, 2, 3], None)}, seed=1)
    nan_rows = _rows("kodak", 6, {"broken": (1.0, [1, 2, 3, 4], None)}, seed=2)
    for row in nan_rows:
        row["psnr_rgb"] = math.nan
    rows += nan_rows
    far = _rows("kodak", 6, {"far": (1.0, [1, 2, 3, 4], None)}, seed=3)
    for row in far:
        row["psnr_rgb"] += 40.0
        row["ms_ssim_db"] += 40.0
    rows += far
    # A failed cell is excluded from the averages; a second dataset without the anchor.
    rows.append({**rows[0], "image": "corrupt.png", "status": "error", "error": "cannot identify image", "bpp": math.nan})
    rows += _rows("tecnick", 3, {"hevc": CODECS["hevc"]}, seed=4)
    run_dir = _write(tmp_path_factory.mktemp("run") / "kodak-quick", rows)
    with pytest.warns(UserWarning, match="1 result row"):
        build_report(run_dir, resamples=300)
    return run_dir


def test_build_report_writes_every_file(report_dir):
    expected = [
        "bdrate.md", "bdrate.csv", "timing.md", "params.md", "fidelity.md", "anchors-bdrate.md", "README.md",
        "bdrate_per_image.parquet", "rd-kodak-psnr.png", "rd-kodak-msssim.png", "rd-tecnick-psnr.png",
        "rd-tecnick-msssim.png", "bdrate-kodak-per-image.png",
    ]
    for name in expected:
        assert (report_dir / name).stat().st_size > 0, name
    assert not list(report_dir.glob("*.tmp"))
    for png in report_dir.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 300
            assert len(image.convert("L").getcolors(1 << 16)) > 10  # something was drawn


def test_bdrate_table_lists_every_codec_with_ci_and_known_values(report_dir):
    table = pd.read_csv(report_dir / "bdrate.csv", keep_default_na=False, na_values=[""])
    kodak = table[table["dataset"] == "kodak"].set_index(["codec", "metric"])
    for metric in ("psnr", "msssim"):
        assert kodak.loc[("vvc", metric), "bd_rate_pct"] == pytest.approx(0.0, abs=1e-6)
        for codec, (factor, _, _) in CODECS.items():
            row = kodak.loc[(codec, metric)]
            assert row["bd_rate_pct"] == pytest.approx((factor - 1) * 100, abs=1.0), (codec, metric)
            assert row["ci95_low"] <= row["bd_rate_pct"] <= row["ci95_high"]
            assert bool(row["reliable"]) and row["n_images"] == 6
    markdown = (report_dir / "bdrate.md").read_text()
    assert "| vvc [anchor] |" in markdown and "**kodak** (6 images)" in markdown
    for codec in ("hevc", "jpeg", "3dm-weconvene"):
        line = next(l for l in markdown.splitlines() if l.startswith(f"| {codec} |"))
        assert line.count("[") >= 2, line  # a CI for PSNR and MS-SSIM
    assert "73.95 M" in markdown


def test_cubic_and_akima_columns_equal_the_bjontegaard_package_over_the_common_range(report_dir):
    """bdrate.csv (and so the web page) beside PCHIP: the cubic and Akima BD-rates of the same mean
    curves, equal to the `bjontegaard` package's to 0.01 point; the common quality range and the points."""
    bjontegaard = pytest.importorskip("bjontegaard")
    ok = read_results(report_dir / "results.parquet").query("status == 'ok' and dataset == 'kodak'")
    means = {codec: rows.groupby("quality")[["bpp", "psnr_rgb", "ms_ssim_db"]].mean()
             for codec, rows in ok.groupby("codec")}
    table = pd.read_csv(report_dir / "bdrate.csv", keep_default_na=False, na_values=[""])
    compared = 0
    for row in table[(table["dataset"] == "kodak") & table["metric"].isin(["psnr", "msssim"])].itertuples():
        if not row.reliable:
            continue
        column = {"psnr": "psnr_rgb", "msssim": "ms_ssim_db"}[row.metric]
        anchor, test = means["vvc"], means[row.codec]
        for method, value in (("cubic", row.bd_rate_cubic_pct), ("akima", row.bd_rate_akima_pct)):
            expected = bjontegaard.bd_rate(anchor["bpp"], anchor[column], test["bpp"], test[column], method=method,
                                           require_matching_points=False)
            assert value == pytest.approx(expected, abs=0.01), (row.codec, row.metric, method)
            compared += 1
        assert row.quality_lo == pytest.approx(max(anchor[column].min(), test[column].min()), abs=1e-4)
        assert row.quality_hi == pytest.approx(min(anchor[column].max(), test[column].max()), abs=1e-4)
        assert (row.n_points, row.anchor_points) == (len(test), len(anchor))
    assert compared == 2 * 2 * 4  # psnr and msssim of vvc, hevc, jpeg, 3dm-weconvene


def _page_data(run_dir: Path) -> dict:
    html = (run_dir / "index.html").read_text()
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_the_web_page_renders_the_tables_of_the_markdown_report(report_dir):
    """index.html carries bdrate.csv's numbers (one computation, two renderings), references no remote URL
    and ships plotly's bundle beside it."""
    html = (report_dir / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "@import" not in html
    assert '<script src="assets/plotly.min.js">' in html and (report_dir / "assets" / "plotly.min.js").is_file()
    data = _page_data(report_dir)
    table = pd.read_csv(report_dir / "bdrate.csv", keep_default_na=False, na_values=[""])
    kodak = next(d for d in data["datasets"] if d["name"] == "kodak")
    shown = {(row["label"], row["metric"]): row for row in kodak["bdrate"]}
    for row in table[table["dataset"] == "kodak"].itertuples():
        page = shown[(row.label, row.metric)]
        for column, key in (("bd_rate_pct", "pchip"), ("ci95_low", "ci_low"), ("bd_rate_cubic_pct", "cubic"),
                            ("bd_rate_akima_pct", "akima")):
            value = getattr(row, column)
            assert (page[key] is None) if math.isnan(value) else page[key] == pytest.approx(value, abs=1e-4)
        assert page["flags"] == (row.flags if isinstance(row.flags, str) else "")
    assert "fewer than 4 points" in shown[("short", "psnr")]["flags_help"]
    # RD plots: one trace per measured curve (none of this run's published on its synthetic images' scale
    # aside, which come dashed after them).
    psnr = next(p for p in kodak["plots"] if p["metric"] == "psnr")
    measured = [t["name"] for t in psnr["traces"] if not t["published"]]
    assert sorted(measured) == sorted(set(table.loc[table["dataset"] == "kodak", "label"]))
    assert any(t["published"] for t in psnr["traces"])
    assert [t["learned"] for t in psnr["traces"] if t["name"] == "3dm-weconvene"] == [True]
    assert kodak["per_image"][0]["crops"][0]["points"] == [] and kodak["per_image"][0]["original"] is None
    assert data["provenance"]["anchor"] == {"codec": "vvc", "config": "quick", "versions": ["vvc 1.0"]}


def test_the_web_page_shows_a_learned_codecs_estimated_bits_beside_its_bitstreams(tmp_path):
    rows = _rows("kodak", 2, {k: CODECS[k] for k in ("vvc", "3dm-weconvene")})
    for row in rows:
        if row["codec"] == "3dm-weconvene":
            row.update(est_bits=row["bytes"] * 7.9, pad_bits=12.5, enc_net_s=0.15, dec_net_s=0.04)
    run_dir = _write(tmp_path / "run", rows)
    build_report(run_dir, resamples=20)
    assert "| kodak | 3dm-weconvene | 0.18 s | 0.05 s |" in (run_dir / "timing.md").read_text()
    assert "| — | 0.15 s | 0.04 s |" in (run_dir / "timing.md").read_text()
    timing = {row["label"]: row for row in _page_data(run_dir)["datasets"][0]["timing"]}
    assert (timing["3dm-weconvene"]["enc_net_s"], timing["vvc"]["enc_net_s"]) == (pytest.approx(0.15), None)
    bits = _page_data(run_dir)["datasets"][0]["bits"]
    assert len(bits) == 2 * 6 and {row["label"] for row in bits} == {"3dm-weconvene"}
    assert all(row["est_bits"] == pytest.approx(row["bits"] / 8 * 7.9, rel=1e-6) and row["pad_bits"] == 12.5
               for row in bits)


def test_bad_curves_become_flagged_rows(report_dir):
    table = pd.read_csv(report_dir / "bdrate.csv", keep_default_na=False, na_values=[""]).set_index(["dataset", "codec", "metric"])
    assert "test:few-points" in table.loc[("kodak", "short", "psnr"), "flags"]
    assert "no-overlap" in table.loc[("kodak", "far", "psnr"), "flags"]
    # A NaN PSNR on an ok row is degenerate: its rows are set aside, and the report says so.
    assert "broken" not in set(table.index.get_level_values("codec"))
    assert "**Set aside:** 24 ok row(s)" in (report_dir / "bdrate.md").read_text()
    assert "img00.png in broken:quick (psnr_rgb NaN)" in (report_dir / "README.md").read_text()
    for codec in ("short", "far"):
        assert not table.loc[("kodak", codec, "psnr"), "reliable"]
        assert math.isnan(table.loc[("kodak", codec, "psnr"), "bd_rate_pct"])
    assert table.loc[("tecnick", "hevc", "psnr"), "flags"] == "anchor-missing"
    markdown = (report_dir / "bdrate.md").read_text()
    short = next(l for l in markdown.splitlines() if l.startswith("| short |"))
    assert "n/a" in short and "few-points" in short


def test_per_image_distribution(report_dir):
    per_image = pd.read_parquet(report_dir / "bdrate_per_image.parquet")
    hevc = per_image[(per_image["codec"] == "hevc") & (per_image["dataset"] == "kodak")]
    assert len(hevc) == 6 * 2 and set(hevc["metric"]) == {"psnr", "msssim"}
    assert hevc["bd_rate_pct"].to_numpy() == pytest.approx(30.0, abs=2.0)
    assert "corrupt.png" not in set(per_image["image"])
    assert not per_image[per_image["codec"] == "vvc"].shape[0]  # no self-comparison rows


def test_timing_params_and_readme(report_dir):
    timing = (report_dir / "timing.md").read_text()
    assert "| kodak | jpeg | 0.5 s | 0.05 s |" in timing and "cpu" in timing
    params = (report_dir / "params.md").read_text()
    assert "3dm-weconvene" in params and "73.95 M" in params and "| jpeg |" not in params
    readme = (report_dir / "README.md").read_text()
    for name in ("rd-kodak-psnr.png", "rd-kodak-msssim.png", "bdrate-kodak-per-image.png"):
        assert f"]({name})" in readme
    assert "BD-rate vs the published VTM" in readme and "| vvc [anchor] |" in readme
    assert "corrupt" not in readme and "1 error" in readme


def test_anchor_choice_and_errors(tmp_path):
    run_dir = _write(tmp_path / "run", _rows("kodak", 3, {k: CODECS[k] for k in ("vvc", "hevc")}))
    with pytest.warns(UserWarning, match="has no ok results.*hevc, vvc"):
        build_report(run_dir, anchor="vtm", resamples=50)
    assert "anchor `vtm` has no ok results" in (run_dir / "bdrate.md").read_text()
    assert set(pd.read_csv(run_dir / "bdrate.csv")["flags"]) == {"anchor-missing"}
    assert (run_dir / "rd-kodak-psnr.png").is_file() and (run_dir / "timing.md").is_file()
    build_report(run_dir, anchor="hevc:quick", resamples=50)
    table = pd.read_csv(run_dir / "bdrate.csv").set_index(["codec", "metric"])
    assert table.loc[("vvc", "psnr"), "bd_rate_pct"] == pytest.approx(100 / 1.3 - 100, abs=1.0)
    with pytest.raises(HarnessError, match="no config 'paper'"):
        build_report(run_dir, anchor="hevc:paper", resamples=50)
    two = _rows("kodak", 3, {"vvc": CODECS["vvc"]}) + [
        {**row, "config": "slow"} for row in _rows("kodak", 3, {"vvc": CODECS["vvc"]})
    ]
    two[0]["status"] = "error"  # "slow" has more ok rows, so it is the default anchor config
    with pytest.warns(UserWarning, match="status 'error'"):
        build_report(_write(tmp_path / "two", two), resamples=50)
    assert "using `slow` (pass --anchor vvc:CONFIG" in (tmp_path / "two" / "bdrate.md").read_text()
    labels = set(pd.read_csv(tmp_path / "two" / "bdrate.csv")["label"])
    assert labels == {"vvc (quick)", "vvc (slow)"}


def test_unreadable_results_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="not found"):
        build_report(tmp_path)
    (tmp_path / "results.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(HarnessError, match="cannot read"):
        build_report(tmp_path)
    pd.DataFrame({"dataset": ["kodak"]}).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(HarnessError, match="lacks column"):
        build_report(tmp_path)
    rows = _rows("kodak", 2, {"vvc": CODECS["vvc"]})
    _write(tmp_path, [{**row, "status": "error"} for row in rows])
    with pytest.raises(HarnessError, match="no rows with status 'ok'"):
        build_report(tmp_path)


def test_published_anchors_are_unchanged_copies_with_sources(shared_dir):
    manifest = json.loads((ANCHORS_DIR / "manifest.json").read_text())["files"]
    listed = {entry["file"] for entry in manifest}
    on_disk = {str(p.relative_to(ANCHORS_DIR)) for p in ANCHORS_DIR.rglob("*") if p.is_file()} - {"manifest.json", "README.md"}
    assert listed == on_disk
    reference = shared_dir / "data" / "reference"
    for entry in manifest:
        assert len(entry["source"]) > 40 and entry["datasets"]
        copy = ANCHORS_DIR / entry["file"]
        original = reference / entry["file"]
        assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest(), entry["file"]
    labels = {(c.dataset, c.label) for c in load_published_curves()}
    assert ("kodak", "VTM") in labels and ("kodak", "WeConvene (ECCV 2024)") in labels


def test_weconvene_vs_published_vtm_on_kodak():
    table = anchor_bdrate_table().set_index(["dataset", "label", "metric"])
    row = table.loc[("kodak", "WeConvene (ECCV 2024)", "psnr")]
    assert -9.0 < row["bd_rate_pct"] < -8.0 and row["reliable"]
    assert row["paper_bd_rate_pct"] == pytest.approx(-9.8)
    assert table.loc[("tecnick", "WeConvene (ECCV 2024)", "psnr"), "flags"] == "no published VTM"
    assert not any(label == "VTM" for _, label, _ in table.index)


@pytest.mark.parametrize("file, measured, label", [
    ("jpeg.json", "jpeg", "JPEG"),
    # An imported CompressAI model's curve (harness import-weights) meets CompressAI's published one.
    ("compressai-mbt2018_mse_cuda.json", "compressai-mbt2018", "mbt2018"),
])
def test_fidelity_against_published_curve_of_the_same_codec(tmp_path, shared_dir, file, measured, label):
    published = json.loads((shared_dir / "data" / "reference" / "compressai" / "kodak" / file).read_text())["results"]
    rows = []
    for codec, factor in ((measured, 1.0), ("vvc", 0.5)):
        for quality, (bpp, psnr, ms_ssim) in enumerate(zip(published["bpp"], published["psnr-rgb"], published["ms-ssim-rgb"])):
            rows.append({**_rows("kodak", 1, {"vvc": CODECS["vvc"]})[0], "codec": codec, "quality": float(quality),
                         "bpp": bpp * factor, "psnr_rgb": psnr, "ms_ssim": ms_ssim, "ms_ssim_db": -10 * np.log10(1 - ms_ssim)})
    build_report(_write(tmp_path / "run", rows), resamples=20)
    fidelity = (tmp_path / "run" / "fidelity.md").read_text()
    assert f"| kodak | {measured} | PSNR-RGB | {label} | +0.00 % |" in fidelity
    assert f"| kodak | {measured} | MS-SSIM (dB) | {label} | +0.00 % |" in fidelity
    assert "Measured vs published curves" in (tmp_path / "run" / "README.md").read_text()


def test_every_measured_metric_gets_a_bd_rate_and_the_jpeg_ai_mean(tmp_path):
    # Each metric is a different increasing function of the same per-point quality target, so
    # every metric's true BD-rate is the codec's rate factor − 1 (hevc +30 %, weconvene −10 %).
    rows = _rows("kodak", 6, CODECS)
    for row in rows:
        level = row["psnr_rgb"]
        row.update(psnr_y=level + 0.5, psnr_u=level + 6, psnr_v=level + 5, psnr_yuv=level + 1.5,
                   ms_ssim_y=1 - 10 ** (-level / 25), iw_ssim=1 - 10 ** (-level / 20), vif=level / 60,
                   fsim=1 - 10 ** (-level / 30), nlpd=10 ** (-level / 40), psnr_hvs_m=level + 3,
                   vmaf=2.5 * level - 20, metrics="core,psnr_yuv,ms_ssim_y,psnr_hvs_m,nlpd,iw_ssim,vif,fsim,vmaf")
    run_dir = _write(tmp_path / "run", rows)
    build_report(run_dir, resamples=50, rd_plots=("psnr", "vmaf", "nlpd"))
    table = pd.read_csv(run_dir / "bdrate.csv", keep_default_na=False, na_values=[""]).set_index(["codec", "metric"])
    measured = ["psnr", "msssim", "psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "ms_ssim_y", "iw_ssim", "vif", "fsim",
                "nlpd", "psnr_hvs_m", "vmaf"]
    for metric in measured:
        assert table.loc[("hevc", metric), "bd_rate_pct"] == pytest.approx(30.0, abs=1.5), metric
        assert table.loc[("hevc", metric), "ci95_low"] <= 30.0 <= table.loc[("hevc", metric), "ci95_high"], metric
    jpeg_ai = table.loc[("hevc", "jpeg_ai")]
    assert jpeg_ai["bd_rate_pct"] == pytest.approx(table.loc["hevc"].loc[
        ["psnr_y", "psnr_u", "psnr_v", "ms_ssim_y", "iw_ssim", "vif", "fsim", "nlpd", "psnr_hvs_m", "vmaf"],
        "bd_rate_pct"].mean(), abs=1e-3) and bool(jpeg_ai["reliable"])  # the CSV keeps 4 decimals
    assert table.loc[("3dm-weconvene", "jpeg_ai"), "bd_rate_pct"] == pytest.approx(-10.0, abs=1.0)
    text = (run_dir / "bdrate.md").read_text()
    assert "## BD-rate per metric" in text and "| Method | PSNR-RGB | MS-SSIM (dB) | PSNR-Y (dB) |" in text
    assert "VMAF | JPEG AI mean |" in text and "`vmaf`" in text.split("Metrics measured", 1)[1].split("\n")[0]
    assert (run_dir / "rd-kodak-vmaf.png").is_file() and (run_dir / "rd-kodak-nlpd.png").is_file()
    assert not (run_dir / "rd-kodak-msssim.png").exists()

    # Half of the rows without VMAF (an earlier run's) and no FSIM: the mean is partial and says so.
    for row in rows[::2]:
        row.update(vmaf=None, metrics="core,psnr_yuv,ms_ssim_y,psnr_hvs_m,nlpd,iw_ssim,vif")
    for row in rows:
        row["fsim"] = None
    build_report(_write(tmp_path / "partial", rows), resamples=50)
    table = pd.read_csv(tmp_path / "partial" / "bdrate.csv", keep_default_na=False, na_values=[""])
    row = table[(table["codec"] == "hevc") & (table["metric"] == "jpeg_ai")].iloc[0]
    assert "mean of 9 of 10" in row["flags"] and not row["reliable"]
    assert "fsim" not in set(table["metric"])
    assert f"`vmaf` ({len(rows) // 2} of {len(rows)} rows)" in (tmp_path / "partial" / "bdrate.md").read_text()


def test_a_codec_without_a_published_curve_says_so_in_fidelity(tmp_path):
    rows = [{**r, "codec": "jpegxl" if r["codec"] == "hevc" else r["codec"]} for r in _rows("kodak", 3, CODECS)]
    build_report(_write(tmp_path / "run", rows), resamples=20)
    assert "same codec: no published kodak curve of jpegxl" in (tmp_path / "run" / "fidelity.md").read_text()


def _learned_run(tmp_path: Path, steps: int) -> Path:
    from harness.leaderboard.summary import RunSummary, write_summary

    codecs = {"vvc": CODECS["vvc"], "jpeg": CODECS["jpeg"], "webp": (1.6, [50, 70, 80, 90], None),
              "tiny": (0.8, [0.0018, 0.0067, 0.025, 0.1], 1.65e6)}
    rows = _rows("kodak", 6, codecs)
    for row in rows:
        if row["codec"] == "tiny":
            row["config"] = "sweep-tiny-mse"
    run_dir = _write(tmp_path / "demo", rows)
    models = tuple({"curve": "tiny:sweep-tiny-mse", "variant": "tiny", "metric": "mse", "lambda": lmbda,
                    "params": 1_653_260, "steps": steps, "batch_size": 8, "patch": 64, "train_s": 90.0 + i,
                    "device": "cpu: Test CPU, 1 thread(s)", "warmup_s": 0.0, "warmup_steps": 0,
                    "imported": "", "data": "704 training patches of 128x128 from 49 images"}
                   for i, lmbda in enumerate(codecs["tiny"][1]))
    write_summary(RunSummary(run_dir=str(run_dir), profile="quick", datasets=("kodak",), cells=len(rows),
                             computed=len(rows), reused=0, errors=0, codecs=(), unavailable=(), first_errors=(),
                             finished_at="2026-12-02T00:00:00Z", curves={}, models=models), run_dir)
    build_report(run_dir, resamples=50)
    return run_dir


def test_readme_opens_with_the_learned_models_their_scale_and_standing(tmp_path):
    readme = (_learned_run(tmp_path, steps=150) / "README.md").read_text()
    opening = readme.split("## This run")[0]
    assert opening.startswith("# Leaderboard run `demo`\n\n## Learned models")
    assert "**Demo scale: these are not the paper's models.** Each trained for at most 150 steps" in opening
    assert "1,550,000" in opening and "harness rerun --plan schedule/paper.toml --address" in opening
    row = next(line for line in opening.splitlines() if line.startswith("| `tiny:sweep-tiny-mse`"))
    assert "1.65 M" in row and "0.0018, 0.0067, 0.025, 0.1" in row and "150 (8 x 64²)" in row
    assert "1.5 min per model (6.1 in all) on cpu: Test CPU, 1 thread(s)" in row and "from 49 images" in row
    standing = next(line for line in opening.splitlines() if line.startswith("| kodak | tiny |"))
    header = next(line for line in opening.splitlines() if line.startswith("| Dataset | Learned curve |"))
    values = dict(zip(header.strip("| ").split(" | ")[2:], standing.strip("| ").split(" | ")[2:]))
    # The rate factors make the true BD-rates 0.8 / factor - 1.
    for codec, factor in (("jpeg", 2.5), ("webp", 1.6), ("vvc", 1.0)):
        assert float(values[f"vs {codec}"].rstrip(" %")) == pytest.approx(100 * (0.8 / factor - 1), abs=1.0)


def test_models_at_the_papers_length_are_not_called_demo_scale(tmp_path, report_dir):
    readme = (_learned_run(tmp_path, steps=1_550_000) / "README.md").read_text()
    assert "Demo scale" not in readme and "the paper's recipe length" in readme
    assert "## Learned models" not in (report_dir / "README.md").read_text()  # no run.json: nothing to say


def test_a_lossless_image_is_set_aside_and_the_bd_rates_are_those_without_it(tmp_path):
    codecs = {"vvc": CODECS["vvc"], "jpeg": CODECS["jpeg"], "hevc": CODECS["hevc"]}
    rows = _rows("kodak", 6, codecs)
    clean = build_report(_write(tmp_path / "clean", rows), resamples=100).set_index(["codec", "metric"])
    # A 1x1 image: jpeg reconstructs it exactly (PSNR inf; MS-SSIM is not measurable that small),
    # the others at rates far from the rest of the dataset.
    tiny = [{**row, "image": "tiny.png", "image_sha256": "f" * 64, "width": 1, "height": 1, "bpp": row["bpp"] * 50,
             "ms_ssim": math.nan, "ms_ssim_db": math.nan} for row in _rows("kodak", 1, codecs, seed=5)]
    for row in tiny:
        if row["codec"] == "jpeg":
            row["psnr_rgb"] = math.inf
    run_dir = _write(tmp_path / "tiny", rows + tiny)
    with_tiny = build_report(run_dir, resamples=100).set_index(["codec", "metric"])
    for metric in ("psnr", "msssim"):
        for column in ("bd_rate_pct", "ci95_low", "ci95_high", "bd_quality_db"):
            assert with_tiny.loc[("jpeg", metric), column] == pytest.approx(clean.loc[("jpeg", metric), column]), column
        assert with_tiny.loc[("jpeg", metric), "reliable"] and with_tiny.loc[("jpeg", metric), "n_images"] == 6
    table = read_results(run_dir / "results.parquet")
    flagged = table[table["degenerate"].notna()]
    assert set(flagged["codec"]) == {"jpeg"} and set(flagged["image"]) == {"tiny.png"}
    assert set(flagged["degenerate"]) == {"psnr_rgb inf"} and len(table) == len(rows) + len(tiny)
    for name in ("bdrate.md", "README.md", "timing.md", "fidelity.md"):
        numbers = [line for line in (run_dir / name).read_text().splitlines() if "set aside" not in line]
        assert not [line for line in numbers if re.search(r"\binf\b", line, re.IGNORECASE)], name
    assert not np.isinf(pd.read_csv(run_dir / "bdrate.csv").select_dtypes("number").to_numpy()).any()
    assert "**Set aside:** 5 ok row(s)" in (run_dir / "bdrate.md").read_text()
    assert "tiny.png in jpeg:quick (psnr_rgb inf)" in (run_dir / "README.md").read_text()


def test_which_rows_are_degenerate():
    rows = pd.DataFrame({
        "status": ["ok", "ok", "ok", "ok", "ok", "error"],
        "bpp": [0.5, math.nan, 0.5, 0.5, 0.5, math.nan],
        "psnr_rgb": [math.inf, 30.0, 30.0, 30.0, math.nan, math.nan],
        "ms_ssim": [math.nan, 0.9, math.nan, 0.9, 0.9, math.nan],  # NaN: too small to measure, not degenerate
        "ms_ssim_y": [math.nan, math.nan, math.nan, 1.0, math.nan, math.nan],
    })
    assert degenerate(rows).tolist() == ["psnr_rgb inf", "bpp NaN", None, "ms_ssim_y 1 (infinite in dB)",
                                         "psnr_rgb NaN", None]


def test_report_command_rebuilds_an_existing_run_and_the_bd_rates_of_its_run_json(tmp_path, capsys):
    """`harness report RUN` on a run folder: every report file again, RD plots as asked, and in
    run.json each curve's BD-rate replaced (a stale one dropped) while the engine's part is kept."""
    from harness.cli import main
    from harness.leaderboard.summary import RunSummary, read_summary, write_summary

    run_dir = _write(tmp_path / "run", _rows("kodak", 4, {k: CODECS[k] for k in ("vvc", "hevc", "jpeg")}))
    models = ({"curve": "tiny:s", "variant": "tiny", "metric": "mse", "lambda": 0.05, "params": 1_653_260, "steps": 150,
               "batch_size": 8, "patch": 64, "train_s": 90.0, "device": "cpu", "warmup_s": 0.0, "warmup_steps": 0,
               "imported": "", "data": "704 training patches"},)
    write_summary(RunSummary(run_dir=str(run_dir), profile="quick", datasets=("kodak",), cells=52, computed=52,
                             reused=0, errors=0, codecs=(), unavailable=(), first_errors=(), finished_at="2026-12-02",
                             curves={"kodak/hevc:quick": {"enc_s": 0.26, "dec_s": 0.05, "bd_rate": 999.0},
                                     "kodak/gone:quick": {"enc_s": 1.0, "dec_s": 1.0, "bd_rate": 5.0}},
                             models=models), run_dir)
    assert main(["report", str(run_dir), "--anchor", "vvc", "--rd-plots", "psnr"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run_dir / 'README.md'}\nweb report: {run_dir / 'index.html'}"
    for name in ("README.md", "bdrate.md", "bdrate.csv", "timing.md", "params.md", "fidelity.md", "rd-kodak-psnr.png"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "rd-kodak-msssim.png").exists() and not (run_dir / ".lock").exists()
    summary = read_summary(run_dir)
    assert summary.curves["kodak/hevc:quick"]["bd_rate"] == pytest.approx(30.0, abs=1.0)
    assert summary.curves["kodak/hevc:quick"]["enc_s"] == 0.26 and "bd_rate" not in summary.curves["kodak/gone:quick"]
    assert summary.curves["kodak/vvc:quick"] == {"bd_rate": 0.0} and summary.models == models
    (run_dir / "run.json").unlink()  # results.parquet alone is a run folder too
    assert main(["report", str(run_dir)]) == 0 and not (run_dir / "run.json").exists()


@pytest.mark.parametrize("key", ["metrics", "models", "conversions"])
def test_a_run_json_lacking_a_field_is_one_line(tmp_path, capsys, key):
    from harness.cli import main
    from harness.leaderboard.summary import RunSummary, write_summary

    run_dir = _write(tmp_path / "run", _rows("kodak", 2, {"vvc": CODECS["vvc"]}))
    write_summary(RunSummary(run_dir=str(run_dir), profile="quick", datasets=("kodak",), cells=1, computed=1,
                             reused=0, errors=0, codecs=(), unavailable=(), first_errors=(), finished_at="2026-12-02",
                             curves={}), run_dir)
    data = json.loads((run_dir / "run.json").read_text())
    del data[key]  # as a harness before the field wrote it
    (run_dir / "run.json").write_text(json.dumps(data))
    assert main(["report", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is not a leaderboard run summary (KeyError: '{key}')" in err, err


def test_report_command_errors_are_one_line(tmp_path, capsys):
    from harness.cli import main

    assert main(["report", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err == (f"harness report: error: {tmp_path / 'empty' / 'results.parquet'} not found: run `harness "
                   "leaderboard` first or point at a run folder\n")
    assert not (tmp_path / "empty").exists()  # the lock's folder is not left behind
    _write(tmp_path / "run", _rows("kodak", 2, {"vvc": CODECS["vvc"]}))
    assert main(["report", str(tmp_path / "run"), "--rd-plots", "butteraugli"]) == 1
    assert capsys.readouterr().err.startswith("harness report: error: --rd-plots: unknown metric")
    with pytest.raises(SystemExit) as exited:
        main(["leaderboard", "--report-only", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "unrecognized arguments: --report-only" in err
