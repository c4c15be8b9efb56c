"""Model checkpoints: ``{"format", "version", "config", "state_dict"}`` in one torch file.

Only plain types and tensors, so ``torch.load(path, weights_only=True)`` reads it
without executing code. Entropy tables (CDFs of the EntropyBottleneck and the
GaussianConditional scale table) are updated before saving so a checkpoint can
code real bitstreams straight away. ``entropy_path`` names the integer entropy
path (:data:`harness.model.exact.PATH_ID`) that coding runs, or "float" for a
CompressAI baseline; a checkpoint naming no path or another one is refused in one
line. ``integer_nets`` carries that path's networks as built from the weights
(deterministic in them: derived data), packed in one tensor per dtype, with the
fingerprint of the weights they were built from: a load whose weights have that
fingerprint takes them instead of converting 61.5 M weights anew. A checkpoint
without them (written before), or whose weights changed since (a state dict
edited by hand), has them built at load from its weights.

A load maps the file (``torch.load(mmap=True)``) and reads each tensor from the page cache once:
into the model's own memory for what the model keeps, into the fingerprint only for the float
entropy networks that a process coding on the integer path drops (246 MB of the default model's
303 MB), whose pages go back as they are hashed. Once loaded, a model holds nothing of the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from compressai.entropy_models import EntropyModel
from torch.overrides import TorchFunctionMode

from harness import process_memory
from harness.artefacts import torchfile
from harness.artefacts.bitstream import FLOAT_PATH
from harness.artefacts.config import InitModelConfig
from harness.artefacts.torchfile import check_shapes
from harness.atomic import check_output, write_atomic
from harness.errors import HarnessError
from harness.model import exact, rans
from harness.model.config import ModelConfig
from harness.model.network import WeConvene
from harness.zoo.baselines import build_baseline, shadow_model
from harness.zoo.factory import build_model
from harness.zoo.registry import BaselineConfig, is_baseline
from harness.zoo.variants import VARIANTS

FORMAT = "harness-weconvene-checkpoint"
VERSION = 1


def fingerprint(model: WeConvene, hashed: Callable[[torch.Tensor], None] = lambda tensor: None) -> str:
    """SHA-256 over the config and every tensor of the state dict (names, shapes, dtypes, bytes);
    ``hashed`` is called with each tensor once its bytes are in the digest."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        # flatten: a channels_last weight with 1x1 kernels counts as contiguous yet has stride(-1) != 1
        flat = tensor.detach().cpu().contiguous().flatten()
        digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")  # hashed in place, not copied
        hashed(tensor)
    return digest.hexdigest()


def entropy_path(model) -> str:
    """How ``model`` predicts its entropy parameters when coding: the integer path's id, or
    "float" (CompressAI's baselines code with their own float networks)."""
    return exact.PATH_ID if model.integer_path else FLOAT_PATH


def save_checkpoint(model: WeConvene, path: str | Path) -> str:
    """Update the entropy tables and write the checkpoint atomically (temp file + rename); returns
    the model's fingerprint (hashed once here: it binds the integer networks the file carries)."""
    model.update(force=True)
    digest = fingerprint(model)
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "state_dict": model.state_dict(),
               "entropy_path": entropy_path(model)}
    if model.integer_path:
        payload["integer_nets"] = {"fingerprint": digest, **model.integer_state()}
    write_atomic(path, lambda tmp: torch.save(payload, tmp), what="checkpoint ")
    return digest


def load_checkpoint(path: str | Path, variant: str | None = None) -> WeConvene:
    """Rebuild the model stored at ``path`` (in eval mode); ``variant`` checks which one it must be."""
    return _load(path, variant, float_prior=True)[0]


def load_fingerprinted(path: str | Path, variant: str | None = None,
                       float_prior: bool = True) -> tuple[WeConvene, str]:
    """:func:`load_checkpoint` and the model's :func:`fingerprint`: the one the load computed to
    check the integer networks the file carries, if it did, so that a process that needs both
    hashes the weights (0.2-0.3 s of the default model's) once. ``float_prior=False``, for a
    process that codes on the integer path only: the float entropy networks it stands in for
    (246 MB of the default model's 303 MB) are hashed from the file and never held
    (:meth:`WeConvene.drop_float_prior`)."""
    model, digest = _load(path, variant, float_prior)
    return model, digest or fingerprint(model)


def _load(path: str | Path, variant: str | None, float_prior: bool) -> tuple[WeConvene, str | None]:
    """The model at ``path`` and its fingerprint where the load needed it (None elsewhere)."""
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} does not exist")
    payload = torchfile.load(path, "a model checkpoint")  # mapped: read where needed, copied once (_own)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HarnessError(f"{path} is not a {FORMAT} file")
    if payload.get("version") != VERSION:
        raise HarnessError(f"{path}: checkpoint format version {payload.get('version')} unsupported (need {VERSION})")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise HarnessError(f"{path}: checkpoint lacks its config or weights")
    torchfile.check_storage(payload["state_dict"], str(path))
    carried = payload.setdefault("integer_nets", {"fingerprint": None})
    if not isinstance(carried, dict) or not isinstance(carried.get("fingerprint"), (str, type(None))):
        raise HarnessError(f"{path}: its integer entropy networks are not a fingerprint and tensors")
    torchfile.check_storage({key: value for key, value in carried.items() if key != "fingerprint"}, str(path))
    if is_baseline(payload["config"].get("variant")):
        return _load_baseline(path, payload, variant)
    if payload["config"].get("variant") not in VARIANTS:  # checked before any network is built
        raise HarnessError(f"{path}: config field 'variant' is {payload['config'].get('variant')!r}, no variant "
                           f"of this harness ({', '.join(VARIANTS)}, or compressai:NAME)")
    _check_entropy_path(path, payload, exact.PATH_ID)
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, HarnessError) as error:
        raise HarnessError(f"{path}: invalid model config ({error})") from None
    if config != VARIANTS[config.variant]:
        raise HarnessError(f"{path}: its {config.variant!r} config differs from this version's definition")
    with _Unfilled():
        model = WeConvene(config)  # one of the known variants: no size a file can choose
    check_shapes({k: v.shape for k, v in model.state_dict().items()}, payload["state_dict"], str(path),
                 f"variant {config.variant!r}")
    return _with_weights(path, model, payload, variant, float_prior)


def _check_entropy_path(path: Path, payload: dict, expected: str) -> None:
    """The entropy path ``payload`` was exported for must be the one this harness codes its
    variant with: another path's files would not decode."""
    held = payload.get("entropy_path")
    if held != expected:
        holds = "names no entropy path" if held is None else f"was exported for entropy path {held!r}"
        raise HarnessError(f"{path} {holds}; this harness codes {payload['config'].get('variant')!r} with "
                           f"{expected!r}: use the harness that wrote it")


def _load_baseline(path: Path, payload: dict, variant: str | None):
    """A CompressAI baseline's checkpoint (see :mod:`harness.zoo.baselines`): its config's widths
    are bounded and its tensors' shapes checked on a shadow model before the model is built."""
    try:
        config = BaselineConfig.from_dict(payload["config"])
    except HarnessError as error:
        raise HarnessError(f"{path}: {error}") from None
    _check_entropy_path(path, payload, FLOAT_PATH)
    expected = {k: v.shape for k, v in shadow_model(config).state_dict().items()}
    check_shapes(expected, payload["state_dict"], str(path), config.variant)
    with _Unfilled():
        model = build_baseline(config)
    return _with_weights(path, model, payload, variant, float_prior=True)


class _Unfilled(TorchFunctionMode):
    """Builds a model without ``torch.nn.init``'s random fills, for a model whose every tensor a
    checkpoint replaces next (a strict ``load_state_dict``): for the default model they took ~1 s
    of a load and touched 0.36 GB of memory (benchmarks/RESULTS.md, speed.py)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def _with_weights(path: Path, model, payload: dict, variant: str | None,
                  float_prior: bool) -> tuple[WeConvene, str | None]:
    """``model`` with the checkpoint's weights, entropy tables (and integer path) ready, in eval
    mode, and its fingerprint where the file carries integer networks to check (None elsewhere).

    The weights come assigned as the file's mapped tensors; what the model keeps is copied into
    the process's own memory before it is hashed (:func:`_own`), so that the fingerprint is that
    of the weights it codes with, and nothing of the model depends on the file once loaded (a
    file overwritten in place, by ``cp`` say, would otherwise change under a running process).
    Only the float prior of a process that does not keep it is hashed from the mapping, its pages
    handed back as each tensor is hashed: never copied, never held whole."""
    if variant is not None and model.config.variant != variant:
        raise HarnessError(f"{path} holds variant {model.config.variant!r}, expected {variant!r}")
    _assign_weights(path, model, payload.pop("state_dict"))
    _check_tables(path, model)
    carried = payload.pop("integer_nets")
    pages = process_memory.FilePages()
    _own(model, pages, model.float_prior_keys() if model.integer_path and not float_prior else ())
    if not model.integer_path:
        model.update(force=False)
        return model.eval(), None
    built_from = carried.pop("fingerprint")
    digest = None if built_from is None else fingerprint(model, hashed=lambda tensor: _release(pages, tensor))
    fresh = digest is not None and built_from == digest  # else built for other weights: built anew from these
    # copied only where taken; a value that is no tensor is refused by the update, as damage
    owned = {k: _owned(pages, v) if isinstance(v, torch.Tensor) else v for k, v in carried.items()} if fresh else None
    try:
        model.update(force=False, integer_state=owned)
    except HarnessError as error:
        raise HarnessError(f"{path}: {error}; the file is damaged") from None
    if not float_prior:
        model.drop_float_prior()
    process_memory.trim()  # building the integer path frees ~0.3 GB of float64 copies of the weights
    return model.eval(), digest


def _own(model, pages: process_memory.FilePages, skipped: tuple[str, ...]) -> None:
    """Copy each of ``model``'s tensors that is a file's mapped pages, but for those whose
    state-dict keys start with ``skipped``, into the process's own memory (in place: the same
    parameter and buffer objects, the same layouts), the pages read handed back at once."""
    for key, tensor in model.state_dict(keep_vars=True).items():
        if not key.startswith(skipped) and pages.holds(tensor.untyped_storage().data_ptr()):
            tensor.data = _owned(pages, tensor.data)


def _owned(pages: process_memory.FilePages, tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a tensor of the file's mapping in the process's own memory; the pages read go back."""
    copy = tensor.clone()
    _release(pages, tensor)
    return copy


def _release(pages: process_memory.FilePages, tensor: torch.Tensor) -> None:
    storage = tensor.untyped_storage()
    pages.release(storage.data_ptr(), storage.nbytes())


def _assign_weights(path: Path, model, state: dict) -> None:
    """A strict ``load_state_dict`` of ``state`` into ``model`` that takes the file's tensors as
    the model's (``assign``), not copies of them. The shapes were checked
    (:func:`torchfile.check_shapes`); a tensor of another dtype than the model's is converted."""
    targets = model.state_dict(keep_vars=True)
    missing = sorted(set(targets) - set(state))
    if missing:
        raise HarnessError(f"{path}: weights do not match variant {model.config.variant!r} "
                           f"({len(missing)} missing, e.g. {missing[0]})")
    # compressai's load_state_dict sizes the entropy models' table buffers to the file's: theirs go through it
    entropy_models = tuple(name + "." for name, module in model.named_modules() if isinstance(module, EntropyModel))
    tables = {key: state.pop(key) for key in list(state) if key.startswith(entropy_models)}
    weights = {key: tensor if tensor.dtype == targets[key].dtype else tensor.to(targets[key].dtype)
               for key, tensor in state.items()}
    try:
        model.load_state_dict(tables, strict=False)
        # nn.Module's own: compressai's override takes no ``assign`` (the tables went through it)
        torch.nn.Module.load_state_dict(model, weights, strict=False, assign=True)
    except (RuntimeError, KeyError, ValueError) as error:
        reason = str(error).splitlines()[0]
        raise HarnessError(f"{path}: weights do not match variant {model.config.variant!r} ({reason})") from None


def _check_tables(path: Path, model) -> None:
    """Refuse entropy tables that the rANS coders would index out of their rows."""
    for name, module in model.named_modules():
        if isinstance(module, EntropyModel) and module._quantized_cdf.numel():
            cdfs, lengths, offsets = module._quantized_cdf, module._cdf_length.reshape(-1), module._offset.reshape(-1)
            if cdfs.dim() != 2 or not rans.tables_fit(cdfs.numpy(), lengths.numpy(), offsets.numpy()):
                raise HarnessError(f"{path}: the entropy tables of {name} do not fit their rows (a CDF longer than "
                                   f"its row, or counts that differ): the file is damaged")


def run_init(config: InitModelConfig) -> str:
    """``harness init-model``: a freshly initialised checkpoint; returns its fingerprint."""
    check_output(config.out, {}, make_parents=True)
    torch.manual_seed(config.seed)
    model = build_model(config.variant)
    return save_checkpoint(model, config.out)
