"""Any variant's freshly initialised model, by name: 3DM-WeConvene's (:mod:`harness.model.network`)
or CompressAI's (:mod:`harness.zoo.baselines`); :mod:`harness.zoo.registry` reads the name."""

from __future__ import annotations

import torch

from harness.model.network import WeConvene
from harness.zoo.baselines import build_baseline
from harness.zoo.registry import BaselineConfig, model_config


def build_model(variant: str) -> torch.nn.Module:
    """A freshly initialised model of any variant."""
    config = model_config(variant)
    return build_baseline(config) if isinstance(config, BaselineConfig) else WeConvene(config)
