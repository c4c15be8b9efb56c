"""Properties of harness.wavelets: perfect reconstruction, filter fidelity against
PyWavelets, differentiability, shapes, and errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch

from harness import wavelets as wt
from harness.errors import HarnessError

LENGTHS = range(2, 66)


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_1d_perfect_reconstruction_all_lengths(wavelet, dtype, tol):
    gen = torch.Generator().manual_seed(0)
    for n in LENGTHS:
        # one tensor per length, transformed along a middle dim with batch dims on both sides
        x = torch.rand(2, n, 3, generator=gen, dtype=dtype)
        low, high = wt.dwt(x, wavelet, dim=1)
        assert low.shape == (2, (n + 1) // 2, 3) and high.shape == (2, n // 2, 3)
        assert low.dtype == dtype and high.dtype == dtype
        err = (wt.idwt(low, high, wavelet, dim=1) - x).abs().max().item()
        assert err <= tol, f"n={n}: max error {err}"


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_2d_perfect_reconstruction(wavelet, dtype, tol, levels):
    gen = torch.Generator().manual_seed(levels)
    lo = wt.min_size(levels)
    for h, w in [(lo, 65), (lo + 1, lo), (17, 30), (64, 33), (65, lo + 2)]:
        x = torch.rand(2, 3, h, w, generator=gen, dtype=dtype)
        ll, highs = wt.dwt2(x, wavelet, levels)
        assert len(highs) == levels
        err = (wt.idwt2(ll, highs, wavelet) - x).abs().max().item()
        assert err <= tol, f"{h}x{w}: max error {err}"


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("channel_levels,spatial_levels", [(1, 1), (1, 2), (2, 1), (2, 3)])
def test_3d_perfect_reconstruction(wavelet, dtype, tol, channel_levels, spatial_levels):
    gen = torch.Generator().manual_seed(channel_levels * 10 + spatial_levels)
    for c, h, w in [(16, 20, 21), (7, 9, 64), (5, 65, 12)]:
        x = torch.rand(2, c, h, w, generator=gen, dtype=dtype)
        bands = wt.dwt3(x, wavelet, channel_levels, spatial_levels)
        assert tuple(bands) == wt.subband_names(channel_levels, spatial_levels)
        y = wt.idwt3(bands, wavelet, channel_levels, spatial_levels)
        err = (y - x).abs().max().item()
        assert err <= tol, f"{c}x{h}x{w}: max error {err}"


def test_3d_subband_names_and_shapes():
    x = torch.rand(1, 320, 17, 16)
    bands = wt.dwt3(x, "9/7")
    assert tuple(bands) == ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")
    assert bands["LLL"].shape == (1, 160, 9, 8)
    assert bands["LHL"].shape == (1, 160, 8, 8)  # high along height (17 -> 8), low along width
    assert bands["HLH"].shape == (1, 160, 9, 8)
    assert bands["HHH"].shape == (1, 160, 8, 8)


def test_channel_dwt_groups_lowest_first():
    x = torch.rand(2, 40, 5, 6, dtype=torch.float64)
    groups = wt.channel_dwt(x, "5/3", levels=3)
    assert [g.shape[1] for g in groups] == [5, 5, 10, 20]
    assert torch.allclose(wt.channel_idwt(groups, "5/3"), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
def test_length_one_passes_through(wavelet):
    x = torch.rand(2, 3, 1, 1)
    low, high = wt.dwt(x, wavelet, dim=-1)
    assert torch.equal(low, x) and high.shape == (2, 3, 1, 0)
    assert torch.equal(wt.idwt(low, high, wavelet, dim=-1), x)
    bands = wt.dwt3(x, wavelet, 1, 2, strict=False)
    assert torch.allclose(wt.idwt3(bands, wavelet, 1, 2), x)
