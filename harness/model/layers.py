"""Building blocks of the core and hyper networks: ResGroups and the 3DM-WeConv layer.

3DM-WeConv (paper §III-A, Figs. 3-4): a (strided or sub-pixel up-sampling) conv,
then in the wavelet domain a 1D DWT across channels splits the channels into
groups, a multi-level 2D DWT splits each group into a low band and 3 high bands
per level; a 3x3 conv filters the low band, 1x1 convs (filtering across channels
only, which keeps the high bands sparse) filter each level's high bands; the
inverse 2D and channel DWTs bring the result back to the spatial domain, where a
residual connection adds the (projected) input. The ECCV 2024 WeConv layer is
the special case of no channel DWT, one spatial level and 3x3 high-band convs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from compressai import layers as compressai_layers
from compressai.layers import conv1x1, conv3x3, subpel_conv3x3
from torch import Tensor, nn

from harness import wavelets
from harness.model import exact


def as_float(x: Tensor) -> Tensor:
    """Images as the networks take them: uint8 samples scaled to [0, 1] in float32 (the values of
    ``x.float() / 255``), float images as they are. The models take uint8 images and scale them
    here, where a transform reads them (a tile at a time when tiled), so that no float copy of a
    whole image outlives its analysis."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def pad_to(x: Tensor, multiple: int) -> Tensor:
    """Edge-pad ``x`` at the bottom and right to a multiple of ``multiple`` (the network crops back)."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class ResidualBlock(compressai_layers.ResidualBlock):
    """compressai's residual block (3x3 conv, LeakyReLU, 3x3 conv, LeakyReLU, + the input), the
    same module and weights, whose sum is written over the block's own output when no gradient
    is kept: compressai allocates it anew (``out + identity``, since the in-place LeakyReLU's
    backward reads ``out``), and at full resolution a new image-sized tensor cost ~20 ms of page
    faults per block, and one more such tensor held at g_s's memory peak. The same sums, so the
    same values and bits."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        out = conv_leaky_relu(self.conv2, self.leaky_relu, conv_leaky_relu(self.conv1, self.leaky_relu, x))
        return out.add_(x if self.skip is None else self.skip(x))


class GDN(compressai_layers.GDN):
    """compressai's GDN (or inverse GDN), the same module and weights, whose normalisation is
    written over the sum it normalises when no gradient is kept: compressai makes a new tensor
    for the square root and another for the product (the backward reads them), each the size of
    the input, 100 MB of bf16 in g_a's first block at Kodak's full resolution. The same
    operations on the same values (x * norm is norm * x), so the same bits."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        channels = x.shape[1]
        gamma = self.gamma_reparam(self.gamma).reshape(channels, channels, 1, 1)
        norm = F.conv2d(x**2, gamma, self.beta_reparam(self.beta))
        norm = norm.sqrt_() if self.inverse else norm.rsqrt_()
        return norm.mul_(x) if _may_overwrite(norm, x) else x * norm


class ResidualBlockWithStride(compressai_layers.ResidualBlockWithStride):
    """compressai's block (g_a's first layer) with :class:`GDN` in place of theirs, and its first
    convolution's LeakyReLU fused in bf16 inference (:func:`conv_leaky_relu`)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2) -> None:
        super().__init__(in_ch, out_ch, stride=stride)
        self.gdn = GDN(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        out = self.gdn(self.conv2(conv_leaky_relu(self.conv1, self.leaky_relu, x)))
        out += x if self.skip is None else self.skip(x)
        return out


class ResidualBlockUpsample(compressai_layers.ResidualBlockUpsample):
    """compressai's block (g_s's first layer) with :class:`GDN` in place of theirs, and its
    sub-pixel convolution's LeakyReLU fused in bf16 inference (:func:`conv_leaky_relu`; it
    commutes with the pixel shuffle, a permutation)."""

    def __init__(self, in_ch: int, out_ch: int, upsample: int = 2) -> None:
        super().__init__(in_ch, out_ch, upsample=upsample)
        self.igdn = GDN(out_ch, inverse=True)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        conv, shuffle = self.subpel_conv
        out = self.igdn(self.conv(shuffle(conv_leaky_relu(conv, self.leaky_relu, x))))
        out += self.upsample(x)
        return out


def res_group(channels: int, blocks: int) -> list[nn.Module]:
    """A ResGroup: ``blocks`` residual blocks of two 3x3 convs (Fig. 2)."""
    return [ResidualBlock(channels, channels) for _ in range(blocks)]


def conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=kernel, padding=kernel // 2)


@exact.register_composite
class WaveletDomainConv(nn.Module):
    """Channel DWT -> multi-level 2D DWT -> per-subband convs -> inverse DWTs.

    Each channel group has its own convs: a 3x3 conv + GDN on its spatial low
    band and, per spatial level, a ``hf_kernel`` conv + GDN on the concatenated
    LH/HL/HH bands. Feature maps whose size is not a multiple of 2^spatial_levels
    (the hyper networks' smallest maps) are edge-padded for the transform and
    cropped back, so every level's three high bands have one shape.
    """

    def __init__(
        self,
        channels: int,
        wavelet: str,
        channel_levels: int,
        spatial_levels: int,
        hf_kernel: int,
        inverse: bool = False,
    ) -> None:
        super().__init__()
        self.wavelet = wavelet
        self.channel_levels = channel_levels
        self.spatial_levels = spatial_levels
        self.group_sizes = _channel_group_sizes(channels, wavelet, channel_levels)
        self.low = nn.ModuleList(
            nn.Sequential(conv3x3(c, c), GDN(c, inverse=inverse)) for c in self.group_sizes
        )
        self.high = nn.ModuleList(
            nn.ModuleList(
                nn.Sequential(conv(3 * c, 3 * c, hf_kernel), GDN(3 * c, inverse=inverse))
                for _ in range(spatial_levels)
            )
            for c in self.group_sizes
        )

    def forward(self, x: Tensor) -> Tensor:
        """Called through ``Module.__call__``, whose argument tuple holds ``x`` until it returns, or
        as a plain method by the 3DM-WeConv layers, which hand it their own temporary: then ``x`` is
        freed as soon as the channel analysis has read it (50 MB of float32 in g_s's last layer on
        Kodak, alive at the layer's peak until then)."""
        height, width = x.shape[-2:]
        x = pad_to(x, 2**self.spatial_levels)
        # bf16, and fp32 on the CPU (harness.model.precision), run channels-last: the bands come out
        # so (the analyses keep their input's layout), and the syntheses are asked for it, for the
        # convolutions that read them next
        last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        layout = torch.channels_last if last else torch.contiguous_format
        # The 2D DWT acts on each channel alone, so one call covers all channel groups, read
        # side by side where the channel analysis wrote them (not a copy of them joined).
        # Every analysis's and synthesis's buffer is as large as x: each is freed as soon as the
        # next step has read it (x and the channel analysis here; the spatial one, which holds the
        # filtered high bands when no gradient is kept, once merged), not when forward returns.
        joined = wavelets.channel_dwt(x, self.wavelet, self.channel_levels, joined=True) if self.channel_levels else x
        del x
        low, highs = wavelets.dwt2(joined, self.wavelet, self.spatial_levels)
        del joined
        sizes = list(self.group_sizes)
        low = torch.cat([f(t) for f, t in zip(self.low, torch.split(low, sizes, dim=1))], dim=1)
        filtered_highs = [self._filter_highs(level, bands, sizes, layout) for level, bands in enumerate(highs)]
        del highs
        merged = wavelets.idwt2(low, filtered_highs, self.wavelet, memory_format=layout)
        del low, filtered_highs
        groups = list(torch.split(merged, sizes, dim=1))
        return _merge_channels(groups, self.wavelet, self.channel_levels, layout)[..., :height, :width]

    def _filter_highs(self, level: int, bands: tuple[Tensor, Tensor, Tensor], sizes: list[int],
                      layout: torch.memory_format) -> tuple[Tensor, ...]:
        """One level's (LH, HL, HH), each group's three bands filtered together. Without gradients
        the outputs are written over the bands a group at a time, once that group's bands are read
        (into the concatenation its convolution takes): the level needs no second set of bands,
        37.5 MB of float32 at g_s's last layer on Kodak, at the layer's peak. With gradients, into
        new bands (the analysis's outputs are not to be written over then)."""
        per_band = [torch.split(band, sizes, dim=1) for band in bands]
        filtered: list[Tensor] = []
        for g, conv_g in enumerate(self.high):
            conv, gdn = conv_g[level]  # called apart: the concatenation is freed before the GDN runs
            mixed = gdn(conv(torch.cat([band[g] for band in per_band], dim=1)))
            if not filtered:  # in the filters' dtype (bf16 under autocast)
                overwrite = not torch.is_grad_enabled() and mixed.dtype == bands[0].dtype
                filtered = list(bands) if overwrite else [
                    torch.empty(band.shape, dtype=mixed.dtype, device=mixed.device, memory_format=layout)
                    for band in bands]
            start = sum(sizes[:g])
            for out, part in zip(filtered, torch.split(mixed, sizes[g], dim=1)):
                out[:, start : start + sizes[g]].copy_(part)
            del mixed
        return tuple(filtered)


class WeConvDown(nn.Module):
    """Forward 3DM-WeConv layer: strided 3x3 conv -> wavelet-domain conv, + 1x1 strided skip."""

    def __init__(self, in_ch: int, out_ch: int, wavelet: str, channel_levels: int, spatial_levels: int,
                 hf_kernel: int, stride: int = 2) -> None:
        super().__init__()
        self.conv = conv3x3(in_ch, out_ch, stride=stride)
        self.act = nn.LeakyReLU(inplace=True)
        self.wavelet_conv = WaveletDomainConv(out_ch, wavelet, channel_levels, spatial_levels, hf_kernel)
        self.skip = conv1x1(in_ch, out_ch, stride=stride) if stride != 1 or in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # a plain call: the wavelet-domain conv frees this temporary once analysed (its forward)
        return _residual_sum(self.wavelet_conv.forward(conv_leaky_relu(self.conv, self.act, x)), self.skip(x))


@exact.register_composite
class WeConvUp(nn.Module):
    """Inverse 3DM-WeConv layer: sub-pixel up-sampling conv -> wavelet-domain conv (inverse GDN), + up-sampled skip."""

    def __init__(self, in_ch: int, out_ch: int, wavelet: str, channel_levels: int, spatial_levels: int,
                 hf_kernel: int, upsample: int = 2) -> None:
        super().__init__()
        self.conv = subpel_conv3x3(in_ch, out_ch, upsample)
        self.act = nn.LeakyReLU(inplace=True)
        self.wavelet_conv = WaveletDomainConv(out_ch, wavelet, channel_levels, spatial_levels, hf_kernel,
                                              inverse=True)
        self.skip = subpel_conv3x3(in_ch, out_ch, upsample)

    def forward(self, x: Tensor) -> Tensor:
        # LeakyReLU commutes with the pixel shuffle (a permutation): applied by the convolution before it
        conv, shuffle = self.conv
        # a plain call: the wavelet-domain conv frees this temporary once analysed (its forward)
        out = self.wavelet_conv.forward(shuffle(conv_leaky_relu(conv, self.act, x)))
        skip_conv, skip_shuffle = self.skip
        skip = skip_conv(x)
        if _may_overwrite(out, skip):
            return _add_shuffled(out, skip, skip_shuffle.upscale_factor)
        return out + skip_shuffle(skip)


def _add_shuffled(out: Tensor, x: Tensor, factor: int) -> Tensor:
    """``out += pixel_shuffle(x, factor)``, reading ``x`` where it lies: the shuffle is a
    permutation, so ``out`` is added to through a view that puts each of its samples beside the
    one of ``x`` that the shuffle would move there. The same sums as on a shuffled copy, without
    the copy (as large as ``out``: 50 MB of float32 at g_s's last layer on Kodak, at its peak)."""
    n, channels, height, width = out.shape
    r = factor
    blocks = x.view(n, channels, r, r, height // r, width // r).permute(0, 1, 4, 2, 5, 3)
    out.view(n, channels, height // r, r, width // r, r).add_(blocks)
    return out


def conv_leaky_relu(conv: nn.Conv2d, act: nn.LeakyReLU, x: Tensor) -> Tensor:
    """``act(conv(x))``; in bf16 inference on the CPU (:class:`~harness.model.precision.Mixed`),
    one oneDNN convolution that applies the LeakyReLU as it writes its output (a post-op, as
    torch's own compiler fuses them: ``torch.ops.mkldnn._convolution_pointwise``). Apart, the
    LeakyReLU is one more pass over the convolution's output, 100 MB at g_a's full resolution on
    Kodak, about a fifth of that convolution's time (benchmarks/RESULTS.md, speed.py).

    Fused, the negative outputs are rounded to bf16 once (the float32 sum times the slope) instead
    of twice (the sum, then the product): within one bf16 unit in the last place of the unfused
    values, and the positive ones the same bits. fp32, training and other devices run as before."""
    if not _fusable(conv, x):
        return act(conv(x))
    dtype = torch.bfloat16
    bias = None if conv.bias is None else conv.bias.to(dtype)
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight.to(dtype), bias, conv.padding, conv.stride,
                                                   conv.dilation, conv.groups, "leaky_relu", [act.negative_slope], "")


def _fusable(conv: nn.Module, x: Tensor) -> bool:
    """Whether :func:`conv_leaky_relu` may run ``conv`` with its LeakyReLU fused: a float
    convolution (not the integer path's) with zero padding given as numbers, no gradient kept, a
    bf16 channels-last input on the CPU that autocast (or bf16 weights) convolves in bf16, and a
    oneDNN that convolves bf16 on this CPU (AVX-512 or AVX-NE-CONVERT: on an AVX2-only CPU torch
    convolves bf16 on its own slow path, and the fused op refuses)."""
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return False
    bf16 = torch.bfloat16
    in_bf16 = conv.weight.dtype == bf16 or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == bf16)
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == bf16 and in_bf16
            and x.is_contiguous(memory_format=torch.channels_last) and _onednn_convolves_bf16())


@functools.cache
def _onednn_convolves_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _residual_sum(out: Tensor, skip: Tensor) -> Tensor:
    """``out + skip``, written over ``out`` where it may be (as :class:`ResidualBlock` does): one
    image-sized tensor fewer per 3DM-WeConv layer, the same sums."""
    return out.add_(skip) if _may_overwrite(out, skip) else out + skip


def _may_overwrite(out: Tensor, other: Tensor) -> bool:
    """Whether ``out op other`` may be written over ``out``: no gradient is kept (backward reads
    the operands) and the result keeps ``out``'s dtype (autocast may hand a float32 tensor a bf16
    one)."""
    return not torch.is_grad_enabled() and out.dtype == torch.promote_types(out.dtype, other.dtype)


def _split_channels(x: Tensor, wavelet: str, levels: int) -> list[Tensor]:
    if levels == 0:
        return [x]
    return wavelets.channel_dwt(x, wavelet, levels, dim=1)


def _merge_channels(groups: list[Tensor], wavelet: str, levels: int, layout: torch.memory_format) -> Tensor:
    if levels == 0:
        return groups[0]
    return wavelets.channel_idwt(groups, wavelet, dim=1, memory_format=layout)


def _channel_group_sizes(channels: int, wavelet: str, levels: int) -> tuple[int, ...]:
    probe = torch.zeros(1, channels, 1, 1)
    return tuple(int(g.shape[1]) for g in _split_channels(probe, wavelet, levels))
