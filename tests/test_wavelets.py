"""Properties of harness.wavelets: perfect reconstruction, filter fidelity against
PyWavelets, differentiability, shapes, and errors on bad input."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from harness import wavelets as wt
from harness.errors import HarnessError

LENGTHS = range(2, 66)


@pytest.fixture(params=["kernel", "torch"], autouse=True)
def engine(request, monkeypatch) -> str:
    """Every test runs on both CPU paths: the compiled one-pass kernel, and the torch ops
    that other devices use."""
    if request.param == "torch":
        monkeypatch.setattr(wt.cpu, "ENABLED", False)
    return request.param


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
    # every height and every width from the minimum the levels allow up to 65
    for h in range(lo, 66):
        w = lo + 65 - h
        x = torch.rand(2, 2, h, w, generator=gen, dtype=dtype)
        ll, highs = wt.dwt2(x, wavelet, levels)
        assert len(highs) == levels
        err = (wt.idwt2(ll, highs, wavelet) - x).abs().max().item()
        assert err <= tol, f"{h}x{w}: max error {err}"


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("channel_levels,spatial_levels", [(1, 1), (1, 2), (2, 1), (2, 3)])
def test_3d_perfect_reconstruction(wavelet, dtype, tol, channel_levels, spatial_levels):
    gen = torch.Generator().manual_seed(channel_levels * 10 + spatial_levels)
    lo_c, lo_s = wt.min_size(channel_levels), wt.min_size(spatial_levels)
    # every channel count up to 65, spatial sizes cycling through odd and even lengths
    for c in range(lo_c, 66):
        h, w = lo_s + c % 7, lo_s + (c * 3) % 8
        x = torch.rand(1, c, h, w, generator=gen, dtype=dtype)
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


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_channel_dwt_joined_is_its_groups_side_by_side(layout):
    """``joined`` hands over the analysis's buffer: what torch.cat of its groups copies, bit for
    bit and in the input's layout, and the same gradient."""
    x = torch.rand(2, 40, 5, 6).to(memory_format=layout).requires_grad_()
    joined = wt.channel_dwt(x, "9/7", levels=2, joined=True)
    groups = wt.channel_dwt(x, "9/7", levels=2)
    assert torch.equal(joined, torch.cat(groups, dim=1))
    assert joined.is_contiguous(memory_format=layout)
    weights = torch.rand(40, 1, 1)
    (grad_joined,) = torch.autograd.grad((joined * weights).sum(), x)
    (grad_groups,) = torch.autograd.grad((torch.cat(groups, dim=1) * weights).sum(), x)
    assert torch.equal(grad_joined, grad_groups)


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
def test_length_one_passes_through(wavelet):
    x = torch.rand(2, 3, 1, 1)
    low, high = wt.dwt(x, wavelet, dim=-1)
    assert torch.equal(low, x) and high.shape == (2, 3, 1, 0)
    assert torch.equal(wt.idwt(low, high, wavelet, dim=-1), x)
    bands = wt.dwt3(x, wavelet, 1, 2, strict=False)
    # float32 rounding of the channel lifting is ~1e-7 absolute: a relative test fails for x near 0
    assert torch.allclose(wt.idwt3(bands, wavelet, 1, 2), x, atol=1e-6)


# ----------------------------------------------------------------- filter fidelity

PYWT_NAMES = {"haar": "haar", "5/3": "bior2.2", "9/7": "bior4.4"}
# One scale factor per band relative to PyWavelets (JPEG 2000 normalisation:
# low-pass DC gain 1, high-pass Nyquist gain 2), as documented in the module.
LOW_SCALE = 1 / math.sqrt(2)
HIGH_SCALE = -math.sqrt(2)


def _analysis_rows(wavelet: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis matrices (coefficient x input sample) from the transform of impulses."""
    low, high = wt.dwt(torch.eye(n, dtype=torch.float64), wavelet, dim=1)
    return low.T, high.T


def _pywt_filters(wavelet: str):
    pywt = pytest.importorskip("pywt")
    w = pywt.Wavelet(PYWT_NAMES[wavelet])
    # PyWavelets convolves; as a row acting on increasing sample index the filter is reversed.
    return torch.tensor(w.dec_lo[::-1], dtype=torch.float64), torch.tensor(
        w.dec_hi[::-1], dtype=torch.float64
    )


def _support(row: torch.Tensor) -> torch.Tensor:
    nz = torch.nonzero(row.abs() > 1e-14).flatten()
    return row[nz.min() : nz.max() + 1]


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
def test_impulse_responses_match_pywavelets(wavelet):
    dec_lo, dec_hi = _pywt_filters(wavelet)
    a_low, a_high = _analysis_rows(wavelet, 48)
    for k in (10, 13):  # interior coefficients, far from both boundaries
        low_row, high_row = _support(a_low[k]), _support(a_high[k])
        # T.800 gives the 9/7 lifting constants to 15-16 digits: agreement is ~1e-11 relative
        assert torch.allclose(low_row, LOW_SCALE * _support(dec_lo), atol=0, rtol=1e-10)
        assert torch.allclose(high_row, HIGH_SCALE * _support(dec_hi), atol=0, rtol=1e-10)
        # low band centred on sample 2k, high band on sample 2k+1 (T.800 sub-sampling)
        centre_low = (a_low[k].abs() > 1e-14).nonzero().float().mean().item()
        centre_high = (a_high[k].abs() > 1e-14).nonzero().float().mean().item()
        assert centre_low == (2 * k + 0.5 if wavelet == "haar" else 2 * k)
        assert centre_high == 2 * k + (0.5 if wavelet == "haar" else 1)


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
def test_boundaries_equal_filter_bank_on_symmetric_extension(wavelet):
    """Every coefficient, boundaries included, equals the scaled PyWavelets filter
    applied to the symmetrically extended signal (whole-sample for 5/3 and 9/7 as in
    T.800 F.3.7, half-sample for haar)."""
    dec_lo, dec_hi = _pywt_filters(wavelet)
    lo_f, hi_f = LOW_SCALE * _support(dec_lo), HIGH_SCALE * _support(dec_hi)
    mode = "symmetric" if wavelet == "haar" else "reflect"
    pad = 8
    gen = torch.Generator().manual_seed(1)
    for n in range(2, 40):
        x = torch.rand(n, generator=gen, dtype=torch.float64)
        idx = torch.arange(-pad, n + pad)
        if mode == "reflect":
            period = 2 * (n - 1)
            m = idx % period
            idx = torch.where(m < n, m, period - m)
        else:
            period = 2 * n
            m = idx % period
            idx = torch.where(m < n, m, period - 1 - m)
        ext = x[idx]  # ext[j + pad] = extended x[j]
        low, high = wt.dwt(x, wavelet, dim=0)
        # centre offsets of the rows found above: low at 2k (haar 2k..2k+1), high at 2k+1
        lo_start = 0 if wavelet == "haar" else -(len(lo_f) // 2)
        hi_start = 0 if wavelet == "haar" else 1 - len(hi_f) // 2
        want_low = torch.stack(
            [ext[2 * k + lo_start + pad : 2 * k + lo_start + pad + len(lo_f)] @ lo_f for k in range(low.numel())]
        )
        want_high = torch.stack(
            [ext[2 * k + hi_start + pad : 2 * k + hi_start + pad + len(hi_f)] @ hi_f for k in range(high.numel())]
        )
        assert torch.allclose(low, want_low, atol=1e-9, rtol=0), (n, (low - want_low).abs().max())
        assert torch.allclose(high, want_high, atol=1e-9, rtol=0), (n, (high - want_high).abs().max())


# ----------------------------------------------------------------- autograd, dtypes

@pytest.mark.parametrize("wavelet", wt.WAVELETS)
def test_gradcheck_1d_and_3d(wavelet):
    gen = torch.Generator().manual_seed(2)
    for n in (1, 2, 5, 6):
        x = torch.rand(2, n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: wt.dwt(t, wavelet, 1), (x,))
        low, high = (b.detach().requires_grad_() for b in wt.dwt(x, wavelet, 1))
        assert torch.autograd.gradcheck(lambda lo, hi: wt.idwt(lo, hi, wavelet, 1), (low, high))
    x = torch.rand(1, 3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)

    def round_trip_bands(t):
        bands = wt.dwt3(t, wavelet, 1, 2)
        return (*bands.values(), wt.idwt3(bands, wavelet, 1, 2) * 2)

    assert torch.autograd.gradcheck(round_trip_bands, (x,))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 0.01), (torch.bfloat16, 0.1)])
def test_half_precision_keeps_dtype(dtype, tol):
    # A seeded input: unseeded, the input was whatever the tests before left in torch's generator,
    # and about 1 in 75 of them round-trips in float16 just over the tolerance (up to 0.0107).
    x = torch.rand(1, 8, 12, 10, generator=torch.Generator().manual_seed(0)).to(dtype)
    bands = wt.dwt3(x, "9/7", 1, 2)
    assert all(b.dtype == dtype for b in bands.values())
    y = wt.idwt3(bands, "9/7", 1, 2)
    assert y.dtype == dtype and (y.float() - x.float()).abs().max() < tol


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("wavelet", wt.WAVELETS)
def test_cuda_matches_cpu(wavelet):
    x = torch.rand(2, 9, 13, 16, dtype=torch.float64)
    cpu = wt.dwt3(x, wavelet, 1, 2)
    gpu = wt.dwt3(x.cuda(), wavelet, 1, 2)
    for name, band in cpu.items():
        assert gpu[name].device.type == "cuda"
        assert torch.allclose(gpu[name].cpu(), band, atol=1e-12, rtol=0)
    assert torch.allclose(wt.idwt3(gpu, wavelet, 1, 2).cpu(), x, atol=1e-10, rtol=0)


# ----------------------------------------------------------------- bad input

def test_unknown_wavelet_names_valid_ones():
    with pytest.raises(ValueError, match=r"'db4'.*'haar', '5/3', '9/7'"):
        wt.dwt(torch.rand(4), "db4", 0)
    with pytest.raises(HarnessError):
        wt.dwt3(torch.rand(1, 4, 4, 4), "cdf97")


def test_too_many_levels_names_minimum_size():
    with pytest.raises(ValueError, match="3 level.*at least 5 samples, got 4"):
        wt.dwt2(torch.rand(1, 4, 16), "haar", levels=3)
    with pytest.raises(ValueError, match="2 level.*at least 3 samples, got 2"):
        wt.channel_dwt(torch.rand(1, 2, 4, 4), "5/3", levels=2)
    with pytest.raises(ValueError, match="1 level.*at least 2 samples, got 1"):
        wt.dwt3(torch.rand(1, 8, 1, 1), "9/7")
    with pytest.raises(ValueError, match="levels must be an integer >= 1"):
        wt.dwt2(torch.rand(1, 4, 4), "haar", levels=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_non_floating_tensor_rejected(dtype):
    x = torch.zeros(1, 4, 4, 4, dtype=dtype)
    with pytest.raises(TypeError, match="floating-point tensor.*" + str(dtype).replace(".", r"\.")):
        wt.dwt3(x, "haar")
    with pytest.raises(HarnessError):
        wt.dwt(x, "haar", 1)


def test_mismatched_bands_rejected():
    low, high = wt.dwt(torch.rand(3, 10), "5/3", 1)
    with pytest.raises(ValueError, match="do not fit"):
        wt.idwt(low, high[:, :3], "5/3", 1)
    with pytest.raises(ValueError, match="do not fit"):
        wt.idwt(low, high[:2], "5/3", 1)
    with pytest.raises(ValueError, match="not length=11"):
        wt.idwt(low, high, "5/3", 1, length=11)
    bands = wt.dwt3(torch.rand(1, 4, 6, 6), "haar")
    del bands["HHH"]
    with pytest.raises(ValueError, match=r"missing \['HHH'\]"):
        wt.idwt3(bands, "haar")
    with pytest.raises(ValueError, match="spatial"):
        wt.dwt3(torch.rand(1, 4, 6, 6), "haar", channel_dim=-1)
    with pytest.raises(ValueError, match="out of range"):
        wt.dwt(torch.rand(3, 4), "haar", 2)


def test_non_contiguous_inputs_and_negative_dims():
    x = torch.rand(2, 6, 9, 10, dtype=torch.float64)
    cl = x.to(memory_format=torch.channels_last)
    t = x.transpose(1, 3)  # 2x10x9x6
    for wavelet in wt.WAVELETS:
        # Same values whatever the layout, up to rounding: a layout whose dims do not fold
        # for the CPU kernel takes the torch path, which orders its adds differently.
        a, b = wt.dwt3(x, wavelet, 1, 2), wt.dwt3(cl, wavelet, 1, 2)
        assert all(torch.allclose(a[k], b[k], atol=1e-14, rtol=0) for k in a)
        low, high = wt.dwt(t, wavelet, dim=-1)
        ref_low, ref_high = wt.dwt(x, wavelet, dim=1)
        assert torch.allclose(low, ref_low.transpose(1, 3), atol=1e-14, rtol=0)
        assert torch.allclose(high, ref_high.transpose(1, 3), atol=1e-14, rtol=0)
        assert torch.allclose(wt.idwt(low, high, wavelet, dim=-1), t, atol=1e-12, rtol=0)


def test_empty_batch_and_mixed_band_dtypes():
    x = torch.rand(0, 4, 8, 8)
    bands = wt.dwt3(x, "9/7")
    assert bands["HHH"].shape == (0, 2, 4, 4)
    assert wt.idwt3(bands, "9/7").shape == x.shape
    low, high = wt.dwt(torch.rand(3, 8, dtype=torch.float64), "5/3", 1)
    assert wt.idwt(low.float(), high, "5/3", 1).dtype == torch.float64  # promoted, not truncated


def test_gradient_is_transpose_of_transform():
    """<dwt(x), g> == <x, dwt^T(g)>: backward applies the adjoint, not the inverse."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 7, 11, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    for wavelet in ("5/3", "9/7"):
        bands = wt.dwt3(x, wavelet, 1, 2)
        gs = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in bands.items()}
        (grad,) = torch.autograd.grad(sum((bands[k] * gs[k]).sum() for k in bands), x)
        inverse = wt.idwt3(gs, wavelet, 1, 2)
        assert not torch.allclose(grad, inverse, atol=1e-6)  # biorthogonal: adjoint != inverse
        lhs = sum((bands[k] * gs[k]).sum() for k in bands)
        assert torch.allclose(lhs, (x * grad).sum(), atol=1e-10, rtol=0)


def test_inference_mode_then_autograd():
    """The CPU workspace made under inference_mode stays usable afterwards."""
    x = torch.rand(1, 4, 8, 8)
    with torch.inference_mode():
        ref = wt.idwt3(wt.dwt3(x, "9/7"), "9/7")
    xg = x.clone().requires_grad_()
    y = wt.idwt3(wt.dwt3(xg, "9/7"), "9/7")
    y.sum().backward()
    assert torch.allclose(y.detach(), ref) and xg.grad is not None


def test_cpu_kernel_takes_every_layout_whose_dims_fold(engine):
    """The compiled kernel runs where the dims around the axis fold into one each (the torch
    path is the fallback), and splitting its tiles over threads does not change a value."""
    if engine == "torch":
        pytest.skip("about the kernel")
    forward = wt.lifting.program("9/7", "forward")
    x = torch.rand(4, 40, 33, 31)
    for dim in range(4):
        assert wt.cpu.level_(x, torch.empty_like(x), dim, forward, True)
    region = x[:, :, :17, :16]  # a Mallat region: a view of a bigger buffer
    assert wt.cpu.level_(region, torch.empty(region.shape), 3, forward, True)
    t = x.transpose(1, 3)  # folded in memory order, where its dims are x's
    t_out = torch.empty_like(t)
    assert wt.cpu.level_(t, t_out, 3, forward, True)
    t_ref = torch.empty(t.shape)
    assert wt.cpu.level_(t.contiguous(), t_ref, 3, forward, True) and torch.equal(t_out, t_ref)
    assert not wt.cpu.level_(t, torch.empty(t.shape), 3, forward, True)  # src and dst in other orders
    assert not wt.cpu.level_(x.half(), torch.empty_like(x.half()), 1, forward, True)
    # the 2D level: into another tensor, or in place (a plane is read whole before it is written)
    out = torch.empty_like(x)
    assert wt.cpu.plane_levels_(x, out, forward, True, 1)
    same = x.clone()
    assert wt.cpu.plane_levels_(same, same, forward, True, 1) and torch.equal(same, out)
    assert wt.cpu.plane_levels_(region, region.clone(), forward, True, 1)
    assert not wt.cpu.plane_levels_(t, torch.empty_like(t), forward, True, 1)  # outer dims do not fold
    big = torch.rand(1, 1, 512, 512)  # a plane larger than the kernel's cache budget
    assert not wt.cpu.plane_levels_(big, torch.empty_like(big), forward, True, 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = wt.dwt3(x, "9/7", 1, 2)
        torch.set_num_threads(2)
        two = wt.dwt3(x, "9/7", 1, 2)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("wavelet", wt.WAVELETS)
def test_cpu_kernel_lifts_bfloat16_in_float32_and_rounds_once(engine, wavelet):
    """On bfloat16 the kernel computes in float32 and rounds each output once, to nearest even:
    a level of it is the float32 level of the same values, rounded. Along every axis of a
    channels-last tensor (channels innermost: lines copied into the tile's columns), and with
    values a float32 step can overflow."""
    if engine == "torch":
        pytest.skip("about the kernel")
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 24, 19, 26, generator=gen) * 100).to(torch.bfloat16)
    x[0, 0, 0, :4] = torch.tensor([3e38, -3e38, float("inf"), 1e-40])
    for layout in (torch.contiguous_format, torch.channels_last):
        x = x.contiguous(memory_format=layout)
        for dim in range(1, 4):
            for mode in ("forward", "inverse"):
                steps = wt.lifting.program(wavelet, mode)
                out = torch.empty_like(x)
                assert wt.cpu.level_(x, out, dim, steps, mode == "forward")
                wide = torch.empty_like(x, dtype=torch.float32)
                assert wt.cpu.level_(x.float(), wide, dim, steps, mode == "forward")
                rounded = wide.to(torch.bfloat16)
                torch.testing.assert_close(out, rounded, rtol=0, atol=0, equal_nan=True, msg=f"{layout} {dim} {mode}")


def test_bands_keep_the_memory_order_of_their_signal():
    """Bands of a channels-last tensor are channels-last, and the signal rebuilt from them is
    when asked (the default layout otherwise): the convolutions that read them (bf16 on oneDNN)
    take them without a copy. The
    values are those of the same transform in the default layout (the 2D levels up to rounding:
    the kernel lifts a plane in cache along width first, a channels-last tensor along height)."""
    x = torch.rand(1, 16, 20, 24, generator=torch.Generator().manual_seed(0))
    last = x.contiguous(memory_format=torch.channels_last)
    groups = wt.channel_dwt(last, "9/7", 1, dim=1)
    assert all(torch.equal(a, b) for a, b in zip(groups, wt.channel_dwt(x, "9/7", 1, dim=1)))
    assert all(g.stride(1) == 1 for g in groups)
    ll, highs = wt.dwt2(last, "9/7", 2)
    ll_ref, highs_ref = wt.dwt2(x, "9/7", 2)
    assert ll.stride(1) == 1 and all(b.stride(1) == 1 for level in highs for b in level)
    close = functools.partial(torch.allclose, rtol=0, atol=1e-5)
    assert close(ll, ll_ref) and all(close(a, b) for la, lb in zip(highs, highs_ref) for a, b in zip(la, lb))
    y = wt.idwt2(ll, highs, "9/7", memory_format=torch.channels_last)
    assert y.is_contiguous(memory_format=torch.channels_last) and close(y, wt.idwt2(ll_ref, highs_ref, "9/7"))
    assert wt.idwt2(ll, highs, "9/7").is_contiguous()  # unless asked, the default layout
    merged = wt.channel_idwt(groups, "9/7", dim=1, memory_format=torch.channels_last)
    assert merged.is_contiguous(memory_format=torch.channels_last) and close(merged, x)
    with pytest.raises(HarnessError, match="channels_last in 4"):
        wt.channel_idwt([g[0] for g in groups], "9/7", dim=0, memory_format=torch.channels_last)


def test_cpu_volume_kernel_gives_the_values_of_the_per_axis_kernels(engine, monkeypatch):
    """The one-pass 3D kernel (one channel level streamed through a ring of planes, the 2D
    levels on each plane as it comes out) computes the very values of the per-axis kernels
    run one after the other: with the channels cut into items for threads or not, odd
    channel counts, bands read where they are in any layout, and missing (None) bands."""
    if engine == "torch":
        pytest.skip("about the kernel")
    gen = torch.Generator().manual_seed(5)
    shapes = [(1, 1, 5, 4), (1, 2, 7, 7), (3, 9, 13, 16), (1, 65, 6, 5), (2, 40, 33, 31), (1, 33, 1, 9)]
    for shape in shapes:
        x = torch.rand(*shape, generator=gen, dtype=torch.float64)
        for wavelet in wt.WAVELETS:
            for levels in (1, 2):
                fused = wt.dwt3(x, wavelet, 1, levels, strict=False)
                # separate tensors in other layouts, as a model's per-band convolutions give
                bands = {k: (v.to(memory_format=torch.channels_last) if i % 2 else v.mT.contiguous().mT)
                         for i, (k, v) in enumerate(fused.items())}
                y = wt.idwt3(bands, wavelet, 1, levels)
                with monkeypatch.context() as m:
                    m.setattr(wt.lifting, "_volume", lambda *args: False)
                    per_axis = wt.dwt3(x, wavelet, 1, levels, strict=False)
                    y_per_axis = wt.idwt3(per_axis, wavelet, 1, levels)
                assert all(torch.equal(fused[k], per_axis[k]) for k in fused), (shape, wavelet, levels)
                assert torch.equal(y, y_per_axis), (shape, wavelet, levels)
    # the backward of the analysis with gradients for only some bands (the others None)
    xg = torch.rand(2, 11, 12, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    bands = wt.dwt3(xg, "9/7", 1, 2)
    (grad,) = torch.autograd.grad(bands["LLL"].sum() + bands["HHH2"].pow(2).sum(), xg)
    with monkeypatch.context() as m:
        m.setattr(wt.lifting, "_volume", lambda *args: False)
        bands = wt.dwt3(xg, "9/7", 1, 2)
        (ref,) = torch.autograd.grad(bands["LLL"].sum() + bands["HHH2"].pow(2).sum(), xg)
    assert torch.equal(grad, ref)
    # where the kernel applies, and where the per-axis path takes over
    forward = wt.lifting.program("9/7", "forward")
    x = torch.rand(4, 40, 33, 31)
    assert wt.volume.volume_([(x.to(memory_format=torch.channels_last), {})], torch.empty_like(x), 1, forward, True, 2)
    five = torch.rand(2, 8, 3, 16, 16)  # a dim between the channels and the planes
    assert not wt.volume.volume_([(five, {})], torch.empty_like(five), 1, forward, True, 1)
    big = torch.rand(1, 2, 512, 512)  # planes larger than the kernel's cache budget
    assert not wt.volume.volume_([(big, {})], torch.empty_like(big), 1, forward, True, 1)
    ran, volume = [], wt.volume.volume_
    with monkeypatch.context() as m:
        m.setattr(wt.volume, "volume_", lambda *args: ran.append(volume(*args)) or ran[-1])
        flat = torch.rand(1, 33, 1, 9)  # a 1-pixel-high map: the bands high along height are empty
        wt.idwt3(wt.dwt3(flat, "9/7", 1, 2, strict=False), "9/7", 1, 2)
    assert ran == [True, True]
    # a kernel call reads at most volume._SOURCES bands: 5 2D levels give 32, 6 give 38 (per axis)
    deep = torch.rand(1, 4, 64, 64, generator=gen, dtype=torch.float64)
    for levels, in_kernel in ((5, True), (6, False)):
        ran.clear()
        bands = wt.dwt3(deep, "9/7", 1, levels)
        with monkeypatch.context() as m:
            m.setattr(wt.volume, "volume_", lambda *args: ran.append(volume(*args)) or ran[-1])
            y = wt.idwt3(bands, "9/7", 1, levels)
        with monkeypatch.context() as m:
            m.setattr(wt.lifting, "_volume", lambda *args: False)
            assert torch.equal(y, wt.idwt3(bands, "9/7", 1, levels)), levels
        assert ran == [in_kernel] and len(bands) == 2 * (3 * levels + 1), levels
    threads = torch.get_num_threads()
    x = torch.rand(1, 64, 32, 32)  # one item per thread: the channels are cut in two
    try:
        torch.set_num_threads(1)
        one = wt.idwt3(wt.dwt3(x, "9/7", 1, 2), "9/7", 1, 2)
        torch.set_num_threads(2)
        two = wt.idwt3(wt.dwt3(x, "9/7", 1, 2), "9/7", 1, 2)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def _forked_round_trip(x: torch.Tensor, queue) -> None:
    torch.set_num_threads(1)  # as DataLoader workers do: torch's OpenMP pool does not survive fork
    y = wt.idwt3(wt.dwt3(x, "9/7"), "9/7")
    queue.put(float(abs(y.numpy() - x.numpy()).max()))


@pytest.mark.timeout(120)
def test_forked_child_transforms_after_the_parent_did():
    """A worker process forked after the parent ran the multi-threaded kernel (a DataLoader
    worker, say) transforms with the compiled kernel too, and does not hang."""
    import multiprocessing

    x = torch.rand(2, 32, 64, 64)  # large enough to be split over threads in the parent
    wt.idwt3(wt.dwt3(x, "9/7"), "9/7")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forked_round_trip, args=(x, queue))
    child.start()
    err = queue.get(timeout=100)
    child.join(timeout=10)
    assert child.exitcode == 0 and err < 1e-5


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_read_only_install_compiles_without_a_disk_cache(tmp_path, engine):
    """Run by a user who can write neither next to the package (root's checkout) nor in
    HOME, numba has nowhere to cache the kernels: the transform must still import and run,
    compiling in the process, instead of failing at import."""
    if engine == "torch":
        pytest.skip("about the kernel")
    import os
    import shutil
    import subprocess
    import sys

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the check as an unprivileged user")
    user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c"]
    # The unprivileged user must reach the interpreter, torch and this checkout: a checkout
    # under a folder only root may enter (a clone inside `mktemp -d`, say) makes that impossible.
    reach = subprocess.run([*user, "import importlib.util, torch; assert importlib.util.find_spec('harness')"],
                           cwd="/", capture_output=True, text=True, timeout=120)
    if reach.returncode != 0:
        lines = (reach.stderr or reach.stdout).strip().splitlines() or ["no output"]
        pytest.skip(reason=f"user 65534 cannot read {sys.executable} or this checkout ({lines[-1]}): "
                           "clone into a folder every user may enter to run this check")
    home = tmp_path / "home"
    home.mkdir(mode=0o555)
    script = (
        "import torch, harness.wavelets as wt; x = torch.rand(1, 4, 8, 8); "
        "print((wt.idwt3(wt.dwt3(x, '9/7'), '9/7') - x).abs().max().item())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    run = subprocess.run([*user, script], env={**env, "HOME": str(home)}, cwd="/", capture_output=True, text=True,
                         timeout=170)
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.split()[-1]) < 1e-5
