"""Every variant by name, built the same way: 3DM-WeConvene's (:mod:`harness.zoo.variants`) and
CompressAI's (:mod:`harness.zoo.baselines`). Training, coding, checkpoints and the leaderboard
ask here for a variant's config, its model and its codec id."""

from __future__ import annotations

import torch

from harness.errors import HarnessError
from harness.model.config import ModelConfig
from harness.model.network import WeConvene
from harness.zoo.baselines import ARCHITECTURES, PREFIX, BaselineConfig, build_baseline, is_baseline, parse_variant
from harness.zoo.variants import VARIANTS, get_config


def model_config(variant: str) -> BaselineConfig | ModelConfig:
    """The config of any variant: a :class:`BaselineConfig` or a 3DM-WeConvene ``ModelConfig``."""
    if is_baseline(variant):
        return parse_variant(variant)
    try:
        return get_config(variant)
    except HarnessError as error:
        raise HarnessError(f"{error}, or a CompressAI baseline {PREFIX}NAME[?N=INT,M=INT] ({', '.join(ARCHITECTURES)})") from None


def build_model(variant: str) -> torch.nn.Module:
    """A freshly initialised model of any variant."""
    config = model_config(variant)
    return build_baseline(config) if isinstance(config, BaselineConfig) else WeConvene(config)


def codec_id(variant: str) -> str:
    """The leaderboard's codec id of a model variant: the variant itself for 3DM-WeConvene
    and its ablations, ``compressai-<name>`` for a baseline (codec ids hold no ``:``, the
    ``codec:config`` separator, and one curve spans the widths the zoo uses per quality)."""
    return f"compressai-{parse_variant(variant).architecture}" if is_baseline(variant) else variant


def serves_codec(codec: str) -> bool:
    """Whether ``codec`` is the codec id of a variant (the id of a learned curve)."""
    return codec in VARIANTS or (codec.startswith("compressai-") and codec[len("compressai-"):] in ARCHITECTURES)
