"""The VVC reference software (VTM ``EncoderApp``/``DecoderApp``) in all-intra,
coding RGB as Y'CbCr 4:4:4 (BT.709 full range, 10-bit by default): the anchor of
the 3DM-WeConvene paper's BD-rates and of CompressAI's published ``vtm`` curve.

VTM is not redistributable as a wheel, so it is used only when the user points
``HARNESS_VTM_DIR`` (or ``bin_dir`` in ``codecs/vtm.toml``) at a build: the
directory holding the binaries (or its ``bin/``), with the encoder
configuration taken from ``cfg`` or VTM's ``cfg/encoder_intra_vtm.cfg``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

from harness.codecs.base import Codec, CodecError, CodecUnavailable
from harness.errors import HarnessError
from harness.pixels.colour import YCbCrFormat, planes_from_bytes, planes_to_bytes, rgb_to_ycbcr, ycbcr_to_rgb

_ENCODERS = ("EncoderAppStatic", "EncoderApp")
_DECODERS = ("DecoderAppStatic", "DecoderApp")


def _find(directory: Path, names: tuple[str, ...]) -> Path | None:
    for folder in (directory, directory / "bin"):
        for name in names:
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


class VTM(Codec):
    id = "vtm"
    description = "VVC reference encoder VTM, all-intra 4:4:4"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.format = YCbCrFormat(
            matrix=str(self.settings.get("matrix", "bt709")),
            full_range=bool(self.settings.get("full_range", True)),
            bit_depth=int(self.settings.get("bit_depth", 10)),
            chroma="444",
        )

    def _locate(self) -> tuple[Path, Path, Path]:
        root = os.environ.get("HARNESS_VTM_DIR") or self.settings.get("bin_dir")
        if not root:
            raise CodecUnavailable("VTM not configured: set HARNESS_VTM_DIR or bin_dir in codecs/vtm.toml")
        directory = Path(root).expanduser()
        encoder, decoder = _find(directory, _ENCODERS), _find(directory, _DECODERS)
        if encoder is None or decoder is None:
            raise CodecUnavailable(f"no executable EncoderApp/DecoderApp in {directory} or {directory / 'bin'}")
        cfg = self.settings.get("cfg")
        if cfg:
            config = Path(cfg).expanduser()
        else:
            candidates = [p / "cfg" / "encoder_intra_vtm.cfg" for p in (directory, *directory.parents[:2])]
            config = next((c for c in candidates if c.is_file()), candidates[0])
        if not config.is_file():
            raise CodecUnavailable(f"VTM all-intra configuration {config} not found (set cfg in codecs/vtm.toml)")
        return encoder, decoder, config

    def probe(self) -> str:
        encoder, _, config = self._locate()
        try:
            out = subprocess.run([str(encoder), "--help"], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise CodecUnavailable(f"{encoder} cannot run: {error}") from None
        match = re.search(r"VTM Encoder Version (\S+)", (out.stdout + out.stderr).decode("utf-8", "replace"))
        if match is None:
            raise CodecUnavailable(f"{encoder} did not print a VTM version; is it VTM's EncoderApp?")
        return f"VTM {match.group(1)}; cfg {config.name}"

    def encode(self, rgb: np.ndarray, quality: float, workdir: Path) -> bytes:
        encoder, _, config = self._locate()
        height, width = rgb.shape[:2]
        raw, out = workdir / "in.yuv", workdir / "out.bin"
        raw.write_bytes(planes_to_bytes(rgb_to_ycbcr(rgb, self.format)))
        depth = str(self.format.bit_depth)
        self.run_tool(
            [encoder, "-c", config, "-i", raw, "-b", out, "-o", "", "-wdt", str(width), "-hgt", str(height),
             "-fr", "1", "-f", "1", "-q", str(int(quality)),
             f"--InputBitDepth={depth}", f"--OutputBitDepth={depth}", f"--InternalBitDepth={depth}",
             "--InputChromaFormat=444", "--ChromaFormatIDC=444", "--ConformanceWindowMode=1",
             f"--Level={self.settings.get('level', '6.2')}"],
            "encode",
        )
        return out.read_bytes()

    def decode(self, bitstream: bytes, height: int, width: int, workdir: Path) -> np.ndarray:
        _, decoder, _ = self._locate()
        stream, raw = workdir / "dec.bin", workdir / "dec.yuv"
        stream.write_bytes(bitstream)
        self.run_tool([decoder, "-b", stream, "-o", raw, "-d", str(self.format.bit_depth)], "decode")
        try:
            planes = planes_from_bytes(raw.read_bytes(), self.format, height, width)
        except HarnessError as error:
            raise CodecError(f"vtm decode: {error}") from None
        return ycbcr_to_rgb(planes, self.format, height, width)
