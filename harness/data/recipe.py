"""The training-patch recipe of 3DM-WeConvene (paper §III-C).

The paper aggregates CLIC, LIU4K and COCO, resizes every image to 2000×2000,
augments by rotation and scaling and cuts 480×480 patches (160,000 in all).
:class:`PatchRecipe` holds every one of those numbers; :func:`plan_patches`
draws the per-patch transforms from a generator seeded by ``(seed, sha256 of
the source file)`` alone, so a patch depends on nothing but the file's bytes
and the recipe: not on the worker, the shard it lands in or the file's name.

Geometry: the image is mapped onto a *canvas* (2000×2000 by default, the
source size with ``resize=None``). A patch is a square region of side
``patch / scale`` on that canvas, resampled to ``patch × patch`` and rotated by
a multiple of 90° (lossless, no border fill). Each patch is resampled once,
straight from the decoded source through Pillow's ``resize(box=...)``, which is
the same as resizing the whole canvas first and cropping, without paying for a
2000×2000 intermediate per image.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from harness.errors import HarnessError

# Bump when a change to this module changes the bytes of a patch: shards from
# an older recipe version are then never mistaken for current ones on resume.
RECIPE_VERSION = 1

SMALL_POLICIES = ("reject", "upscale")
_TRANSPOSE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class PatchRecipe:
    """How one source image becomes training patches (defaults: the paper's)."""

    patch: int = 480
    resize: int | None = 2000  # side of the square canvas; None keeps the source size and aspect
    patches_per_image: int = 8
    rotations: tuple[int, ...] = (0, 90, 180, 270)  # degrees, drawn uniformly per patch
    scale_min: float = 0.5  # patch covers patch/scale canvas pixels, scale ~ U[scale_min, scale_max]
    scale_max: float = 1.0
    small: str = "reject"  # sources whose shorter side is below `patch`: "reject" or "upscale"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.patch < 8:
            raise HarnessError(f"--patch must be at least 8 pixels, got {self.patch}")
        if self.resize is not None and self.resize < self.patch:
            raise HarnessError(f"--resize {self.resize} is smaller than --patch {self.patch}")
        if self.patches_per_image < 1:
            raise HarnessError(f"--patches-per-image must be >= 1, got {self.patches_per_image}")
        if not self.rotations or any(r not in (0, 90, 180, 270) for r in self.rotations):
            raise HarnessError(f"--rotations must be a list of 0/90/180/270, got {list(self.rotations)}")
        if not 0 < self.scale_min <= self.scale_max:
            raise HarnessError(f"--scale needs 0 < MIN <= MAX, got {self.scale_min},{self.scale_max}")
        if self.small not in SMALL_POLICIES:
            raise HarnessError(f"--small must be one of {', '.join(SMALL_POLICIES)}, got {self.small!r}")

    def describe(self) -> dict:
        return {**asdict(self), "rotations": list(self.rotations), "version": RECIPE_VERSION}


@dataclass(frozen=True)
class PatchTransform:
    """Where one patch comes from: a box in source pixels, resampled, then rotated."""

    index: int
    box: tuple[float, float, float, float]  # left, top, right, bottom in source pixel coordinates
    scale: float  # patch pixels per canvas pixel
    rotation: int  # degrees counter-clockwise

    def describe(self) -> dict:
        return {"index": self.index, "box": [round(v, 4) for v in self.box], "scale": round(self.scale, 6),
                "rotation": self.rotation}


def small_image_reason(recipe: PatchRecipe, width: int, height: int) -> str | None:
    """Why a ``width``×``height`` source is unusable under ``recipe`` (None if usable)."""
    if min(width, height) >= recipe.patch or recipe.small == "upscale":
        return None
    return f"{width}x{height} is smaller than the {recipe.patch}px patch (use --small upscale to enlarge such images)"


def image_rng(seed: int, sha256: str) -> np.random.Generator:
    """The generator for one source file: a function of the recipe seed and the file's bytes only."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def _canvas_scale(recipe: PatchRecipe, width: int, height: int) -> tuple[float, float]:
    """Canvas pixels per source pixel along x and y."""
    if recipe.resize is not None:
        return recipe.resize / width, recipe.resize / height
    factor = max(1.0, recipe.patch / min(width, height))  # >1 only for small sources under "upscale"
    return factor, factor


def plan_patches(recipe: PatchRecipe, width: int, height: int, sha256: str, count: int) -> list[PatchTransform]:
    """Draw ``count`` patch transforms for a decoded ``width``×``height`` source."""
    reason = small_image_reason(recipe, width, height)
    if reason is not None:
        raise HarnessError(reason)
    rng = image_rng(recipe.seed, sha256)
    sx, sy = _canvas_scale(recipe, width, height)
    canvas_w, canvas_h = width * sx, height * sy
    # The region (patch / scale canvas pixels) must fit on the canvas.
    lowest = max(recipe.scale_min, recipe.patch / min(canvas_w, canvas_h))
    highest = max(lowest, recipe.scale_max)
    transforms = []
    for index in range(count):
        scale = float(rng.uniform(lowest, highest)) if highest > lowest else lowest
        side = recipe.patch / scale
        left = int(rng.integers(0, math.floor(canvas_w - side + 1e-9) + 1))
        top = int(rng.integers(0, math.floor(canvas_h - side + 1e-9) + 1))
        rotation = int(recipe.rotations[int(rng.integers(0, len(recipe.rotations)))])
        box = (left / sx, top / sy, min((left + side) / sx, width), min((top + side) / sy, height))
        transforms.append(PatchTransform(index, box, scale, rotation))
    return transforms


def cut_patch(image: Image.Image, transform: PatchTransform, patch: int) -> Image.Image:
    """Render one patch (RGB, ``patch``×``patch``) from the decoded source ``image``."""
    left, top, right, bottom = transform.box
    exact = right - left == patch and bottom - top == patch and left == int(left) and top == int(top)
    if exact:
        # A 1:1 region is a plain crop: no resampling, the pixels stay bit-exact.
        region = image.crop((int(left), int(top), int(right), int(bottom)))
    else:
        region = image.resize((patch, patch), Image.Resampling.LANCZOS, box=transform.box)
    if transform.rotation:
        region = region.transpose(_TRANSPOSE[transform.rotation])
    return region
