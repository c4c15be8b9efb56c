"""The 3DM-WeConvene codec (paper Fig. 2): g_a, g_s and the 3DWeChARM latent codec.

Input: N x 3 x H x W float images in [0, 1] or uint8 images (0-255, scaled where g_a reads
them: :func:`~harness.model.layers.as_float`), any H and W: the model edge-pads to its stride
(64) and crops the reconstruction back, so callers never pad.
"""

from __future__ import annotations

import math

import torch
from compressai.layers import conv3x3, subpel_conv3x3
from compressai.models import CompressionModel
from compressai.models.base import get_scale_table
from torch import Tensor, nn

from harness import process_memory, wavelets
from harness.errors import HarnessError
from harness.model.config import ModelConfig
from harness.model.entropy import FLOAT_PRIOR, WeChARM
from harness.model.layers import (ResidualBlockUpsample, ResidualBlockWithStride, WeConvDown, WeConvUp, as_float, pad_to,
                                  res_group)
from harness.model.tiling import G_A_STRIDE, analyse, analysis_halo, check_tile, synthesise, synthesis_halo

SCALE_TABLE_LEVELS = 256


def core_analysis(c: ModelConfig) -> nn.Sequential:
    """g_a: stem, then ResGroup + 3DM-WeConv down-sampling twice, ResGroup + strided conv to M (stride 8)."""
    weconv = (c.wavelet, c.conv_channel_levels, c.conv_spatial_levels, c.conv_hf_kernel)
    return nn.Sequential(
        ResidualBlockWithStride(3, c.N, stride=1),
        *res_group(c.N, c.res_blocks),
        WeConvDown(c.N, c.N, *weconv),
        *res_group(c.N, c.res_blocks),
        WeConvDown(c.N, c.N, *weconv),
        *res_group(c.N, c.res_blocks),
        conv3x3(c.N, c.M, stride=2),
    )


def core_synthesis(c: ModelConfig) -> nn.Sequential:
    """g_s: mirror of g_a with inverse 3DM-WeConv (sub-pixel up-sampling) layers."""
    weconv = (c.wavelet, c.conv_channel_levels, c.conv_spatial_levels, c.conv_hf_kernel)
    return nn.Sequential(
        ResidualBlockUpsample(c.M, c.N, upsample=1),
        *res_group(c.N, c.res_blocks),
        WeConvUp(c.N, c.N, *weconv),
        *res_group(c.N, c.res_blocks),
        WeConvUp(c.N, c.N, *weconv),
        *res_group(c.N, c.res_blocks),
        subpel_conv3x3(c.N, 3, 2),
    )


class WeConvene(CompressionModel):
    """3DM-WeConvene and its ablations; ``forward`` for training, ``compress``/``decompress`` for bitstreams."""

    integer_path = True  # coding predicts the entropy parameters on harness.model.exact
    stream_count = 1  # z and every slice in one rANS stream (CompressAI's baselines write their own)
    fp32_channels_last = True  # fp32 on the CPU in oneDNN's own layout (harness.model.precision)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.g_a = core_analysis(config)
        self.g_s = core_synthesis(config)
        self.latent_codec = WeChARM(config)

    def update(self, scale_table: Tensor | None = None, force: bool = False, update_quantiles: bool = False,
               integer_state: dict[str, Tensor] | None = None) -> bool:
        """Entropy tables for rANS coding. Default: 256 Gaussian scales (CompressAI uses 64).
        With the least-cost entry per scale (``NearestScaleGaussian``) the tables cost
        0.28 % more bits than the likelihoods with 64 levels and 0.0 % with 256 on kodim01
        (briefly trained ``tiny``); with CompressAI's round-up rule, 1.35 % at 256 levels.
        The integer entropy path (:mod:`harness.model.exact`) is rebuilt from the weights each
        time, or taken from ``integer_state`` (:meth:`integer_state`, as a checkpoint carries it)."""
        if scale_table is None:
            scale_table = get_scale_table(levels=SCALE_TABLE_LEVELS)
        updated = super().update(scale_table, force=force, update_quantiles=update_quantiles)
        self.latent_codec.build_integer_path(integer_state)
        return updated

    def integer_state(self) -> dict[str, Tensor]:
        """The integer entropy path's tensors (:meth:`WeChARM.integer_state`)."""
        return self.latent_codec.integer_state()

    def keep_gemm_weights(self) -> None:
        """Keep the integer entropy path's weights prepared for this CPU's GEMM, for a process that
        codes many images with this model on the CPU (:meth:`WeChARM.keep_gemm_weights`)."""
        self.latent_codec.keep_gemm_weights()

    def float_prior_keys(self) -> tuple[str, ...]:
        """The state-dict key prefixes of the float entropy networks :meth:`drop_float_prior` frees."""
        return tuple(f"latent_codec.{name}." for name in FLOAT_PRIOR)

    def drop_float_prior(self) -> None:
        """Free the float entropy networks, for a process that codes on the integer path only
        (:meth:`WeChARM.drop_float_prior`): 246 MB of the default model's 303 MB of weights."""
        self.latent_codec.drop_float_prior()
        process_memory.trim()

    @property
    def stride(self) -> int:
        return self.config.stride

    def pad(self, x: Tensor) -> Tensor:
        return pad_images(x, self.stride)

    def forward(self, x: Tensor) -> dict:
        """``{"x_hat": N x 3 x H x W, "likelihoods": {subband: tensor, ..., "z": tensor}}``."""
        height, width = x.shape[-2:] if x.dim() == 4 else (0, 0)
        y = self.g_a(as_float(self.pad(x)))
        out = self.latent_codec(y)
        x_hat = self.g_s(out["y_hat"])[..., :height, :width]
        return {"x_hat": x_hat, "likelihoods": out["likelihoods"]}

    @property
    def halos(self) -> tuple[int, int]:
        """(g_a's, g_s's) tile halo in pixels (:mod:`harness.model.tiling`)."""
        return analysis_halo(self.g_a, self.config), synthesis_halo(self.g_s, self.config) * G_A_STRIDE

    @torch.no_grad()
    def compress(self, x: Tensor, reconstruct: bool = False, integer: bool = True, tile: int | None = None) -> dict:
        """Entropy-code a batch: ``{"strings", "shape", "size"}`` (+ ``"x_hat"``, the
        reconstruction the decoder will produce, when ``reconstruct``). Needs
        :meth:`update` (done by checkpoints) for the entropy tables and the integer path;
        ``integer=False`` predicts the entropy parameters with the float networks, whose
        streams decode right only where the encoder's kernels run (containers before v4).
        ``tile``: run g_a (and g_s) on tiles of that many pixels a side (a multiple of
        :func:`harness.model.tiling.alignment`); the same streams, within float rounding. Tiles
        mean a memory budget: the entropy model then also trims the heap before each convolution.
        ``x`` in uint8 is scaled as g_a reads it: the caller then holds no float copy of the image
        while the entropy model runs (12 bytes a pixel, 0.4 GB at 8K)."""
        height, width = x.shape[-2:] if x.dim() == 4 else (0, 0)
        if tile is not None:
            check_tile(tile, self.config)
        x = self.pad(x)
        y = self.g_a(as_float(x)) if tile is None else analyse(self.g_a, x, tile, analysis_halo(self.g_a, self.config))
        del x  # the padded copy, before the entropy model's buffers
        wavelets.release_workspace()  # g_a's, sized for its tiles: the latent's transforms would not reuse it
        subbands = self.latent_codec.analysis(y)
        del y  # as large as its subbands, which are in turn freed once copied into its slices
        y_slices, z = self.latent_codec.split_subbands(subbands)
        wavelets.release_workspace()  # h_a's, as wide as the four subbands it reads
        process_memory.trim()
        out = self.latent_codec.compress_slices(y_slices, z, integer, reconstruct, frugal=tile is not None)
        result = {"strings": out["strings"], "shape": out["shape"], "size": (int(height), int(width)),
                  "latent_crc": out["latent_crc"]}
        if reconstruct:
            result["x_hat"] = self._synthesize(out["y_hat"], (height, width), tile)
        return result

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int], size: tuple[int, int],
                   integer: bool = True, tile: int | None = None) -> dict:
        """Rebuild ``{"x_hat"}`` (clamped to [0, 1], cropped to ``size``) from :meth:`compress` output,
        and ``latent_crc``, the CRC-32 of the symbols decoded (equal to compress's when the
        entropy model ran as it did in the encoder). ``tile``: g_s on tiles of that many pixels a side."""
        if tile is not None:
            check_tile(tile, self.config)
        out = self.latent_codec.decompress(strings, shape, integer, frugal=tile is not None)
        wavelets.release_workspace()  # h_s's and the latent synthesis's, before g_s's
        process_memory.trim()  # the entropy model's buffers, before g_s's
        return {"x_hat": self._synthesize(out["y_hat"], size, tile), "latent_crc": out["latent_crc"]}

    def min_stream_bytes(self, size: tuple[int, int]) -> tuple[int]:
        """Bytes below which the stream of an image of ``size`` cannot be (checked before decoding)."""
        return (self.latent_codec.min_stream_bytes(tuple(math.ceil(s / self.stride) for s in size)),)

    def _synthesize(self, y_hat: Tensor, size: tuple[int, int], tile: int | None) -> Tensor:
        height, width = size
        if tile is None:
            x_hat = self.g_s(y_hat)
        else:
            x_hat = synthesise(self.g_s, y_hat, tile // G_A_STRIDE, synthesis_halo(self.g_s, self.config))
        return x_hat[..., :height, :width].clamp_(0, 1)


def pad_images(x: Tensor, stride: int) -> Tensor:
    """Checked images (see :func:`check_images`) edge-padded at the bottom/right to a multiple of
    ``stride``: the input of every model of the harness, 3DM-WeConvene's and CompressAI's."""
    check_images(x)
    return pad_to(x, stride)


def check_images(x: Tensor) -> None:
    """Raise HarnessError unless x is an N x 3 x H x W batch of finite floats or of uint8 samples."""
    if not isinstance(x, Tensor):
        raise HarnessError(f"expected a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise HarnessError(f"expected images shaped N x 3 x H x W, got a {x.dim()}-D tensor {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise HarnessError(f"expected 3 colour channels (RGB), got {x.shape[1]} in {tuple(x.shape)}")
    if min(x.shape) == 0:
        raise HarnessError(f"expected a non-empty batch of images, got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise HarnessError(f"expected float images in [0, 1] or uint8 images, got dtype {x.dtype}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise HarnessError("input images contain NaN or infinite values")
