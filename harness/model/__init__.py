"""The 3DM-WeConvene network, its ablation variants, loss and checkpoints."""

import warnings

# compressai 1.2.8 scripts a helper with torch.jit at import; torch 2.14 warns on every CLI run.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from harness.model.config import DEFAULT_VARIANT, VARIANTS, ModelConfig, get_config
from harness.model.network import WeConvene

__all__ = ["DEFAULT_VARIANT", "VARIANTS", "ModelConfig", "WeConvene", "get_config"]
