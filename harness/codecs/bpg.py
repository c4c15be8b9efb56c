"""BPG (Bellard's HEVC-based still-image format) through ``bpgenc``/``bpgdec``
when they are on ``PATH`` (or in ``bin_dir`` of ``codecs/bpg.toml``): 4:4:4,
Y'CbCr, x265 back end, the configuration of CompressAI's published
``bpg_444_x265_ycbcr`` curve."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from harness.codecs.base import Codec, CodecError, CodecUnavailable
from harness.errors import HarnessError
from harness.pixels.images import load_rgb, save_png


class BPG(Codec):
    id = "bpg"
    description = "BPG 4:4:4 (bpgenc/bpgdec, x265 back end)"

    def _binaries(self) -> tuple[str, str]:
        directory = self.settings.get("bin_dir")
        found = []
        for name in ("bpgenc", "bpgdec"):
            path = shutil.which(name, path=str(Path(directory).expanduser()) if directory else None)
            if path is None:
                where = directory or "PATH"
                raise CodecUnavailable(f"{name} not found on {where} (install libbpg or set bin_dir in codecs/bpg.toml)")
            found.append(path)
        return found[0], found[1]

    def probe(self) -> str:
        encoder, _ = self._binaries()
        try:
            out = subprocess.run([encoder, "-h"], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise CodecUnavailable(f"{encoder} cannot run: {error}") from None
        match = re.search(r"version (\S+)", (out.stdout + out.stderr).decode("utf-8", "replace"))
        return f"bpg {match.group(1) if match else 'unknown'}"

    def encode(self, rgb: np.ndarray, quality: float, workdir: Path) -> bytes:
        encoder, _ = self._binaries()
        source, out = workdir / "in.png", workdir / "out.bpg"
        save_png(rgb, source)
        self.run_tool(
            [encoder, "-q", str(int(quality)), "-f", str(self.settings.get("chroma", "444")),
             "-c", str(self.settings.get("colour_space", "ycbcr")), "-b", str(int(self.settings.get("bit_depth", 8))),
             "-e", "x265", "-m", str(int(self.settings.get("level", 8))), "-o", out, source],
            "encode",
        )
        return out.read_bytes()

    def decode(self, bitstream: bytes, height: int, width: int, workdir: Path) -> np.ndarray:
        _, decoder = self._binaries()
        stream, out = workdir / "dec.bpg", workdir / "dec.png"
        stream.write_bytes(bitstream)
        self.run_tool([decoder, "-o", out, stream], "decode")
        try:
            pixels = load_rgb(out).pixels
        except HarnessError as error:
            raise CodecError(f"bpg decode: {error}") from None
        if pixels.shape[:2] != (height, width):
            raise CodecError(f"bpg decode: got {pixels.shape[1]}x{pixels.shape[0]}, expected {width}x{height}")
        return pixels
