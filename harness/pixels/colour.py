"""RGB ↔ Y'CbCr conversion done by the harness itself, so that every video codec
sees exactly the samples we intend (ffmpeg's implicit swscale conversions pick
matrices and ranges from tags that raw planes do not carry).

Equations are those of ITU-T H.273 / Rec. ITU-R BT.709 and BT.601: with
E'Y = Kr·R + (1−Kr−Kb)·G + Kb·B, E'Pb = (B−E'Y)/(2(1−Kb)), E'Pr = (R−E'Y)/(2(1−Kr))
on [0, 1] inputs, full range quantises Y = round((2^N−1)·E'Y),
C = round((2^N−1)·E'P + 2^(N−1)); limited ("video") range quantises
Y = round((219·E'Y + 16)·2^(N−8)), C = round((224·E'P + 128)·2^(N−8)).

4:2:0 chroma is produced by a 2×2 box average (chroma sited between the four
luma samples) and restored by centre-sited bilinear interpolation, the pair
used by CompressAI-style evaluations; odd sizes are edge-padded first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError

# (Kr, Kb) of each matrix.
MATRICES: dict[str, tuple[float, float]] = {
    "bt709": (0.2126, 0.0722),
    "bt601": (0.299, 0.114),
    "bt2020": (0.2627, 0.0593),
}


@dataclass(frozen=True)
class YCbCrFormat:
    """How RGB is carried to a codec: matrix, range, bit depth and chroma format."""

    matrix: str = "bt709"
    full_range: bool = True
    bit_depth: int = 10
    chroma: str = "444"  # "444" or "420"

    def __post_init__(self) -> None:
        if self.matrix not in MATRICES:
            raise HarnessError(f"unknown colour matrix {self.matrix!r}; known: {', '.join(MATRICES)}")
        if self.bit_depth not in (8, 10, 12):
            raise HarnessError(f"bit depth must be 8, 10 or 12, got {self.bit_depth}")
        if self.chroma not in ("444", "420"):
            raise HarnessError(f"chroma format must be '444' or '420', got {self.chroma!r}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.bit_depth > 8 else np.dtype("u1")

    @property
    def ffmpeg_pix_fmt(self) -> str:
        depth = "" if self.bit_depth == 8 else f"{self.bit_depth}le"
        return f"yuv{self.chroma}p{depth}"

    def _scales(self) -> tuple[float, float, float, float]:
        """(luma scale, luma offset, chroma scale, chroma offset) in code values."""
        peak = (1 << self.bit_depth) - 1
        if self.full_range:
            return float(peak), 0.0, float(peak), float(1 << (self.bit_depth - 1))
        unit = float(1 << (self.bit_depth - 8))
        return 219.0 * unit, 16.0 * unit, 224.0 * unit, 128.0 * unit


def rgb_to_ycbcr(rgb: np.ndarray, fmt: YCbCrFormat) -> list[np.ndarray]:
    """H×W×3 uint8 RGB → [Y, Cb, Cr] integer planes of ``fmt`` (chroma subsampled for 4:2:0)."""
    kr, kb = MATRICES[fmt.matrix]
    e = rgb.astype(np.float64) / 255.0
    y = kr * e[..., 0] + (1.0 - kr - kb) * e[..., 1] + kb * e[..., 2]
    pb = (e[..., 2] - y) / (2.0 * (1.0 - kb))
    pr = (e[..., 0] - y) / (2.0 * (1.0 - kr))
    if fmt.chroma == "420":
        pb, pr = downsample_420(pb), downsample_420(pr)
    ys, yo, cs, co = fmt._scales()
    peak = (1 << fmt.bit_depth) - 1
    planes = [y * ys + yo, pb * cs + co, pr * cs + co]
    return [np.clip(np.rint(p), 0, peak).astype(fmt.dtype) for p in planes]


def ycbcr_to_rgb(planes: list[np.ndarray], fmt: YCbCrFormat, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: integer planes → H×W×3 uint8 RGB (rounded, clipped)."""
    kr, kb = MATRICES[fmt.matrix]
    ys, yo, cs, co = fmt._scales()
    y = (planes[0].astype(np.float64) - yo) / ys
    pb = (planes[1].astype(np.float64) - co) / cs
    pr = (planes[2].astype(np.float64) - co) / cs
    if fmt.chroma == "420":
        pb, pr = upsample_420(pb, height, width), upsample_420(pr, height, width)
    r = y + 2.0 * (1.0 - kr) * pr
    b = y + 2.0 * (1.0 - kb) * pb
    g = (y - kr * r - kb * b) / (1.0 - kr - kb)
    rgb = np.stack([r, g, b], axis=-1) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def downsample_420(plane: np.ndarray) -> np.ndarray:
    """2×2 box average of a float plane, edge-padding odd sizes."""
    h, w = plane.shape
    padded = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean(axis=(1, 3))


def _bilinear_taps(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ×2 centre-sited upsampling of ``size`` samples: each output's two source indexes and the
    second one's weight. Output i sits at source position (i + 0.5)/2 − 0.5, i.e. k − 0.25 and
    k + 0.25 around sample k, clamped to the first and last sample."""
    position = np.maximum((np.arange(2 * size) + 0.5) / 2 - 0.5, 0.0)
    first = np.floor(position).astype(np.int64)
    return first, np.minimum(first + 1, size - 1), position - first


def upsample_420(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-sited bilinear ×2 upsampling back to ``height``×``width`` (what
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` computes, in numpy
    so that pixel maths needs no torch; the two agree to float64 rounding)."""
    rows, columns = _bilinear_taps(plane.shape[0]), _bilinear_taps(plane.shape[1])
    top, bottom, down = rows
    across = plane[top] * (1.0 - down[:, None]) + plane[bottom] * down[:, None]
    left, right, side = columns
    return (across[:, left] * (1.0 - side) + across[:, right] * side)[:height, :width]


def chroma_shape(fmt: YCbCrFormat, height: int, width: int) -> tuple[int, int]:
    if fmt.chroma == "420":
        return (height + 1) // 2, (width + 1) // 2
    return height, width


def planes_to_bytes(planes: list[np.ndarray]) -> bytes:
    """Planar raw frame (Y then Cb then Cr), little-endian samples."""
    return b"".join(np.ascontiguousarray(p).tobytes() for p in planes)


def planes_from_bytes(data: bytes, fmt: YCbCrFormat, height: int, width: int) -> list[np.ndarray]:
    ch, cw = chroma_shape(fmt, height, width)
    sizes = [(height, width), (ch, cw), (ch, cw)]
    expected = sum(h * w for h, w in sizes) * fmt.dtype.itemsize
    if len(data) != expected:
        raise HarnessError(f"decoded frame has {len(data)} bytes, expected {expected} for {width}x{height} {fmt.ffmpeg_pix_fmt}")
    planes, offset = [], 0
    for h, w in sizes:
        n = h * w * fmt.dtype.itemsize
        planes.append(np.frombuffer(data, dtype=fmt.dtype, count=h * w, offset=offset).reshape(h, w))
        offset += n
    return planes
