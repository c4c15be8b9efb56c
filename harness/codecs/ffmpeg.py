"""Codecs run through the static ffmpeg of ``imageio-ffmpeg``: video codecs as
still-image intra coders, HEVC (libx265), VVC (libvvenc, decoded by ffmpeg's
native VVC decoder) and AV1 (libaom, still-picture mode, decoded by dav1d); and
JPEG XL (libjxl), which takes the RGB image itself.

For the video codecs the harness converts RGB to Y'CbCr itself (:mod:`harness.pixels.colour`) and
hands ffmpeg raw planes in the exact pixel format the encoder codes, so no
implicit swscale conversion happens on either side; the bitstream is the raw
elementary stream (Annex-B / OBU), whose size is the rate.
"""

from __future__ import annotations

import re
import struct
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from harness.codecs.base import Codec, CodecError, CodecUnavailable
from harness.errors import HarnessError
from harness.pixels.colour import (
    YCbCrFormat,
    planes_from_bytes,
    planes_to_bytes,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)


@lru_cache(maxsize=None)
def _ffmpeg_exe(override: str | None) -> str:
    if override:
        if not Path(override).is_file():
            raise CodecUnavailable(f"ffmpeg binary {override} does not exist")
        return override
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise CodecUnavailable(f"no ffmpeg binary (imageio-ffmpeg: {error})") from None


@lru_cache(maxsize=None)
def _ffmpeg_version(exe: str) -> str:
    out = subprocess.run([exe, "-version"], capture_output=True, timeout=60, check=False).stdout.decode()
    match = re.search(r"ffmpeg version (\S+)", out)
    return match.group(1) if match else "unknown"


class FFmpegCodec(Codec):
    """Shared raw-plane plumbing; subclasses name the encoder and its options."""

    encoder: ClassVar[str]
    muxer: ClassVar[str]
    decoder: ClassVar[str | None] = None  # None: ffmpeg's default decoder for the stream
    version_pattern: ClassVar[str]
    default_chroma: ClassVar[str] = "444"
    quality_name: ClassVar[str] = "qp"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        chroma = str(self.settings.get("chroma", self.default_chroma))
        self.planes_mode = chroma == "400x3"
        self.format = YCbCrFormat(
            matrix=str(self.settings.get("matrix", "bt709")),
            full_range=bool(self.settings.get("full_range", True)),
            bit_depth=int(self.settings.get("bit_depth", 10)),
            chroma="420" if self.planes_mode else chroma,
        )
        self.threads = int(self.settings.get("threads", 1))

    @property
    def exe(self) -> str:
        return _ffmpeg_exe(self.settings.get("ffmpeg"))

    def encoder_args(self, quality: float) -> list[str]:
        raise NotImplementedError

    def probe(self) -> str:
        return _probe(type(self), self.exe, self.format.ffmpeg_pix_fmt)

    def _coded_size(self, height: int, width: int) -> tuple[int, int]:
        """4:2:0 encoders need even sizes: odd images are edge-padded by one sample
        and cropped after decoding (the rate still counts the original H·W)."""
        if self.format.chroma == "420":
            return height + height % 2, width + width % 2
        return height, width

    def _encode_planes(self, planes: list[np.ndarray], height: int, width: int, quality: float, workdir: Path) -> bytes:
        raw, out = workdir / "in.yuv", workdir / f"out.{self.muxer}"
        coded_h, coded_w = self._coded_size(height, width)
        planes[0] = np.pad(planes[0], ((0, coded_h - height), (0, coded_w - width)), mode="edge")
        height, width = coded_h, coded_w
        raw.write_bytes(planes_to_bytes(planes))
        self.run_tool(
            [self.exe, "-hide_banner", "-nostdin", "-loglevel", "error",
             "-f", "rawvideo", "-pix_fmt", self.format.ffmpeg_pix_fmt, "-s", f"{width}x{height}", "-r", "1",
             "-i", raw, "-frames:v", "1", "-threads", str(self.threads),
             "-c:v", self.encoder, *self.encoder_args(quality), "-f", self.muxer, "-y", out],
            "encode",
        )
        return out.read_bytes()

    def _decode_planes(self, bitstream: bytes, height: int, width: int, workdir: Path) -> list[np.ndarray]:
        stream, raw = workdir / f"dec.{self.muxer}", workdir / "dec.yuv"
        stream.write_bytes(bitstream)
        coded_h, coded_w = self._coded_size(height, width)
        decoder = ["-c:v", self.decoder] if self.decoder else []
        self.run_tool(
            [self.exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(self.threads),
             "-f", self.muxer, *decoder, "-i", stream, "-frames:v", "1",
             "-f", "rawvideo", "-pix_fmt", self.format.ffmpeg_pix_fmt, "-y", raw],
            "decode",
        )
        try:
            planes = planes_from_bytes(raw.read_bytes(), self.format, coded_h, coded_w)
        except HarnessError as error:  # size mismatch: the stream is not the picture we coded
            raise CodecError(f"{self.id} decode: {error}") from None
        planes[0] = planes[0][:height, :width]
        return planes

    def encode(self, rgb: np.ndarray, quality: float, workdir: Path) -> bytes:
        height, width = rgb.shape[:2]
        if not self.planes_mode:
            return self._encode_planes(rgb_to_ycbcr(rgb, self.format), height, width, quality, workdir)
        # 4:4:4 through a 4:2:0-only encoder: each full-resolution plane is coded as
        # the luma of its own picture with flat (mid-grey) chroma, which costs ~nothing.
        full = YCbCrFormat(self.format.matrix, self.format.full_range, self.format.bit_depth, "444")
        neutral = np.full(((height + 1) // 2, (width + 1) // 2), 1 << (full.bit_depth - 1), dtype=full.dtype)
        streams = [
            self._encode_planes([plane, neutral, neutral], height, width, quality, workdir)
            for plane in rgb_to_ycbcr(rgb, full)
        ]
        return b"".join(struct.pack(">I", len(s)) + s for s in streams)

    def decode(self, bitstream: bytes, height: int, width: int, workdir: Path) -> np.ndarray:
        if not self.planes_mode:
            return ycbcr_to_rgb(self._decode_planes(bitstream, height, width, workdir), self.format, height, width)
        full = YCbCrFormat(self.format.matrix, self.format.full_range, self.format.bit_depth, "444")
        planes, offset = [], 0
        for _ in range(3):
            if offset + 4 > len(bitstream):
                raise CodecError(f"{self.id} decode: truncated 3-plane bitstream")
            (size,) = struct.unpack_from(">I", bitstream, offset)
            chunk = bitstream[offset + 4: offset + 4 + size]
            if len(chunk) != size:
                raise CodecError(f"{self.id} decode: truncated 3-plane bitstream")
            planes.append(self._decode_planes(chunk, height, width, workdir)[0])
            offset += 4 + size
        return ycbcr_to_rgb(planes, full, height, width)


def _test_run(exe: str, argv: list[str]) -> tuple[int, str]:
    """Run a capability probe of ffmpeg: (exit code, its log); a binary that cannot run is unavailable."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CodecUnavailable(f"ffmpeg {exe} cannot run: {error}") from None
    return done.returncode, done.stderr.decode("utf-8", "replace")


def _last_line(log: str) -> str:
    return ([line for line in log.splitlines() if line.strip()][-1:] or ["no output"])[0][:200]


@lru_cache(maxsize=None)
def _probe(cls: type[FFmpegCodec], exe: str, pix_fmt: str) -> str:
    """Encode one tiny frame to prove the encoder exists and read its library version."""
    ffmpeg = _ffmpeg_version(exe)
    argv = [exe, "-hide_banner", "-nostdin", "-loglevel", "info", "-f", "lavfi",
            "-i", "color=c=gray:s=64x64:d=1", "-frames:v", "1", "-pix_fmt", pix_fmt,
            "-c:v", cls.encoder, "-f", "null", "-"]
    returncode, log = _test_run(exe, argv)
    if returncode != 0:
        if "Unknown encoder" in log or "Encoder not found" in log:
            raise CodecUnavailable(f"ffmpeg {ffmpeg} has no {cls.encoder} encoder")
        raise CodecUnavailable(f"ffmpeg {cls.encoder} test encode failed: {_last_line(log)}")
    match = re.search(cls.version_pattern, log)
    library = match.group(1) if match else "unknown"
    return f"ffmpeg {ffmpeg}; {cls.encoder} {library}"


class HEVC(FFmpegCodec):
    """HEVC intra with x265, 4:4:4 10-bit full range by default, with the settings
    BPG uses for stills: one intra picture, no adaptive quantisation, no
    psycho-visual RDO and no SEI user data (so the rate is the picture's)."""

    id = "hevc"
    description = "HEVC intra (x265 via ffmpeg)"
    encoder = "libx265"
    muxer = "hevc"
    version_pattern = r"HEVC encoder version (\S+)"

    def encoder_args(self, quality: float) -> list[str]:
        fmt = self.format
        params = {
            "qp": int(quality), "keyint": 1, "aq-mode": 0, "psy-rd": 0, "psy-rdoq": 0,
            "info": 0, "pools": self.threads, "frame-threads": 1,
            "range": "full" if fmt.full_range else "limited", "colormatrix": fmt.matrix,
        }
        params.update(self.settings.get("x265_params", {}))
        joined = ":".join(f"{k}={v}" for k, v in params.items())
        return ["-preset", str(self.settings.get("preset", "medium")), "-x265-params", joined]


class VVC(FFmpegCodec):
    """VVC intra with VVenC (4:2:0 10-bit only; ``chroma = "400x3"`` codes each
    full-resolution plane as its own picture for a 4:4:4-like mode). PSNR
    optimised: perceptual QP adaptation (``qpa``) off."""

    id = "vvc"
    description = "VVC intra (VVenC via ffmpeg, native ffmpeg VVC decoder)"
    encoder = "libvvenc"
    muxer = "vvc"
    default_chroma = "420"
    version_pattern = r"libvvenc version: (\S+)"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        if self.format.bit_depth != 10:
            raise CodecUnavailable("libvvenc codes 10-bit only; set bit_depth = 10")

    def encoder_args(self, quality: float) -> list[str]:
        return ["-preset", str(self.settings.get("preset", "medium")), "-qp", str(int(quality)),
                "-qpa", "1" if self.settings.get("qpa", False) else "0"]


class AV1(FFmpegCodec):
    """AV1 still picture with libaom (constant-quality mode, ladder of ``crf``),
    4:4:4 10-bit by default, decoded with dav1d."""

    id = "av1"
    description = "AV1 still picture (libaom via ffmpeg, dav1d decoder)"
    encoder = "libaom-av1"
    muxer = "obu"
    decoder = "libdav1d"
    version_pattern = r"\[libaom-av1 @ \S+\] (v\S+)"
    quality_name = "crf"

    def encoder_args(self, quality: float) -> list[str]:
        return ["-still-picture", "1", "-cpu-used", str(int(self.settings.get("cpu_used", 4))),
                "-crf", str(int(quality)), "-b:v", "0", "-aq-mode", "0"]


class JPEGXL(Codec):
    """JPEG XL with libjxl through the bundled ffmpeg: 8-bit RGB in (tagged sRGB/BT.709,
    so libjxl need not guess), the bare codestream out (no container box), decoded by
    ffmpeg's libjxl decoder. The ladder is the Butteraugli ``distance`` (lower = better;
    libjxl's default 1.0 is "visually lossless"); ``effort`` 1-9 trades speed for size."""

    id = "jpegxl"
    description = "JPEG XL (libjxl via ffmpeg)"
    encoder = "libjxl"
    quality_name = "distance"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.effort = int(self.settings.get("effort", 7))
        if not 1 <= self.effort <= 9:
            raise HarnessError(f"jpegxl effort must be 1..9, got {self.effort}")
        self.threads = int(self.settings.get("threads", 1))

    @property
    def exe(self) -> str:
        return _ffmpeg_exe(self.settings.get("ffmpeg"))

    def probe(self) -> str:
        return _probe_jxl(self.exe)

    def encode(self, rgb: np.ndarray, quality: float, workdir: Path) -> bytes:
        if not 0 < quality <= 15:
            raise CodecError(f"jpegxl ladder values are Butteraugli distances in (0, 15], got {quality:g}")
        height, width = rgb.shape[:2]
        raw, out = workdir / "in.rgb", workdir / "out.jxl"
        raw.write_bytes(np.ascontiguousarray(rgb).tobytes())
        self.run_tool(
            [self.exe, "-hide_banner", "-nostdin", "-loglevel", "error",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "1",
             "-color_primaries", "bt709", "-color_trc", "iec61966-2-1", "-i", raw, "-frames:v", "1",
             "-threads", str(self.threads), "-c:v", "libjxl", "-distance", f"{quality:g}",
             "-effort", str(self.effort), "-f", "image2", "-update", "1", "-y", out],
            "encode",
        )
        return out.read_bytes()

    def decode(self, bitstream: bytes, height: int, width: int, workdir: Path) -> np.ndarray:
        stream, raw = workdir / "dec.jxl", workdir / "dec.rgb"
        stream.write_bytes(bitstream)
        # -xerror: on a truncated codestream ffmpeg's libjxl wrapper otherwise retries forever
        # ("Unexpected end of JXL codestream"), ignoring SIGTERM, until the timeout kills it.
        self.run_tool(
            [self.exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-xerror", "-threads", str(self.threads),
             "-c:v", "libjxl", "-i", stream, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-y", raw],
            "decode",
        )
        if not raw.is_file():
            raise CodecError("jpegxl decode: ffmpeg wrote no picture (corrupt or truncated codestream)")
        data = raw.read_bytes()
        if len(data) != height * width * 3:
            raise CodecError(f"jpegxl decode: got {len(data)} bytes, expected {width}x{height} RGB")
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3).copy()


@lru_cache(maxsize=None)
def _probe_jxl(exe: str) -> str:
    """Encode and decode one tiny frame: both the libjxl encoder and decoder must be there."""
    ffmpeg = _ffmpeg_version(exe)
    with tempfile.TemporaryDirectory(prefix="harness-jxl-probe-") as scratch:
        out = Path(scratch) / "probe.jxl"
        steps = (
            ("encoder", [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
                         "-i", "color=c=gray:s=16x16:d=1", "-frames:v", "1", "-pix_fmt", "rgb24",
                         "-c:v", "libjxl", "-f", "image2", "-update", "1", "-y", str(out)]),
            ("decoder", [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-c:v", "libjxl", "-i", str(out),
                         "-f", "null", "-"]),
        )
        for what, argv in steps:
            returncode, log = _test_run(exe, argv)
            if returncode != 0:
                if "Unknown encoder" in log or "Unknown decoder" in log or "not found" in log:
                    raise CodecUnavailable(f"ffmpeg {ffmpeg} has no libjxl {what} (built without --enable-libjxl)")
                raise CodecUnavailable(f"ffmpeg libjxl test {what} failed: {_last_line(log)}")
    # The static ffmpeg links libjxl in and does not print its version: the ffmpeg build pins it.
    return f"ffmpeg {ffmpeg}; libjxl (linked into that ffmpeg build)"
