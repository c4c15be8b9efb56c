"""Images of any size in bounded memory: g_a and g_s in tiles give the whole image's latent and
reconstruction (float rounding), the halo covers the measured impulse response, a budget picks the
tile or is refused in one line (CompressAI baselines: whole images, or a refusal naming the limit)."""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import process_memory
from harness.artefacts import memory
from harness.artefacts.checkpoint import load_checkpoint
from harness.artefacts.coding import decode, encode, image_tensor, memory_plan, to_tensor
from harness.artefacts.memory import plan_memory
from harness.cli import main
from harness.errors import HarnessError
from harness.flags import memory_size
from harness.model import exact_cpu, tiling
from harness.model.network import WeConvene
from harness.pixels.images import load_rgb
from harness.wavelets import lifting
from harness.zoo.variants import get_config

REPO = Path(__file__).resolve().parent.parent

# The tiny variant's structure with the ablations' DWT settings: every rule of the halo is exercised.
SHAPES = {
    "tiny": get_config("tiny"),
    "one-level 3x3 high bands, haar": replace(get_config("tiny"), conv_channel_levels=0, conv_spatial_levels=1,
                                              conv_hf_kernel=3, wavelet="haar"),
    "5/3": replace(get_config("tiny"), wavelet="5/3", res_blocks=0),
}


@pytest.fixture(scope="module", params=list(SHAPES))
def net(request) -> WeConvene:
    torch.manual_seed(0)
    return WeConvene(SHAPES[request.param]).eval()


def _reach(changed: torch.Tensor, at: tuple[int, int], scale: int) -> int:
    """Farthest distance in pixels from pixel ``at`` of the samples (``scale`` px apart) that ``changed``."""
    rows, cols = torch.nonzero(changed, as_tuple=True)
    return int(max((rows * scale - at[0]).abs().max(), (cols * scale - at[1]).abs().max()))


def test_the_halo_covers_each_transforms_measured_impulse_response(net, torch_one_thread):
    """One perturbed pixel (latent sample for g_s) changes outputs only within the derived radius;
    the radius is no loose bound either (at least half of it is reached)."""
    x = torch.rand(1, 3, 512, 512)
    at = (256, 256)
    bumped = x.clone()
    bumped[..., at[0], at[1]] += 0.5
    with torch.no_grad():
        reach = _reach((net.g_a(bumped) - net.g_a(x)).abs().amax(dim=1)[0] > 0, at, 8)
        y = torch.randn(1, net.config.M, 64, 64)
        y_bumped = y.clone()
        y_bumped[..., 32, 32] += 2.0
        reach_s = _reach((net.g_s(y_bumped) - net.g_s(y)).abs().amax(dim=1)[0] > 0, (256, 256), 1)
    radius, radius_s = tiling.receptive_radius(net.g_a)[0], tiling.receptive_radius(net.g_s, 8)[0]
    assert radius / 2 <= reach <= radius
    assert radius_s / 2 <= reach_s <= radius_s


def test_tiled_transforms_equal_the_whole_images_within_float_rounding(net, torch_one_thread):
    """Several tiles of 64 pixels (8 latent samples), borders and corners included, against the
    whole image; with a halo of one alignment step the tiles are seen to differ."""
    config = net.config
    x = torch.rand(1, 3, 320, 448)
    halo, halo_s = tiling.analysis_halo(net.g_a, config), tiling.synthesis_halo(net.g_s, config)
    with torch.no_grad():
        y = net.g_a(x)
        x_hat = net.g_s(y)
        assert (tiling.analyse(net.g_a, x, 64, halo) - y).abs().max() <= 1e-5 * y.abs().max()
        assert (tiling.synthesise(net.g_s, y, 8, halo_s) - x_hat).abs().max() <= 1e-5 * x_hat.abs().max()
        short = tiling.analyse(net.g_a, x, 64, tiling.alignment(config))
    assert (short - y).abs().max() > 1e-4 * y.abs().max()


def test_a_layer_of_unknown_reach_cannot_be_tiled():
    with pytest.raises(HarnessError, match=r"^cannot tile a network with a Upsample layer: its reach is not known$"):
        tiling.receptive_radius(torch.nn.Sequential(torch.nn.Upsample(scale_factor=2)))


def test_a_tile_off_the_dwt_phase_is_refused():
    model = WeConvene(get_config("tiny"))
    with pytest.raises(HarnessError, match=r"^tiles of 48 px: a tile side must be a positive multiple of 32 px "
                                           r"\(g_a's stride x 2\^2 DWT levels\)$"):
        model.compress(torch.rand(1, 3, 64, 64), tile=48)


def test_a_file_coded_in_tiles_decodes_whole_and_the_reverse(tiny_checkpoint, kodak_dir, torch_one_thread):
    model = load_checkpoint(tiny_checkpoint)
    pixels = np.ascontiguousarray(load_rgb(kodak_dir / "kodim23.png").pixels[:256, :384])
    tiled, whole = encode(model, pixels, tile=64), encode(model, pixels)
    assert len(tiled) == pytest.approx(len(whole), rel=1e-3)
    for data in (tiled, whole):
        in_tiles = decode(model, data, tile=64).astype(int)
        assert np.abs(decode(model, data).astype(int) - in_tiles).max() <= 1


def test_the_entropy_model_runs_beside_no_float_image_and_no_wavelet_workspace(tiny_checkpoint, kodak_dir,
                                                                               monkeypatch, torch_one_thread):
    """An image is handed to the model in uint8 and scaled as g_a reads it (a tile at a time when
    tiled): the same streams as its float copy, and no float image (12 bytes a pixel) is held
    while the entropy model runs; nor g_a's wavelet workspace (its tiles' widest temporaries)."""
    model = load_checkpoint(tiny_checkpoint)
    pixels = np.ascontiguousarray(load_rgb(kodak_dir / "kodim23.png").pixels[:128, :192])
    codec, held = model.latent_codec, []

    def spy(method):
        def held_then(*args, **kwargs):
            images = [t for t in gc.get_objects() if isinstance(t, torch.Tensor) and t.is_floating_point()
                      and t.shape[-3:] == (3, 128, 192)]
            held.append((method.__name__, len(images), bool(lifting._WORKSPACE.__dict__.get("buffers"))))
            return method(*args, **kwargs)
        return held_then

    for name in ("analysis", "compress_slices"):  # the latent's DWT and h_a, then the slices
        monkeypatch.setattr(codec, name, spy(getattr(codec, name)))
    for tile in (None, 64):
        assert model.compress(image_tensor(pixels), tile=tile)["strings"] == model.compress(
            to_tensor(pixels), tile=tile)["strings"]
        held.clear()
        encode(model, pixels, tile=tile)
        assert held == [("analysis", 0, False), ("compress_slices", 0, False)]


def test_coding_in_tiles_trims_the_heap_before_each_entropy_convolution(tiny_checkpoint, kodak_dir, monkeypatch,
                                                                         torch_one_thread):
    """Tiles mean a memory budget: the entropy model then hands freed pages back before each of its
    convolutions (exact_cpu.frugal). Coded whole, a small image's entropy model trims nothing:
    faulting back what it returned cost a third of its time."""
    model = load_checkpoint(tiny_checkpoint)
    pixels = np.ascontiguousarray(load_rgb(kodak_dir / "kodim23.png").pixels[:128, :192])
    data = encode(model, pixels)
    trims, convolutions = [], []
    monkeypatch.setattr(process_memory, "trim", lambda: trims.append(1))
    convolve = exact_cpu.convolve
    monkeypatch.setattr(exact_cpu, "convolve", lambda *args: convolutions.append(1) or convolve(*args))
    for code in (lambda: encode(model, pixels, tile=64), lambda: decode(model, data, tile=64)):
        trims.clear(), convolutions.clear()
        code()
        assert len(trims) > len(convolutions) > 100
    for code in (lambda: encode(model, pixels), lambda: decode(model, data)):
        trims.clear(), convolutions.clear()
        code()
        assert len(convolutions) > 100 and len(trims) <= 2  # the model's own, around the entropy model


# -- budgets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [("2G", 2 * 2**30), ("512M", 512 * 2**20), ("1.5GiB", 3 * 2**29),
                                        ("4096", 4096), ("64k", 64 * 1024)])
def test_memory_sizes_parse_in_powers_of_1024(text, size):
    assert memory_size(text) == size


@pytest.mark.parametrize("text", ["2X", "G", "", "-1G", "0", "0.5", "two gigs"])
def test_a_bad_memory_size_is_one_usage_line(text, tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(argparse.ArgumentTypeError, match="^expected a memory size like 2G, 512M or 1.5G, got"):
        memory_size(text)
    with pytest.raises(SystemExit) as exit_:
        main(["compress", str(tmp_path / "a.png"), "-m", str(tiny_checkpoint), "-o", str(tmp_path / "a.3dmw"),
              f"--max-memory={text}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "argument --max-memory: expected a memory size" in err


def test_a_budget_below_one_smallest_tile_is_refused_naming_both(tiny_checkpoint, kodak_dir, tmp_path, capsys):
    out = tmp_path / "a.3dmw"
    assert main(["compress", str(kodak_dir / "kodim23.png"), "-m", str(tiny_checkpoint), "-o", str(out),
                 "--max-memory", "100M"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    assert "kodim23.png: --max-memory 100M is below the " in err and " tiny needs for 768x512 (the loaded model " in err


class _Sized:
    """What :func:`plan_memory` reads of a model: its stride and widths."""

    stride = 64
    config = get_config("tiny")


@pytest.fixture
def held(monkeypatch):
    """A process holding 1 GiB, on a machine with ``free`` bytes available."""
    monkeypatch.setattr(process_memory, "resident_bytes", lambda device="cpu": 2**30)

    def free(value):
        monkeypatch.setattr(process_memory, "available_bytes", lambda: value)
    return free


def test_a_budget_tiles_only_what_does_not_fit_whole_with_the_largest_tile_within_it(held):
    held(None)
    whole = 2**30 + memory.coding_bytes(_Sized, 2000, 3000)
    assert plan_memory(_Sized, 2000, 3000, "x", whole, 192, 32).tile is None
    plan = plan_memory(_Sized, 2000, 3000, "x", 2**32, 192, 32)
    assert plan.tile % 32 == 0 and plan.need <= 2**32 and plan.notice is None
    assert 2**30 + memory.coding_bytes(_Sized, 2000, 3000, "g_a", plan.tile + 32, 192) > 2**32


def test_without_a_budget_it_tiles_only_beyond_what_the_machine_has_and_says_so(held):
    held(10**12)
    assert plan_memory(_Sized, 2000, 3000, "x", None, 192, 32) == memory.MemoryPlan(
        None, 2**30 + memory.coding_bytes(_Sized, 2000, 3000))
    held(2 * 10**9)
    plan = plan_memory(_Sized, 2000, 3000, "big.png", None, 192, 32)
    assert plan.tile and plan.notice.startswith("big.png: coding 3000x2000 whole needs ~")
    assert plan.notice.endswith(f"this machine has 2.0 GB available: in tiles of {plan.tile} px (~"
                                f"{plan.need / 1e9:.1f} GB)")
    held(10**6)
    with pytest.raises(HarnessError, match=r"^big.png: coding 3000x2000 needs ~\d+\.\d GB even in 32-pixel tiles, "
                                           r"this machine has 0.0 GB available$"):
        plan_memory(_Sized, 2000, 3000, "big.png", None, 192, 32)


def test_a_model_without_tiles_names_its_limit(held):
    held(None)
    with pytest.raises(HarnessError, match=r"^x: coding 3000x2000 needs ~\d+\.\d GB and tiny codes whole images "
                                           r"only \(its layers are not tiled\): --max-memory 1.50G$"):
        plan_memory(_Sized, 2000, 3000, "x", 3 * 2**29, None, 0)


def test_compressai_baselines_code_whole_images_or_refuse(tmp_path, held):
    path = tmp_path / "b.pt"
    assert main(["init-model", "--variant", "compressai:bmshj2018-factorized?N=16,M=24", "--out", str(path)]) == 0
    baseline = load_checkpoint(path)
    held(None)
    assert memory_plan(baseline, 64, 64, "x", 2**31, "g_a").tile is None
    with pytest.raises(HarnessError, match="codes whole images only"):
        memory_plan(baseline, 4000, 6000, "x", 2**30 + 1, "g_a")


# -- the command line (slow) ---------------------------------------------------------------------


@pytest.mark.slow
def test_compress_and_decompress_in_tiles_within_a_budget(tiny_checkpoint, photos_dir, tmp_path):
    """A 1536x1024 image under budgets halfway between the least (32-pixel tiles) and the whole
    image's, as each command's refusal names them: coded in tiles, decoded in tiles and whole, the
    two within one grey level (the reverse, a file coded whole: test_a_file_coded_in_tiles_...)."""
    from PIL import Image

    image = tmp_path / "big.png"
    with Image.open(photos_dir / "001.png") as photo:
        photo.convert("RGB").resize((1536, 1024)).save(image)

    def harness(*args):
        return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, timeout=600)

    def midway(*args) -> str:
        refused = harness(*args, "--max-memory", "1M")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        least = float(refused.stderr.split("is below the ")[1].split("G")[0])
        whole = float(refused.stderr.split("whole: ")[1].split("G")[0])
        return f"{(least + whole) / 2:.2f}G"

    stream = tmp_path / "t.3dmw"
    compress = ("compress", image, "-m", tiny_checkpoint, "-o", stream)
    coded = harness(*compress, "--max-memory", midway(*compress))
    assert coded.returncode == 0 and ", tiles of " in coded.stdout, coded.stderr
    decompress = ("decompress", stream, "-m", tiny_checkpoint, "-o")
    budget = midway(*decompress, tmp_path / "x.png")
    in_tiles = harness(*decompress, tmp_path / "tiles.png", "--max-memory", budget)
    assert in_tiles.returncode == 0 and ", tiles of " in in_tiles.stdout, in_tiles.stderr
    whole = harness(*decompress, tmp_path / "whole.png")
    assert whole.returncode == 0 and ", tiles of " not in whole.stdout, whole.stderr
    difference = load_rgb(tmp_path / "tiles.png").pixels.astype(int) - load_rgb(tmp_path / "whole.png").pixels
    assert np.abs(difference).max() <= 1
