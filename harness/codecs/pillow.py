"""Still-image codecs through Pillow's bundled libraries: JPEG (libjpeg-turbo),
WebP (libwebp) and JPEG 2000 (OpenJPEG). Settings mirror CompressAI's
``compressai.utils.bench`` JPEG/WebP runs (Pillow defaults plus a quality
ladder), so our curves are comparable with its published ones.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

import numpy as np
import PIL
from PIL import Image, features

from harness.codecs.base import Codec, CodecError, CodecUnavailable


class PillowCodec(Codec):
    format: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]]  # PIL.features names: the codec's library, then its variants

    def probe(self) -> str:
        if not features.check(self.libraries[0]):
            raise CodecUnavailable(f"Pillow {PIL.__version__} was built without {self.libraries[0]} support")
        found = [f"{name} {features.version(name)}" for name in self.libraries if features.check(name)]
        return "; ".join([f"Pillow {PIL.__version__}", *found])

    def save_options(self, quality: float) -> dict:
        raise NotImplementedError

    def encode(self, rgb: np.ndarray, quality: float, workdir: Path) -> bytes:
        buffer = io.BytesIO()
        try:
            Image.fromarray(rgb, "RGB").save(buffer, format=self.format, **self.save_options(quality))
        except (OSError, ValueError) as error:
            raise CodecError(f"{self.id} encode failed: {error}") from None
        return buffer.getvalue()

    def decode(self, bitstream: bytes, height: int, width: int, workdir: Path) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(bitstream)) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as error:
            raise CodecError(f"{self.id} decode failed: {error}") from None
        if pixels.shape[:2] != (height, width):
            raise CodecError(f"{self.id} decode: got {pixels.shape[1]}x{pixels.shape[0]}, expected {width}x{height}")
        return pixels


class JPEG(PillowCodec):
    """Baseline JPEG, Pillow's defaults (4:2:0 chroma, standard tables) unless
    ``subsampling``/``optimize`` are set; ladder of ``quality`` 1–95."""

    id = "jpeg"
    description = "JPEG (Pillow / libjpeg-turbo)"
    format = "JPEG"
    libraries = ("jpg", "libjpeg_turbo")

    def save_options(self, quality: float) -> dict:
        options = {"quality": int(quality), "optimize": bool(self.settings.get("optimize", False))}
        if "subsampling" in self.settings:
            options["subsampling"] = str(self.settings["subsampling"])
        return options


class WebP(PillowCodec):
    """Lossy WebP (VP8 intra, 4:2:0), ladder of ``quality`` 0–100, ``method`` effort."""

    id = "webp"
    description = "WebP lossy (Pillow / libwebp)"
    format = "WEBP"
    libraries = ("webp",)

    def save_options(self, quality: float) -> dict:
        return {"quality": int(quality), "method": int(self.settings.get("method", 4)), "lossless": False}


class JPEG2000(PillowCodec):
    """JPEG 2000 codestream (.j2k, no JP2 box) with OpenJPEG's irreversible 9/7
    wavelet and colour transform; the ladder is target bits per pixel, turned
    into OpenJPEG's compression ratio against 24-bit RGB."""

    id = "jpeg2000"
    description = "JPEG 2000 (Pillow / OpenJPEG)"
    format = "JPEG2000"
    libraries = ("jpg_2000",)

    def save_options(self, quality: float) -> dict:
        if quality <= 0:
            raise CodecError(f"jpeg2000 ladder values are target bpp and must be > 0, got {quality}")
        return {"quality_mode": "rates", "quality_layers": [24.0 / float(quality)],
                "irreversible": True, "mct": 1, "no_jp2": True}
