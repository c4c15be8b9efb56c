"""Every lossy conversion on reading an image is a notice: 16-bit colour reduced, animation
and multi-page files reduced to their first frame (16-bit gray, alpha, palettes: the older
notices), and the notice reaches the user of `compress`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crafted_images import png16 as _png16

from harness.cli import main
from harness.pixels.images import load_rgb


def _frames(count: int = 3) -> list[Image.Image]:
    return [Image.new("RGB", (16, 12), (60 * i, 90, 200 - 50 * i)) for i in range(count)]


def _animation(path: Path) -> Path:
    first, *rest = _frames()
    first.save(path, save_all=True, append_images=rest)
    return path


@pytest.mark.parametrize("channels, notice", [
    (3, "16-bit RGB samples reduced to 8 bits"),
    (4, "RGBA converted to RGB (alpha dropped); 16-bit RGBA samples reduced to 8 bits"),
])
def test_a_16_bit_colour_png_is_reduced_with_a_notice(tmp_path, channels, notice):
    samples = np.random.default_rng(0).integers(0, 1 << 16, (5, 7, channels))
    image = load_rgb(_png16(tmp_path / "deep.png", samples))
    assert image.notice == notice
    assert (image.pixels == (samples[..., :3] >> 8)).all()  # what was kept: the high byte


@pytest.mark.parametrize("name", ["anim.gif", "anim.png", "anim.webp", "pages.tif"])
def test_an_animation_or_multi_page_file_codes_its_first_frame_with_a_notice(tmp_path, name):
    image = load_rgb(_animation(tmp_path / name))
    assert image.notice.endswith("first of 3 frames coded, the others ignored")
    assert image.pixels.shape == (12, 16, 3) and image.pixels[0, 0, 1] in range(85, 96)


def test_an_8_bit_rgb_still_image_has_no_notice(tmp_path):
    _frames(1)[0].save(tmp_path / "plain.png")
    assert load_rgb(tmp_path / "plain.png").notice is None


def test_compress_tells_the_user(tmp_path, capsys):
    model = tmp_path / "tiny.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(model), "--seed", "0"]) == 0
    gif = _animation(tmp_path / "anim.gif")
    assert main(["compress", str(gif), "-m", str(model), "-o", str(tmp_path / "anim.3dmw")]) == 0
    assert (f"harness compress: notice: {gif}: P converted to RGB; first of 3 frames coded, the others ignored"
            in capsys.readouterr().err)
