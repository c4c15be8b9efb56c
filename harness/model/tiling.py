"""g_a and g_s over overlapping spatial tiles: the same latent and reconstruction as the whole
image (within float rounding) in memory that grows with the tile, not the image.

Each tile is computed with a halo of neighbouring pixels (latent samples for g_s) around its
core, and only the core of its output is kept. The halo covers the transform's receptive field,
which :func:`receptive_radius` derives from the layers themselves: a 3x3 conv reaches one sample
at its input's scale, a wavelet-domain conv as far as its DWT levels' lifting steps and its
subband convs reach and back (paper §III-A). Inside the halo, a tile's own border (edge padding,
the DWT's symmetric extension) changes values; outside it, every core sample sees exactly the
inputs it sees in the whole image. Tile origins and halos are multiples of :func:`alignment`,
g_a's stride times 2^(spatial DWT levels), so every DWT of every tile splits its samples into
the same even/odd phases as the whole image's; a tile at the true image border reaches that
border and keeps its boundary extension. The entropy model runs on the whole latent (stride 8,
64x fewer samples than the image, M instead of N channels), so the bitstream is the same format
and a file coded tiled decodes untiled, and the reverse.
"""

from __future__ import annotations

import math

from compressai.layers import GDN, ResidualBlock, ResidualBlockUpsample, ResidualBlockWithStride
from torch import Tensor, nn

from harness import process_memory
from harness.errors import HarnessError
from harness.model.config import ModelConfig
from harness.model.layers import WaveletDomainConv, WeConvDown, WeConvUp, as_float
from harness.model.precision import ChannelsLast

# How far one level of each wavelet's lifting reaches, in samples of that level's input: 9/7's
# four steps each reach one neighbour (the low band's filter has 9 taps), 5/3's two, Haar's one.
LIFTING_REACH = {"haar": 1, "5/3": 2, "9/7": 4}
G_A_STRIDE = 8  # g_a's down-sampling (the latent's stride in pixels); g_s up-samples as much


def alignment(config: ModelConfig) -> int:
    """Pixels that every tile origin and halo is a multiple of: g_a's stride times 2^(spatial
    DWT levels), so the deepest DWT of every 3DM-WeConv layer keeps the whole image's phase."""
    return G_A_STRIDE * 2**config.conv_spatial_levels


def check_tile(tile: int, config: ModelConfig) -> None:
    """Refuse a tile side that would put tile origins off the DWTs' phase."""
    if tile < 1 or tile % alignment(config):
        raise HarnessError(f"tiles of {tile} px: a tile side must be a positive multiple of {alignment(config)} px "
                           f"(g_a's stride x 2^{config.conv_spatial_levels} DWT levels)")


def receptive_radius(module: nn.Module, scale: int = 1) -> tuple[int, int]:
    """(radius, output scale) of ``module`` run on samples ``scale`` pixels apart: how many pixels
    from an output sample an input sample can be and still change it. An upper bound built from
    the layers, one rule per kind; a layer of an unknown kind is an error, never a guess."""
    if isinstance(module, nn.Sequential):
        radius = 0
        for layer in module:
            reach, scale = receptive_radius(layer, scale)
            radius += reach
        return radius, scale
    if isinstance(module, nn.Conv2d):
        if module.dilation != (1, 1) or module.kernel_size[0] != module.kernel_size[1]:
            raise HarnessError(f"cannot tile a {module}: only square, undilated convolutions")
        return module.kernel_size[0] // 2 * scale, scale * module.stride[0]
    if isinstance(module, nn.PixelShuffle):
        # An output sample is one of the r x r its input sample became: up to one input step away.
        return scale, scale // module.upscale_factor
    if isinstance(module, ChannelsLast):  # the same layers, channels-last (under bf16 autocast for Mixed)
        return receptive_radius(module.module, scale)
    if isinstance(module, (GDN, nn.LeakyReLU, nn.Identity)):
        return 0, scale
    if isinstance(module, WaveletDomainConv):
        levels, reach = module.spatial_levels, LIFTING_REACH[module.wavelet]
        lifting = reach * (2**levels - 1) * scale  # the analysis levels; the synthesis reaches as far back
        kernels = max(conv[0].kernel_size[0] for convs in module.high for conv in convs)
        subbands = max(1, kernels // 2) * 2**levels * scale  # the deepest level's 3x3 (or wider) convs
        return 2 * lifting + subbands, scale
    if isinstance(module, (WeConvDown, WeConvUp)):
        conv_reach, out_scale = receptive_radius(module.conv, scale)
        return conv_reach + receptive_radius(module.wavelet_conv, out_scale)[0], out_scale
    if isinstance(module, ResidualBlockWithStride):
        first, out_scale = receptive_radius(module.conv1, scale)
        return first + receptive_radius(module.conv2, out_scale)[0], out_scale
    if isinstance(module, ResidualBlock):
        return receptive_radius(module.conv1, scale)[0] + receptive_radius(module.conv2, scale)[0], scale
    if isinstance(module, ResidualBlockUpsample):
        first, out_scale = receptive_radius(module.subpel_conv, scale)
        return first + receptive_radius(module.conv, out_scale)[0], out_scale
    raise HarnessError(f"cannot tile a network with a {type(module).__name__} layer: its reach is not known")


def analysis_halo(g_a: nn.Module, config: ModelConfig) -> int:
    """g_a's halo in pixels: its receptive radius rounded up to :func:`alignment`."""
    return _round_up(receptive_radius(g_a)[0], alignment(config))


def synthesis_halo(g_s: nn.Module, config: ModelConfig) -> int:
    """g_s's halo in latent samples: its receptive radius (pixels, from g_s's output back to y)
    rounded up so that the halo in pixels is a multiple of :func:`alignment`."""
    radius, out_scale = receptive_radius(g_s, G_A_STRIDE)
    if out_scale != 1:
        raise HarnessError(f"g_s up-samples its input {G_A_STRIDE // out_scale}x, not {G_A_STRIDE}x: cannot tile it")
    return _round_up(radius, alignment(config)) // G_A_STRIDE


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, stop) of the cores of the tiles that cover ``length`` samples, ``tile`` each (the last shorter)."""
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def analyse(g_a: nn.Module, x: Tensor, tile: int, halo: int) -> Tensor:
    """``g_a(x)`` computed ``tile`` x ``tile`` pixels at a time (``x`` padded to the model's
    stride, uint8 images scaled a tile at a time; ``tile`` and ``halo`` multiples of :func:`alignment`)."""
    return _tiled(g_a, x, tile, halo, G_A_STRIDE, down=True)


def synthesise(g_s: nn.Module, y: Tensor, tile: int, halo: int) -> Tensor:
    """``g_s(y)`` computed ``tile`` x ``tile`` latent samples at a time (``halo`` in latent samples)."""
    return _tiled(g_s, y, tile, halo, G_A_STRIDE, down=False)


def _tiled(net: nn.Module, x: Tensor, tile: int, halo: int, factor: int, down: bool) -> Tensor:
    """``net(x)`` tile by tile; ``net`` scales sizes by 1/``factor`` (``down``) or ``factor``.
    Only the output is whole-size: each tile's activations are freed before the next."""
    height, width = x.shape[-2:]

    def out_at(v: int) -> int:
        return v // factor if down else v * factor

    out = None
    for top, bottom in spans(height, tile):
        for left, right in spans(width, tile):
            t, l = max(top - halo, 0), max(left - halo, 0)  # noqa: E741
            piece = net(as_float(x[..., t:min(bottom + halo, height), l:min(right + halo, width)]))
            if out is None:
                out = piece.new_empty((*x.shape[:-3], piece.shape[-3], out_at(height), out_at(width)))
            out[..., out_at(top):out_at(bottom), out_at(left):out_at(right)] = piece[
                ..., out_at(top - t):out_at(bottom - t), out_at(left - l):out_at(right - l)]
            del piece
            process_memory.trim()  # the tile's activations: else the next tile's land beside them
    return out


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple
