"""Codec wrappers: colour conversion, real encodes/decodes through ffmpeg and
Pillow on small crops, unavailability reasons, failures as one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from harness.codecs import CODECS, codec_class
from harness.codecs.base import CodecError, CodecUnavailable
from harness.codecs.config import DEFAULT_DIR, load_config, resolve_codecs
from harness.errors import HarnessError
from harness.leaderboard.quality import ms_ssim, psnr_rgb
from harness.pixels.colour import YCbCrFormat, rgb_to_ycbcr, upsample_420, ycbcr_to_rgb
from harness.pixels.images import load_rgb
from harness.pixels.msssim import ms_ssim_db


@pytest.fixture(scope="module")
def crop(kodak_dir: Path) -> np.ndarray:
    return np.ascontiguousarray(load_rgb(kodak_dir / "kodim23.png").pixels[200:264, 300:380])  # 64×80


def _all_colours() -> np.ndarray:
    """Every 8-bit value on each channel, mixed: 256×256 image covering the RGB cube's faces."""
    a = np.arange(256, dtype=np.uint8)
    r, g = np.meshgrid(a, a, indexing="ij")
    return np.stack([r, g, 255 - ((r.astype(int) + g) // 2).astype(np.uint8)], axis=-1)


@pytest.mark.parametrize("full_range", [True, False])
@pytest.mark.parametrize("matrix", ["bt709", "bt601"])
def test_10bit_444_round_trip_is_lossless(matrix: str, full_range: bool) -> None:
    rgb = _all_colours()
    fmt = YCbCrFormat(matrix=matrix, full_range=full_range, bit_depth=10, chroma="444")
    assert np.array_equal(ycbcr_to_rgb(rgb_to_ycbcr(rgb, fmt), fmt, 256, 256), rgb)


def test_ycbcr_code_values_follow_h273() -> None:
    pixels = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8)
    y, cb, cr = rgb_to_ycbcr(pixels, YCbCrFormat("bt709", True, 10, "444"))
    assert y.tolist() == [[1023, 0, 217]] and cb[0, :2].tolist() == [512, 512] and cr[0, 2] == 1023
    y, cb, cr = rgb_to_ycbcr(pixels, YCbCrFormat("bt709", False, 10, "444"))
    assert y.tolist() == [[940, 64, 250]] and cb[0, :2].tolist() == [512, 512] and cr[0, 2] == 960


def test_420_odd_size_round_trip_keeps_flat_colour() -> None:
    rgb = np.full((7, 9, 3), (40, 120, 200), dtype=np.uint8)
    fmt = YCbCrFormat(chroma="420")
    planes = rgb_to_ycbcr(rgb, fmt)
    assert planes[1].shape == (4, 5)
    assert np.abs(ycbcr_to_rgb(planes, fmt, 7, 9).astype(int) - rgb).max() <= 1



@pytest.mark.parametrize("shape, size", [((4, 5), (7, 9)), ((1, 1), (2, 2)), ((3, 8), (6, 16)), ((17, 2), (33, 3))])
def test_420_upsampling_is_torchs_centre_sited_bilinear(shape, size) -> None:
    """The numpy upsampling is what CompressAI-style evaluations compute with torch, to float64 rounding."""
    import torch
    import torch.nn.functional as F

    plane = np.random.default_rng(0).normal(size=shape) * 1023
    expected = F.interpolate(torch.from_numpy(plane)[None, None], size=(2 * shape[0], 2 * shape[1]), mode="bilinear",
                             align_corners=False)[0, 0, : size[0], : size[1]].numpy()
    np.testing.assert_allclose(upsample_420(plane, *size), expected, rtol=0, atol=1e-12)

def _codec(codec_id: str, **overrides):
    config = load_config(codec_id, "quick")
    settings = {**config.settings, **overrides}
    codec = codec_class(codec_id)(settings)
    try:
        codec.probe()
    except CodecUnavailable as reason:
        pytest.skip(reason=f"{codec_id} unavailable here: {reason}")
    return codec, config.ladder


@pytest.mark.parametrize("codec_id", sorted(CODECS))
@pytest.mark.parametrize("size", [(64, 80), (45, 67)])
def test_real_encode_decode(codec_id: str, size: tuple[int, int], crop: np.ndarray, tmp_path: Path) -> None:
    codec, ladder = _codec(codec_id)
    image = np.ascontiguousarray(crop[: size[0], : size[1]])
    best = min(ladder) if codec_id in {"vvc", "hevc", "av1", "vtm", "bpg", "jpegxl"} else max(ladder)
    bitstream = codec.encode(image, best, tmp_path)
    decoded = codec.decode(bitstream, *size, tmp_path)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert 0 < len(bitstream) < image.nbytes
    assert psnr_rgb(image, decoded) > 26.0


def test_vvc_400x3_codes_three_planes(crop: np.ndarray, tmp_path: Path) -> None:
    plain, _ = _codec("vvc")
    planes, _ = _codec("vvc", chroma="400x3")
    q = 27
    ref = psnr_rgb(crop, plain.decode(plain.encode(crop, q, tmp_path), *crop.shape[:2], tmp_path))
    bitstream = planes.encode(crop, q, tmp_path)
    decoded = planes.decode(bitstream, *crop.shape[:2], tmp_path)
    assert psnr_rgb(crop, decoded) > ref  # full-resolution chroma beats 4:2:0 at equal QP
    with pytest.raises(CodecError, match="truncated"):
        planes.decode(bitstream[:-5], *crop.shape[:2], tmp_path)


def test_versions_name_the_libraries() -> None:
    assert "libx265" in _codec("hevc")[0].probe()
    assert "libvvenc" in _codec("vvc")[0].probe()
    assert "libjpeg_turbo" in _codec("jpeg")[0].probe()


def test_truncated_bitstream_is_a_codec_error(crop: np.ndarray, tmp_path: Path) -> None:
    codec, _ = _codec("hevc")
    bitstream = codec.encode(crop, 32, tmp_path)
    with pytest.raises(CodecError, match="hevc decode"):
        codec.decode(bitstream[:12], *crop.shape[:2], tmp_path)


def test_timeout_and_crash_are_codec_errors(crop: np.ndarray, tmp_path: Path) -> None:
    slow, _ = _codec("hevc", timeout_s=0.001)
    with pytest.raises(CodecError, match="timed out after 0.001 s"):
        slow.encode(crop, 32, tmp_path)
    broken, _ = _codec("hevc", preset="no-such-preset")
    with pytest.raises(CodecError, match=r"hevc encode failed \(exit"):
        broken.encode(crop, 32, tmp_path)


def test_missing_binaries_are_unavailable_with_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HARNESS_VTM_DIR", raising=False)
    with pytest.raises(CodecUnavailable, match="HARNESS_VTM_DIR"):
        codec_class("vtm")({}).probe()
    with pytest.raises(CodecUnavailable, match=f"no executable EncoderApp/DecoderApp in {tmp_path}"):
        codec_class("vtm")({"bin_dir": str(tmp_path)}).probe()
    with pytest.raises(CodecUnavailable, match=f"bpgenc not found on {tmp_path}"):
        codec_class("bpg")({"bin_dir": str(tmp_path)}).probe()
    with pytest.raises(CodecUnavailable, match="does not exist"):
        codec_class("hevc")({"ffmpeg": str(tmp_path / "ffmpeg")}).probe()


def test_unknown_codec_lists_known_ones() -> None:
    with pytest.raises(HarnessError, match=r"unknown codec 'h264'; known codecs: av1, bpg, hevc, jpeg"):
        resolve_codecs(("h264",), "quick")


def test_config_files_and_hash(tmp_path: Path) -> None:
    for codec_id in CODECS:  # every codec ships both profiles
        assert len(load_config(codec_id, "quick").ladder) == 4
        assert len(load_config(codec_id, "paper").ladder) == 6
    (tmp_path / "hevc.toml").write_text('[defaults]\npreset = "fast"\n[configs.a]\nladder = [30]\n'
                                        '[configs.b]\nladder = [30, 35]\ntimeout_s = 5\n[configs.c]\nladder = [30]\npreset = "slow"\n')
    a, b, c = (load_config("hevc", name, tmp_path) for name in "abc")
    assert a.config_hash == b.config_hash != c.config_hash  # ladder and timeout do not shape bitstreams
    with pytest.raises(HarnessError, match=r"no \[configs.paper\]; available: a, b, c"):
        load_config("hevc", "paper", tmp_path)
    (tmp_path / "jpeg.toml").write_text("[configs.quick\nladder = 1")
    with pytest.raises(HarnessError, match="cannot parse codec configuration"):
        load_config("jpeg", "quick", tmp_path)
    assert DEFAULT_DIR.name == "codecs"


def test_metrics(crop: np.ndarray, kodak_dir: Path) -> None:
    assert psnr_rgb(crop, crop) == math.inf
    noisy = crop.copy()
    noisy[0, 0, 0] ^= 16  # one sample off by 16: MSE = 256 / samples
    assert psnr_rgb(crop, noisy) == pytest.approx(10 * math.log10(255**2 * crop.size / 256))
    assert math.isnan(ms_ssim(crop, noisy))  # below pytorch-msssim's 161-pixel minimum
    full = load_rgb(kodak_dir / "kodim23.png").pixels[:192, :192]
    assert ms_ssim(full, full) == pytest.approx(1.0)
    blurred = ((full.astype(np.uint16) + np.roll(full, 1, axis=1)) // 2).astype(np.uint8)
    value = ms_ssim(full, blurred)
    assert 0.9 < value < 1.0 and ms_ssim_db(value) == pytest.approx(-10 * math.log10(1 - value))
    with pytest.raises(HarnessError, match="equal"):
        psnr_rgb(crop, full)


def test_jpegxl_distance_ladder_and_bad_input(crop: np.ndarray, tmp_path: Path) -> None:
    codec, ladder = _codec("jpegxl")
    assert "libjxl" in codec.probe() and "ffmpeg" in codec.probe()
    fine, coarse = (codec.encode(crop, d, tmp_path) for d in (min(ladder), max(ladder)))
    assert fine[:2] == b"\xff\x0a" and len(fine) > len(coarse)  # a bare JPEG XL codestream
    assert psnr_rgb(crop, codec.decode(fine, *crop.shape[:2], tmp_path)) > psnr_rgb(
        crop, codec.decode(coarse, *crop.shape[:2], tmp_path))
    with pytest.raises(CodecError, match="jpegxl decode"):
        codec.decode(fine[:20], *crop.shape[:2], tmp_path)
    with pytest.raises(CodecError, match="Butteraugli distances"):
        codec.encode(crop, 0, tmp_path)


def test_jpegxl_without_libjxl_is_unavailable_and_the_run_goes_on(kodak_dir: Path, tmp_path: Path) -> None:
    from harness.leaderboard.config import LeaderboardConfig
    from harness.leaderboard.plan import plan

    fake = tmp_path / "ffmpeg"  # an ffmpeg built without libjxl answers like this
    fake.write_text('#!/bin/sh\ncase "$*" in *-version*) echo "ffmpeg version 7.1-nojxl"; exit 0;; esac\n'
                    'echo "Unknown encoder \'libjxl\'" >&2\nexit 1\n')
    fake.chmod(0o755)
    with pytest.raises(CodecUnavailable, match="ffmpeg 7.1-nojxl has no libjxl encoder"):
        codec_class("jpegxl")({"ffmpeg": str(fake)}).probe()
    codecs = tmp_path / "codecs"
    codecs.mkdir()
    (codecs / "jpeg.toml").write_text("[configs.quick]\nladder = [50]\n")
    (codecs / "jpegxl.toml").write_text(f'[configs.quick]\nffmpeg = "{fake}"\nladder = [1.0]\n')
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes((kodak_dir / "kodim01.png").read_bytes())
    planned = plan(LeaderboardConfig(datasets=(f"folder:{images}",), codec_dir=codecs, reports_dir=tmp_path / "r"))
    assert planned.unavailable == {"jpegxl:quick": "ffmpeg 7.1-nojxl has no libjxl encoder (built without --enable-libjxl)"}
    assert [c.codec.label for c in planned.todo] == ["jpeg:quick"]
