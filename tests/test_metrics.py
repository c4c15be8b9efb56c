"""The JPEG AI metric set on decoded Kodak crops, each checked against a computation that does
not go through harness.leaderboard.quality: Y'CbCr PSNRs from the H.273 equations written out here,
VMAF from ffmpeg's libvmaf run on raw planes built here, library metrics from the libraries
called directly; identical images give each metric's best value, a blurred copy a worse one."""

from __future__ import annotations

import io
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.leaderboard import metrics, quality, results
from harness.leaderboard.config import LeaderboardConfig
from harness.pixels.images import load_rgb
from harness.report.config import ReportConfig

# Kr, Kb of BT.709 (H.273 Table 4, MatrixCoefficients 1).
KR, KB = 0.2126, 0.0722


@pytest.fixture(scope="module")
def pair(kodak_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 256×256 Kodak crop and its JPEG (quality 30) decode: a real codec's output."""
    reference = np.ascontiguousarray(load_rgb(kodak_dir / "kodim05.png").pixels[100:356, 200:456])
    buffer = io.BytesIO()
    Image.fromarray(reference).save(buffer, format="JPEG", quality=30)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).copy()
    return reference, decoded


def _ycbcr(rgb: np.ndarray, full: bool, bits: int) -> list[np.ndarray]:
    """H.273 equations (8-bit RGB → E'Y, E'Pb, E'Pr → integer codes), written out independently."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255.0 for i in range(3))
    ey = KR * r + (1 - KR - KB) * g + KB * b
    epb = (b - ey) / (2 * (1 - KB))
    epr = (r - ey) / (2 * (1 - KR))
    if full:
        peak = 2**bits - 1
        codes = [peak * ey, peak * epb + 2 ** (bits - 1), peak * epr + 2 ** (bits - 1)]
    else:
        scale = 2 ** (bits - 8)
        codes = [(219 * ey + 16) * scale, (224 * epb + 128) * scale, (224 * epr + 128) * scale]
    return [np.clip(np.round(c), 0, 2**bits - 1) for c in codes]


def _luma(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((_ycbcr(rgb, True, 10)[0] / 1023.0).astype(np.float32))[None, None]


def test_psnr_yuv_follows_the_h273_equations(pair) -> None:
    reference, decoded = pair
    expected = []
    for ref, dec in zip(_ycbcr(reference, True, 10), _ycbcr(decoded, True, 10)):
        expected.append(10 * math.log10(1023.0**2 / np.mean((ref - dec) ** 2)))
    got = quality.measure(reference, decoded, ("psnr_yuv",))
    assert [got["psnr_y"], got["psnr_u"], got["psnr_v"]] == pytest.approx(expected, abs=1e-9)
    assert got["psnr_yuv"] == pytest.approx((6 * expected[0] + expected[1] + expected[2]) / 8, abs=1e-9)
    assert 25 < got["psnr_y"] < got["psnr_u"]  # JPEG's 4:2:0 chroma: Cb/Cr on smoother content


def _ffmpeg_vmaf(work: Path, reference: np.ndarray, decoded: np.ndarray) -> float:
    """libvmaf through ffmpeg directly: raw 8-bit limited-range BT.709 4:4:4 files, the score line of its log."""
    import imageio_ffmpeg

    height, width = reference.shape[:2]
    for name, rgb in (("ref", reference), ("dist", decoded)):
        (work / f"{name}.yuv").write_bytes(b"".join(p.astype(np.uint8).tobytes() for p in _ycbcr(rgb, False, 8)))
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv444p", "-s", f"{width}x{height}"]
    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *raw, "-i", str(work / "dist.yuv"),
         *raw, "-i", str(work / "ref.yuv"), "-lavfi", "[0:v][1:v]libvmaf=model=version=vmaf_v0.6.1", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120, check=True)
    return float(re.search(r"VMAF score: ([\d.]+)", done.stderr).group(1))


def test_vmaf_matches_ffmpeg_libvmaf_run_directly(pair, tmp_path: Path) -> None:
    reference, decoded = pair
    direct = _ffmpeg_vmaf(tmp_path, reference, decoded)
    assert quality.measure(reference, decoded, ("vmaf",))["vmaf"] == pytest.approx(direct, abs=0.01)
    assert 20 < direct < 95


def test_library_metrics_match_the_libraries_called_directly(pair) -> None:
    import piq
    import psnr_hvsm
    from IQA_pytorch import NLPD
    from pytorch_msssim import ms_ssim

    reference, decoded = pair
    got = quality.measure(reference, decoded, metrics.resolve_metrics(("all",)))
    y_ref, y_dec = _luma(reference), _luma(decoded)
    rgb = [torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None] for a in (reference, decoded)]
    with torch.no_grad():
        assert got["ms_ssim_y"] == pytest.approx(float(ms_ssim(y_ref, y_dec, data_range=1.0)), abs=1e-6)
        assert got["iw_ssim"] == pytest.approx(float(piq.information_weighted_ssim(y_ref, y_dec, data_range=1.0)), abs=1e-6)
        assert got["vif"] == pytest.approx(float(piq.vif_p(y_ref, y_dec, data_range=1.0)), abs=1e-6)
        assert got["fsim"] == pytest.approx(float(piq.fsim(*rgb, data_range=1.0, chromatic=True)), abs=1e-6)
        assert got["nlpd"] == pytest.approx(float(NLPD(channels=1)(y_dec, y_ref, as_loss=False)), abs=1e-6)
    # The numpy back end of psnr-hvsm: an implementation independent of the C++ one the harness uses.
    _, hvsm = psnr_hvsm.BACKENDS["numpy"]["psnr_hvs_hvsm"](y_ref[0, 0].double().numpy(), y_dec[0, 0].double().numpy())
    assert got["psnr_hvs_m"] == pytest.approx(float(hvsm), abs=1e-6)
    assert got["psnr_rgb"] == quality.psnr_rgb(reference, decoded)


BEST = {"psnr_rgb": math.inf, "ms_ssim": 1.0, "psnr_y": math.inf, "psnr_u": math.inf, "psnr_v": math.inf,
        "psnr_yuv": math.inf, "ms_ssim_y": 1.0, "iw_ssim": 1.0, "vif": 1.0, "fsim": 1.0, "nlpd": 0.0,
        "psnr_hvs_m": math.inf}


def test_identical_images_score_best_and_a_blurred_copy_worse(pair) -> None:
    reference, _ = pair
    blurred = np.asarray(Image.fromarray(reference).resize((128, 128), Image.BILINEAR).resize((256, 256), Image.BILINEAR))
    names = metrics.resolve_metrics(("all",))
    same, worse = quality.measure(reference, reference, names), quality.measure(reference, blurred, names)
    for column, best in BEST.items():
        assert same[column] == pytest.approx(best, abs=1e-5), column
        assert (worse[column] > best + 1e-3) if column == "nlpd" else (worse[column] < best - 1e-3), column
    # VMAF's model scores identical pictures ≈ 97.4, not 100: best is "what identity gets".
    assert same["vmaf"] > 97 and worse["vmaf"] < same["vmaf"] - 10


def test_small_images_give_nan_not_a_crash(pair) -> None:
    reference, decoded = (a[:12, :20] for a in pair)
    got = quality.measure(reference, decoded, metrics.resolve_metrics(("all",)))
    for column in ("ms_ssim", "ms_ssim_y", "iw_ssim", "vif", "nlpd", "vmaf"):
        assert math.isnan(got[column]), column
    assert math.isfinite(got["psnr_y"]) and math.isfinite(got["psnr_hvs_m"]) and math.isfinite(got["fsim"])


def test_metric_names_resolve_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    assert metrics.resolve_metrics(()) == ("core",)
    assert metrics.resolve_metrics(("vmaf", "psnr_yuv")) == ("core", "psnr_yuv", "vmaf")
    assert set(metrics.resolve_metrics(("all",))) == set(metrics.METRICS)
    assert set(quality.COMPUTE) == set(metrics.METRICS)  # each named metric is computed
    columns = [c for m in metrics.METRICS.values() for c in m.columns]
    assert {*columns, "bpp"} == set(results.MEASURED) and len(columns) == len(set(columns))
    config = LeaderboardConfig(metrics=("all",), reports_dir=tmp_path)
    assert config.metrics == metrics.resolve_metrics(("all",)) and "vmaf" in ReportConfig(tmp_path, rd_plots=("all",)).rd_plots
    assert LeaderboardConfig(reports_dir=tmp_path).metrics == ("core", *metrics.DEFAULT_METRICS)
    with pytest.raises(HarnessError, match="unknown metric.*ssimulacra.*known: psnr_yuv"):
        LeaderboardConfig(metrics=("ssimulacra",))
    with pytest.raises(HarnessError, match="--rd-plots: unknown metric"):
        ReportConfig(tmp_path, rd_plots=("psnr", "butteraugli"))


def test_a_table_lacking_a_column_or_an_ok_rows_metrics_is_one_line(tmp_path: Path) -> None:
    row = {c: None for c in results.COLUMNS}
    row.update(dataset="d", image="i.png", codec="jpeg", config="quick", quality=50.0, bpp=1.0, psnr_rgb=30.0,
               status="ok", metrics="core", created_at=pd.Timestamp("2026-11-25T12:00:00Z"))
    path = tmp_path / "results.parquet"
    pd.DataFrame([row]).to_parquet(path, index=False)
    assert results.read(path)["psnr_rgb"].tolist() == [30.0]
    for missing in ("bpp", "vmaf", "metrics"):  # vmaf and metrics: added before 1.0, as required as the rest
        pd.DataFrame([{k: v for k, v in row.items() if k != missing}]).to_parquet(path, index=False)
        with pytest.raises(HarnessError, match=f"lacks column\\(s\\) {missing}: not a results table"):
            results.read(path)
    pd.DataFrame([{**row, "metrics": None}]).to_parquet(path, index=False)
    with pytest.raises(HarnessError, match="ok rows that name no metrics"):
        results.read(path)
