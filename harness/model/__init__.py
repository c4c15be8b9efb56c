"""The 3DM-WeConvene network, its ablation variants, loss and checkpoints."""

from harness.model.config import DEFAULT_VARIANT, VARIANTS, ModelConfig, get_config
from harness.model.network import WeConvene

__all__ = ["DEFAULT_VARIANT", "VARIANTS", "ModelConfig", "WeConvene", "get_config"]
