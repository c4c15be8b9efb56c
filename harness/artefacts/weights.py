"""``harness import-weights``: CompressAI's published weights (its zoo's download, or a state-dict
file) as a harness checkpoint and card. The file's tensors give the widths; a file of another
architecture is a one-line error found on a shadow model, before any weights are allocated."""

from __future__ import annotations

from pathlib import Path

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.models.utils import remap_old_keys
from compressai.zoo import load_state_dict
from compressai.zoo.image import model_urls
from torch import Tensor
from torch.hub import load_state_dict_from_url

from harness.artefacts.card import PUBLISHED, ModelCard, PublishedStage, card_path, write_card
from harness.artefacts.checkpoint import entropy_path, save_checkpoint
from harness.artefacts.config import ImportWeightsConfig
from harness.artefacts.torchfile import TABLE_BUFFERS, check_shapes, check_storage, load
from harness.atomic import check_output
from harness.errors import HarnessError
from harness.hashing import sha256_bytes, sha256_file
from harness.precisions import PRECISIONS
from harness.zoo.baselines import build_baseline, shadow_model
from harness.zoo.registry import ARCHITECTURES, PREFIX, BaselineConfig


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a CompressAI checkpoint file: a bare state dict (what the zoo downloads)
    or CompressAI train.py's ``{"state_dict": ...}``; anything else is a one-line error."""
    if not path.is_file():
        raise HarnessError(f"{path} does not exist")
    payload = load(path, "a PyTorch state dict")
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items()):
        raise HarnessError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    return load_state_dict(payload)  # CompressAI's renames of older zoo files' keys


def _infer_config(architecture: str, state: dict[str, Tensor], name: str) -> BaselineConfig:
    widths = {}
    for width, key in ARCHITECTURES[architecture].width_tensors:
        if key not in state or state[key].dim() < 1:
            raise HarnessError(f"{name} does not hold {PREFIX}{architecture} weights (no tensor {key})")
        widths[width] = int(state[key].shape[0])
    return BaselineConfig(architecture, widths["N"], widths.get("M"))


def load_weights(architecture: str, state: dict[str, Tensor], name: str) -> torch.nn.Module:
    """A model of ``architecture`` holding ``state``; a state dict of another architecture
    (or widths) is a one-line error naming what differs, found before the model is built."""
    check_storage(state, name)
    config = _infer_config(architecture, state, name)
    shadow = shadow_model(config)
    for module_name, module in shadow.named_modules():  # CompressAI's second renaming (done in its load_state_dict)
        if isinstance(module, EntropyBottleneck):
            state = remap_old_keys(module_name, state)
    check_shapes({k: v.shape for k, v in shadow.state_dict().items()}, state, name, PREFIX + architecture)
    model = build_baseline(config)
    # Entropy tables are rebuilt from the weights on export: a file without them still imports.
    state = {**{k: v for k, v in model.state_dict().items() if k.endswith(TABLE_BUFFERS)}, **state}
    model.load_state_dict(state)
    return model


def _zoo_state_dict(config: ImportWeightsConfig) -> tuple[dict[str, Tensor], str]:
    urls = model_urls.get(config.architecture, {}).get(config.metric, {})
    if config.quality not in urls:
        raise HarnessError(f"CompressAI's zoo has no {config.metric} weights of {config.architecture} at quality "
                           f"{config.quality}")
    try:
        state = load_state_dict_from_url(urls[config.quality], progress=False, map_location="cpu")
    except Exception as error:  # network and cache failures come in many types
        raise HarnessError(f"cannot fetch {urls[config.quality]} ({str(error).splitlines()[0]})") from None
    return load_state_dict(state), urls[config.quality]


def run_import(config: ImportWeightsConfig):
    """``harness import-weights``: checkpoint + card in ``config.out`` (``<metric>-<λ>``); returns the card."""
    name = f"{config.metric}-{config.lmbda:g}"
    out = Path(config.out)
    checkpoint = out / f"{name}.pt"
    inputs = {} if config.source == "zoo" else {"state dict": Path(config.source)}
    for target in (checkpoint, card_path(out, name)):
        check_output(target, inputs, make_parents=True)
    if config.source == "zoo":
        state, origin = _zoo_state_dict(config)
        origin_sha = ""
    else:
        path = Path(config.source)
        state, origin, origin_sha = read_state_dict(path), str(path.resolve()), sha256_file(path)
    model = load_weights(config.architecture, state, origin)
    digest = save_checkpoint(model, checkpoint)
    model.eval()
    card = ModelCard(
        name=name, variant=model.config.variant, metric=config.metric, lmbda=config.lmbda,
        stages={PUBLISHED: PublishedStage("CompressAI weights", config.architecture, config.quality, origin, origin_sha)},
        batch_size=0, patch=0, seed=0, data="", data_sha256="", data_manifest_sha256="",
        params=sum(p.numel() for p in model.parameters()), fingerprint=digest,
        inputs_hash=sha256_bytes(f"{model.config.variant}|{config.metric}|{config.quality}|{digest}".encode()),
        restored_from_steps=(), final={}, checkpoint=checkpoint.name, entropy_path=entropy_path(model),
        train_s=0.0, device="", precision=PRECISIONS[0],  # not trained here; CompressAI's zoo trained in float32
    )
    write_card(card, card_path(out, name))
    print(f"{checkpoint}: {model.config.variant} quality {config.quality} ({config.metric}, lambda {config.lmbda:g}), "
          f"{card.params:,} parameters")
    return card
