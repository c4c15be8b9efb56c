"""The 3DM-WeConvene network and its parts: layers, latent codec, integer path, rANS reader, loss,
precision. Built from a :class:`ModelConfig`; :mod:`harness.zoo` turns variant names into configs."""

from harness.model.config import ModelConfig
from harness.model.network import WeConvene

__all__ = ["ModelConfig", "WeConvene"]
