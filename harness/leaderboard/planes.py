"""Faster single-plane filtering for the metric libraries, without touching their code.

piq, pytorch-msssim and IQA-pytorch filter one image plane at a time: a depthwise
``conv2d`` of a 1- or 3-channel picture with a Gaussian or gradient window. oneDNN's
depthwise kernels spread their work over channels, so a one-plane call gets its slowest
path (a 17×17 window over a 768×512 plane: 22 ms on one core). The same filter over the
plane cut into 16 row strips, each strip with its ``k − 1`` rows of overlap as one channel
of a 16-channel depthwise convolution, runs 2–5× faster (4 ms), and each output sample is
the same dot product over the same inputs. On Kodak-sized planes the outputs came out
bit-identical, also with oneDNN held to AVX2 or SSE4.1; a CPU whose kernels sum in another
order would move them by float32 rounding at most.

:func:`strip_convolutions` is the context in which ``conv2d`` calls of that form take the
stripped route; every other call (strided, dilated, with a bias, on small planes) runs as
before. Gradients flow through the strips as through the plain call.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

# Strips per plane: 4 or 8 were 1.6–3× slower on the 11×11 and 17×17 windows, 32 no faster
# (benchmarks/RESULTS.md, issue 20).
STRIPS = 16
# Below this many output samples per plane the copies cost more than the filtering saves.
MIN_SAMPLES = 1 << 16
_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def strip_conv2d(x: Tensor, weight: Tensor, padding: tuple[int, int] = (0, 0)) -> Tensor:
    """``F.conv2d(x, weight, padding=padding, groups=C)`` for ``weight`` of shape ``(C, 1, kh, kw)``,
    computed over row strips stacked as channels."""
    n, c, height = x.shape[:3]
    kh = weight.shape[-2]
    top, side = padding
    out_h = height + 2 * top - kh + 1
    strips = max(1, min(STRIPS, out_h // (2 * kh)))
    rows = -(-out_h // strips)
    # One pad for the call's zero padding and the zero rows the last strip reads past the bottom.
    bottom = max(top, strips * rows + kh - 1 - height - top)
    if top or side or bottom:
        x = F.pad(x, (side, side, top, bottom))
    planes = n * c
    windows = x.reshape(planes, x.shape[2], x.shape[3]).unfold(1, rows + kh - 1, rows)  # planes, strips, W, rows
    stacked = windows.permute(0, 1, 3, 2).reshape(1, planes * strips, rows + kh - 1, x.shape[3])
    weights = weight.repeat(n, 1, 1, 1).repeat_interleave(strips, dim=0)
    out = F.conv2d(stacked, weights, groups=planes * strips)
    return out.reshape(n, c, strips * rows, out.shape[-1])[:, :, :out_h].contiguous()


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    return None  # "same" / "valid": left to torch


def _stripped(call: dict[str, Any]) -> tuple[int, int] | None:
    """The padding to strip ``call`` with, or None when it must run as it is."""
    x, weight = call.get("input"), call.get("weight")
    if not (isinstance(x, Tensor) and isinstance(weight, Tensor)) or x.dim() != 4:
        return None
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return None
    if call.get("bias") is not None:
        return None
    channels = x.shape[1]
    if call.get("groups", 1) != channels or tuple(weight.shape[:2]) != (channels, 1):
        return None
    if _pair(call.get("stride", 1)) != (1, 1) or _pair(call.get("dilation", 1)) != (1, 1):
        return None
    padding = _pair(call.get("padding", 0))
    if padding is None:
        return None
    kh, kw = weight.shape[-2:]
    out_h, out_w = x.shape[2] + 2 * padding[0] - kh + 1, x.shape[3] + 2 * padding[1] - kw + 1
    if out_h * out_w < MIN_SAMPLES or out_h < 4 * kh:
        return None
    return padding


class _StripMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:  # F.conv2d is the same function
            call = dict(zip(_ARGUMENTS, args), **kwargs)
            padding = _stripped(call)
            if padding is not None:
                return strip_conv2d(call["input"], call["weight"], padding)
        return func(*args, **kwargs)


@contextmanager
def strip_convolutions() -> Iterator[None]:
    """Within this context, depthwise float32 ``conv2d`` calls on large planes run as :func:`strip_conv2d`."""
    with _StripMode():
        yield
