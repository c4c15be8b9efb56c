"""CompressAI's learned codecs as harness models: the network is CompressAI's own class (so its
state dict is CompressAI's, key for key, and a zoo file loads into it), wrapped by
:class:`HarnessCodec` in the interface the harness expects of a model (any image size, ``.3dmw``
streams, a latent check, a config with a variant name). Their names, widths and the variant
syntax are :mod:`harness.zoo.registry`'s.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import compressai.models
import torch
from compressai.entropy_models import EntropyModel
from compressai.layers import MaskedConv2d
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode

from harness.errors import HarnessError
from harness.model.entropy import SymbolCRC
from harness.model.layers import as_float
from harness.model.network import pad_images
from harness.model.rans import CheckedCoder
from harness.zoo.registry import ARCHITECTURES, BaselineConfig


class _SymbolRecorder:
    """Feeds the latent check (:class:`SymbolCRC`) from the hooks on each entropy model: the
    encoder's symbols come out of ``quantize(..., "symbols")`` and the decoder's go into
    ``dequantize``, in every CompressAI model (the autoregressive ones one position at a time)."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.crc = SymbolCRC()

    def start(self, mode: str) -> None:
        self.mode, self.crc = mode, SymbolCRC()

    def stop(self) -> int:
        self.mode = None
        return self.crc.values[0]

    def add(self, symbols: Tensor) -> None:
        self.crc.update(symbols.reshape(1, -1))  # one image: its symbols in the order coded


def _recording_quantize(module: EntropyModel, inputs: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
    outputs = type(module).quantize(module, inputs, mode, means)
    if mode == "symbols" and module._harness_symbols.mode == "encode":
        module._harness_symbols.add(outputs)
    return outputs


def _recording_dequantize(module: EntropyModel, inputs: Tensor, means: Tensor | None = None,
                          dtype: torch.dtype = torch.float) -> Tensor:
    if module._harness_symbols.mode == "decode":
        module._harness_symbols.add(inputs)
    return type(module).dequantize(inputs, means, dtype)


def _hook_entropy_models(model: torch.nn.Module, check: _SymbolRecorder) -> None:
    # Module-level functions bound with partial (not closures): a deep copy or a pickle of the
    # model keeps its hooks pointing at its own entropy models and its own check.
    for module in model.modules():
        if isinstance(module, EntropyModel):
            module._harness_symbols = check
            module.quantize = functools.partial(_recording_quantize, module)
            module.dequantize = functools.partial(_recording_dequantize, module)
            # compressai's RansDecoder reads through an unchecked pointer: a stream that ends early
            # (altered, its CRC recomputed) must be a one-line error, not a read past its buffer
            module.entropy_coder = CheckedCoder(module.entropy_coder)


def _apply_masks(model: torch.nn.Module) -> None:
    """Zero the masked taps of every context model's weights now. CompressAI's MaskedConv2d does
    it in place on each forward, so otherwise the weights (and the model's fingerprint, which the
    container records) of a model with unmasked taps would change on its first coded image."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MaskedConv2d):
                module.weight.mul_(module.mask)


def _whole_and_float(integer: bool, tile: int | None) -> None:
    """What a baseline cannot do that 3DM-WeConvene's interface offers: the integer path, tiles."""
    if integer:
        raise HarnessError("CompressAI baselines code with their own float entropy networks: no integer path")
    if tile is not None:
        raise HarnessError("CompressAI baselines code whole images only: no tiles")


class HarnessCodec:
    """Mixin over a CompressAI model class: the harness's model interface.

    ``forward`` pads to the stride and crops back (likelihoods ``y`` and ``z``);
    ``compress``/``decompress`` use CompressAI's own methods, whose strings become the
    container's streams, and add the latent check (CRC-32 of the symbols coded)."""

    config: BaselineConfig
    _symbols: _SymbolRecorder
    integer_path = False  # CompressAI's own float networks predict the entropy parameters
    fp32_channels_last = False  # fp32 in CompressAI's own layout: the same streams and pixels as CompressAI's

    @property
    def stride(self) -> int:
        return self.config.stride

    @property
    def stream_count(self) -> int:
        if self.config.architecture == "bmshj2018-factorized":
            return 1
        if self.config.architecture == "elic2022":
            return 2 * len(self.groups) + 1  # anchor and non-anchor half of each group, then z
        return 2

    def min_stream_bytes(self, size: tuple[int, int]) -> tuple[int, ...]:
        """Bytes below which a stream cannot be: compressai's rANS flush writes 64 bits of state
        (its decoder reads them first, whatever the stream's length)."""
        return (8,) * self.stream_count

    def load_state_dict(self, state_dict, strict: bool = True):
        result = super().load_state_dict(state_dict, strict=strict)
        _apply_masks(self)
        return result

    def pad(self, x: Tensor) -> Tensor:
        return pad_images(x, self.stride)

    def forward(self, x: Tensor) -> dict:
        height, width = x.shape[-2:] if x.dim() == 4 else (0, 0)
        out = super().forward(as_float(self.pad(x)))
        return {"x_hat": out["x_hat"][..., :height, :width], "likelihoods": out["likelihoods"]}

    @torch.no_grad()
    def compress(self, x: Tensor, reconstruct: bool = False, integer: bool = False, tile: int | None = None) -> dict:
        _whole_and_float(integer, tile)
        height, width = x.shape[-2:] if x.dim() == 4 else (0, 0)
        padded = as_float(self.pad(x))
        self._symbols.start("encode")
        try:
            out = super().compress(padded)
        finally:
            crc = self._symbols.stop()
        result = {"strings": out["strings"], "shape": self._latent_shape((height, width)),
                  "size": (int(height), int(width)), "latent_crc": [crc]}
        if reconstruct:
            result["x_hat"] = self.decompress(out["strings"], result["shape"], result["size"])["x_hat"]
        return result

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], shape: Any, size: tuple[int, int], integer: bool = False,
                   tile: int | None = None) -> dict:
        """``shape`` is ignored: the latent shapes follow from ``size`` and the architecture."""
        _whole_and_float(integer, tile)
        height, width = size
        if ARCHITECTURES[self.config.architecture].own_rans:
            zeros = bytes(4 * self._symbol_bound(size))
            strings = [[s + zeros for s in group] for group in strings]
        self._symbols.start("decode")
        try:
            out = super().decompress(strings, self._latent_shape(size))
        finally:
            crc = self._symbols.stop()
        return {"x_hat": out["x_hat"][..., :height, :width].clamp(0, 1), "latent_crc": [crc]}

    def _symbol_bound(self, size: tuple[int, int]) -> int:
        """More symbols than the image has in all its streams (y: at most 16 a z position and
        channel, 1/16 of the padded size per side; z: N a position, 1/64 per side), plus the
        rANS state's 2 words. The autoregressive architectures decode y with compressai's own
        ``RansDecoder``, which reads its stream through a pointer with no bounds check; given this
        many zero words after a stream, a stream that ends early (altered, its CRC recomputed) is
        read into zeros, since a symbol reads at most one word, not past its buffer. An escape's
        bypass run can read more (up to its 4-bit count's worth). Every other stream goes through
        the bounds-checked :class:`harness.model.rans.CheckedCoder`."""
        rows, cols = (math.ceil(s / self.stride) for s in size)
        widths = self.config.widths
        return (widths.get("M", widths["N"]) + widths["N"]) * 16 * rows * cols + 2

    def _latent_shape(self, size: tuple[int, int]) -> Any:
        """What CompressAI's ``decompress`` takes as ``shape`` for an image of ``size``."""
        rows, cols = (math.ceil(s / self.stride) for s in size)
        if self.config.architecture != "elic2022":
            return (rows, cols)  # y's size (factorized) or z's (the others): the padded size / stride
        y_rows, y_cols = rows * 4, cols * 4  # y is 1/16, z 1/64 of the padded image
        return {"y": [(group, y_rows, y_cols) for group in self.groups], "hyper": (rows, cols)}


_CLASSES = {name: type(f"Harness{arch.class_name}", (HarnessCodec, getattr(compressai.models, arch.class_name)), {})
            for name, arch in ARCHITECTURES.items()}


def build_baseline(config: BaselineConfig) -> torch.nn.Module:
    """A freshly initialised CompressAI model of ``config`` with the harness interface."""
    model = _CLASSES[config.architecture](**config.widths)
    model.config = config
    model._symbols = _SymbolRecorder()
    _hook_entropy_models(model, model._symbols)
    _apply_masks(model)
    return model


def shadow_model(config: BaselineConfig) -> torch.nn.Module:
    """The model of ``config`` with fake tensors (torch's meta device, through FakeTensorMode, since
    CompressAI's GDN builds a CPU buffer in its constructor): its module names and tensor shapes,
    without allocating its weights (16384 channels would take tens of GB). An architecture that
    fake tensors cannot build is built for real, its widths bounded to keep that cheap."""
    if not ARCHITECTURES[config.architecture].fakeable:
        return build_baseline(config)
    with FakeTensorMode(allow_non_fake_inputs=True):
        return build_baseline(config)
