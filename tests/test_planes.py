"""The metric libraries' one-plane filters run over row strips: same values as conv2d, other calls untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.leaderboard.planes import strip_conv2d, strip_convolutions


@pytest.mark.parametrize(("shape", "window", "padding"), [
    ((1, 1, 512, 768), (17, 17), (0, 0)),   # VIFp's widest Gaussian
    ((1, 1, 515, 771), (3, 3), (0, 0)),     # odd sides: the last strip is short
    ((1, 3, 502, 768), (1, 11), (0, 0)),    # MS-SSIM's separable passes on RGB
    ((1, 3, 512, 768), (11, 1), (0, 0)),
    ((2, 1, 300, 260), (5, 5), (2, 2)),     # a batch, zero padding
    ((1, 2, 260, 301), (9, 3), (4, 1)),
])
def test_strips_give_the_convolution(shape, window, padding) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator)
    weight = torch.rand((shape[1], 1, *window), generator=generator)
    expected = F.conv2d(x, weight, padding=padding, groups=shape[1])
    got = strip_conv2d(x, weight, padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def _calls() -> list[tuple[str, dict]]:
    generator = torch.Generator().manual_seed(1)
    plane = torch.rand(1, 1, 300, 400, generator=generator)
    rgb = torch.rand(1, 3, 300, 400, generator=generator)
    window = torch.rand(1, 1, 7, 7, generator=generator)
    return [
        ("stripped", dict(input=plane, weight=window)),
        ("stripped, padded", dict(input=plane, weight=window, padding=3, groups=1)),
        ("stripped, depthwise RGB", dict(input=rgb, weight=window.repeat(3, 1, 1, 1), groups=3)),
        ("strided", dict(input=plane, weight=window, stride=2)),
        ("dilated", dict(input=plane, weight=window, dilation=2)),
        ("with a bias", dict(input=plane, weight=window, bias=torch.ones(1))),
        ("two outputs from one plane", dict(input=plane, weight=window.repeat(2, 1, 1, 1))),
        ("all channels mixed", dict(input=rgb, weight=window.repeat(3, 3, 1, 1))),
        ("padding by name", dict(input=plane, weight=window, padding="same")),
        ("small plane", dict(input=plane[..., :40, :50], weight=window)),
    ]


@pytest.mark.parametrize(("case", "call"), _calls(), ids=[case for case, _ in _calls()])
def test_every_conv2d_in_the_context_gives_what_it_gives_outside(case, call) -> None:
    expected = F.conv2d(**call)
    defaults = dict(bias=None, stride=1, padding=0, dilation=1, groups=1)
    positional = [call[name] if name in call else defaults[name]
                  for name in ("input", "weight", "bias", "stride", "padding", "dilation", "groups")]
    with strip_convolutions():
        by_name = F.conv2d(**call)
        by_position = torch.conv2d(*positional)
    torch.testing.assert_close(by_name, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(by_position, expected, rtol=1e-6, atol=1e-6)


def test_gradients_through_the_strips_are_the_convolutions() -> None:
    x = torch.rand(1, 1, 300, 400, requires_grad=True)
    weight = torch.rand(1, 1, 5, 5)
    F.conv2d(x, weight).square().sum().backward()
    expected = x.grad.clone()
    x.grad = None
    with strip_convolutions():
        F.conv2d(x, weight).square().sum().backward()
    torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-6)
