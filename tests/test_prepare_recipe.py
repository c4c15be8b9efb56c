"""The patch recipe alone (no Ray): deterministic geometry, exact crops, option checks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.data.recipe import PatchRecipe, cut_patch, plan_patches, small_image_reason
from harness.errors import HarnessError

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_transforms_depend_only_on_seed_and_file_hash():
    recipe = PatchRecipe(patch=64, resize=None)
    first = plan_patches(recipe, 300, 200, SHA_A, 5)
    assert first == plan_patches(recipe, 300, 200, SHA_A, 5)
    assert first != plan_patches(recipe, 300, 200, SHA_B, 5)
    assert first != plan_patches(PatchRecipe(patch=64, resize=None, seed=1), 300, 200, SHA_A, 5)
    # A larger K extends the same sequence, so raising K never changes earlier patches.
    assert plan_patches(recipe, 300, 200, SHA_A, 8)[:5] == first


def test_patches_stay_inside_the_image_and_use_the_requested_augmentations():
    recipe = PatchRecipe(patch=480, resize=2000, rotations=(0, 90), scale_min=0.5, scale_max=1.0)
    transforms = plan_patches(recipe, 1200, 900, SHA_A, 200)
    for t in transforms:
        left, top, right, bottom = t.box
        assert 0 <= left < right <= 1200 and 0 <= top < bottom <= 900
        assert 0.5 <= t.scale <= 1.0 and t.rotation in (0, 90)
    assert {t.rotation for t in transforms} == {0, 90}
    assert max(t.scale for t in transforms) - min(t.scale for t in transforms) > 0.3


def test_unit_scale_without_resize_is_a_bit_exact_crop():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    recipe = PatchRecipe(patch=64, resize=None, scale_min=1.0, scale_max=1.0, rotations=(0,))
    (transform,) = plan_patches(recipe, 150, 120, SHA_A, 1)
    patch = np.asarray(cut_patch(Image.fromarray(pixels), transform, 64))
    left, top = int(transform.box[0]), int(transform.box[1])
    assert np.array_equal(patch, pixels[top : top + 64, left : left + 64])


def test_rotation_is_lossless():
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    recipe = PatchRecipe(patch=64, resize=None, scale_min=1.0, scale_max=1.0, rotations=(90,))
    (transform,) = plan_patches(recipe, 64, 64, SHA_A, 1)
    patch = np.asarray(cut_patch(Image.fromarray(pixels), transform, 64))
    assert np.array_equal(patch, np.rot90(pixels))


def test_small_images_are_rejected_or_upscaled():
    assert "smaller than the 64px patch" in small_image_reason(PatchRecipe(patch=64, resize=None), 50, 80)
    upscale = PatchRecipe(patch=64, resize=None, small="upscale")
    assert small_image_reason(upscale, 50, 80) is None
    (transform,) = plan_patches(upscale, 50, 80, SHA_A, 1)
    patch = cut_patch(Image.new("RGB", (50, 80)), transform, 64)
    assert patch.size == (64, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch": 480, "resize": 256}, "smaller than --patch"),
        ({"patches_per_image": 0}, "--patches-per-image"),
        ({"rotations": (45,)}, "--rotations"),
        ({"scale_min": 1.5, "scale_max": 1.0}, "--scale"),
        ({"small": "pad"}, "--small"),
    ],
)
def test_bad_recipe_options_are_clear_errors(kwargs, message):
    with pytest.raises(HarnessError, match=message):
        PatchRecipe(**kwargs)
