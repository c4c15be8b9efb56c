"""Reading any image Pillow understands as 8-bit RGB, the one pixel format the
harness measures in (PSNR-RGB, MS-SSIM on RGB, bpp over H·W).

Every conversion that changes the data (alpha dropped, 16-bit reduced, CMYK or
palette or grayscale expanded, EXIF rotation applied, the first frame taken of an
animation or multi-page file) is reported in ``RGBImage.notice`` so that callers
can print it once; undecodable files raise :class:`HarnessError` with the file
name and Pillow's reason.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from harness.errors import HarnessError

# The pixel limit of every image the harness reads or decodes (compress and decompress take
# --max-pixels): Pillow's decompression-bomb limit, 89.5 MP, larger than any test set image
# (8K is 33 MP) with room.
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS)
_EXIF_ORIENTATION = 0x0112

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass(frozen=True)
class RGBImage:
    pixels: np.ndarray  # uint8, H×W×3, C-contiguous
    source_mode: str  # Pillow mode of the file before conversion
    notice: str | None  # one line describing a lossy or geometric conversion, if any

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's convert("L") clips 16-bit values; scale by the bit depth instead.
        array = np.asarray(image, dtype=np.uint32)
        shift = 8 if array.max(initial=0) > 255 or mode.startswith("I;16") else 0
        gray = (array >> shift).clip(0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB"), f"{mode} (16-bit gray) reduced to 8-bit RGB"
    if mode == "F":
        gray = np.asarray(image, dtype=np.float64).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB"), "float gray converted to 8-bit RGB"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB"), f"{mode} converted to RGB (alpha dropped)"
    return image.convert("RGB"), f"{mode} converted to RGB"


def _sixteen_bit(image: Image.Image) -> bool:
    """Whether the file holds 16-bit colour samples that Pillow decodes into an 8-bit mode: a
    16-bit RGB or RGBA PNG (or TIFF) opens as mode RGB/RGBA, only the decoder's raw mode
    (``RGB;16B``) telling the depth. 16-bit gray has modes of its own (see :func:`_to_rgb`)."""
    if image.mode.startswith("I"):
        return False
    for tile in image.tile:
        args = tile[3]
        rawmode = args if isinstance(args, str) else next((a for a in args or () if isinstance(a, str)), "")
        if ";16" in rawmode:
            return True
    return False


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """The block reads ``path`` with Pillow: its failures, and the file system's, become one-line
    errors naming the file. Pillow's own size warning is silenced: the callers check the size
    against ``max_pixels`` themselves."""
    try:
        if path.stat().st_size == 0:
            raise HarnessError(f"cannot read image {path}: empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except HarnessError:
        raise
    except FileNotFoundError:
        raise HarnessError(f"cannot read image {path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HarnessError(f"cannot read image {path}: {reason}") from None


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> RGBImage:
    """Decode ``path`` fully into an :class:`RGBImage` (EXIF orientation applied), refusing
    from its header an image of more than ``max_pixels`` (Pillow's own hard limit is twice
    its default: above that Pillow refuses the file whatever ``max_pixels`` says)."""
    path = Path(path)
    with _reading(path):
        with Image.open(path) as opened:
            check_pixels(opened.width, opened.height, max_pixels, f"cannot read image {path}")
            # Read before load(): the raw mode goes with the tiles, and counting frames seeks.
            reduced = _sixteen_bit(opened)
            frames = int(getattr(opened, "n_frames", 1))
            opened.load()
            source_mode = opened.mode
            rotated = opened.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
            rgb, notice = _to_rgb(ImageOps.exif_transpose(opened))
    notice = "; ".join(filter(None, [
        "EXIF orientation applied" if rotated else None,
        notice,
        f"16-bit {source_mode} samples reduced to 8 bits" if reduced else None,
        f"first of {frames} frames coded, the others ignored" if frames > 1 else None,
    ])) or None
    return RGBImage(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), source_mode, notice)


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Refuse an image of more than ``max_pixels`` pixels; ``what`` starts the message."""
    if width * height > max_pixels:
        raise HarnessError(f"{what}: {width}x{height} is {width * height:,} pixels, over the limit of "
                           f"{max_pixels:,} (--max-pixels)")


def save_png(pixels: np.ndarray, path: str | Path) -> None:
    """Write an H×W×3 uint8 array as a PNG (lossless, no metadata, deterministic bytes)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise HarnessError(f"expected an HxWx3 uint8 array, got {pixels.dtype} {pixels.shape}")
    Image.fromarray(pixels, "RGB").save(path, format="PNG", optimize=False, compress_level=6)


def image_size(path: str | Path) -> tuple[int, int]:
    """Width and height from the file header, without decoding the pixels.

    Cheap enough to screen a large corpus; truncation in the pixel data only
    shows when :func:`load_rgb` decodes the file.
    """
    path = Path(path)
    with _reading(path), Image.open(path) as opened:
        return int(opened.width), int(opened.height)
