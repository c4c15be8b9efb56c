"""3DM-WeConvene and its ablations by name: the configs the paper's Tables I-IV compare.

Widths the paper does not state (hyper channels, AttentionNet and ParamNet widths) are
chosen so the parameter counts land on Tables I-IV; see README "Model".
"""

from __future__ import annotations

from dataclasses import replace

from harness.errors import HarnessError
from harness.model.config import ModelConfig

_DEFAULT = ModelConfig(variant="3dm-weconvene")

VARIANTS: dict[str, ModelConfig] = {
    "3dm-weconvene": _DEFAULT,
    # ECCV 2024 WeConv layer: one-level 2D DWT, 3x3 conv in every subband (Table II).
    "weconv2d": replace(_DEFAULT, variant="weconv2d", conv_channel_levels=0, conv_spatial_levels=1, conv_hf_kernel=3),
    # 3x3 instead of 1x1 convolutions in the high bands of 3DM-WeConv (Table II).
    "hf3x3": replace(_DEFAULT, variant="hf3x3", conv_hf_kernel=3),
    # One spatial DWT level in 3DM-WeConv (Table III).
    "levels1": replace(_DEFAULT, variant="levels1", conv_spatial_levels=1),
    # ECCV WeChARM entropy model (Table IV): 2D DWT of y, 5 LF + 5 HF slices, 3x3
    # ParamNet/LRP and 128-wide AttentionNets as in the authors' 2D code.
    "wecharm2d": replace(
        _DEFAULT,
        variant="wecharm2d",
        entropy="2d",
        attention_channels=128,
        param_hidden=(256, 128),
        param_kernels=(3, 3, 3),
        lrp_kernels=(3, 3, 3),
    ),
    # Same structure, small widths: CPU tests and demos.
    "tiny": replace(
        _DEFAULT, variant="tiny", N=32, M=64, Z=32, res_blocks=1, attention_channels=16, param_hidden=(32, 32)
    ),
}

DEFAULT_VARIANT = "3dm-weconvene"


def get_config(variant: str) -> ModelConfig:
    """The configuration registered under ``variant`` (see :data:`VARIANTS`)."""
    try:
        return VARIANTS[variant]
    except KeyError:
        raise HarnessError(f"unknown model variant {variant!r}: choose one of {', '.join(VARIANTS)}") from None
