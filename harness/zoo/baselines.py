"""CompressAI's learned codecs as harness variants: ``compressai:<zoo name>[?N=..,M=..]``.

The harness trains, codes and ranks them exactly as it does 3DM-WeConvene: the
network is CompressAI's own class (so its state dict is CompressAI's, key for
key, and a zoo file loads into it), wrapped by :class:`HarnessCodec` in the
interface the harness expects of a model (any image size, ``.3dmw`` streams,
a latent check, a config with a variant name).

Variant syntax: ``compressai:mbt2018-mean`` has the widths of CompressAI's zoo
model at quality 6 (ELIC, not in the zoo: ``Elic2022Official``'s defaults);
``compressai:mbt2018-mean?N=64,M=96`` sets them (cheng2020 models take only N:
their latent has N channels). Written checkpoints and cards spell a variant
canonically: no options at the default widths, else every width.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from compressai.entropy_models import EntropyModel
from compressai.layers import MaskedConv2d
from compressai.models import (
    Cheng2020Anchor,
    Cheng2020Attention,
    Elic2022Official,
    FactorizedPrior,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.zoo.image import cfgs as ZOO_WIDTHS
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode

from harness.errors import HarnessError
from harness.model.config import MAX_WIDTH
from harness.model.entropy import SymbolCRC
from harness.model.network import pad_images
from harness.model.rans import CheckedCoder

PREFIX = "compressai:"
ZOO_QUALITY = 6  # the zoo quality whose widths a variant without options has

@dataclass(frozen=True)
class Architecture:
    cls: type
    widths: tuple[tuple[str, int], ...]  # option name -> default width, in constructor order
    width_tensors: tuple[tuple[str, str], ...]  # option name -> state-dict tensor whose dim 0 is that width
    stride: int  # input sizes coded without padding: product of every down-sampling
    # Decodes y with a RansDecoder of its own (the autoregressive context models), past the
    # entropy models' coder that harness.model.rans.CheckedCoder replaces.
    own_rans: bool = False
    # Widths a checkpoint may declare, and whether shadow_model can build it with fake tensors:
    # a constructor that reads a tensor's values (ELIC's channel groups) needs real ones.
    max_width: int = MAX_WIDTH
    fakeable: bool = True


def _zoo(cls: type, name: str, keys: tuple[str, ...], tensors: tuple[str, ...], stride: int,
         own_rans: bool = False) -> Architecture:
    return Architecture(cls, tuple(zip(keys, ZOO_WIDTHS[name][ZOO_QUALITY])), tuple(zip(keys, tensors)), stride,
                        own_rans)


# ELIC is built for real to learn its shapes (see Architecture.fakeable): at 512 channels that
# takes 1.5 GB with torch imported (148 M parameters; 1024 would take 3.3 GB), 1.6x the zoo's M.
ELIC_MAX_WIDTH = 512


def _elic() -> Architecture:
    defaults = inspect.signature(Elic2022Official).parameters
    return Architecture(Elic2022Official, (("N", defaults["N"].default), ("M", defaults["M"].default)),
                        (("N", "g_a.0.weight"), ("M", "g_a.13.weight")), 64,
                        max_width=ELIC_MAX_WIDTH, fakeable=False)


_NM, _CHENG = ("g_a.0.weight", "g_a.6.weight"), ("g_a.0.conv1.weight",)
ARCHITECTURES: dict[str, Architecture] = {
    "bmshj2018-factorized": _zoo(FactorizedPrior, "bmshj2018-factorized", ("N", "M"), _NM, 16),
    "bmshj2018-hyperprior": _zoo(ScaleHyperprior, "bmshj2018-hyperprior", ("N", "M"), _NM, 64),
    "mbt2018-mean": _zoo(MeanScaleHyperprior, "mbt2018-mean", ("N", "M"), _NM, 64),
    "mbt2018": _zoo(JointAutoregressiveHierarchicalPriors, "mbt2018", ("N", "M"), _NM, 64, own_rans=True),
    "cheng2020-anchor": _zoo(Cheng2020Anchor, "cheng2020-anchor", ("N",), _CHENG, 64, own_rans=True),
    "cheng2020-attn": _zoo(Cheng2020Attention, "cheng2020-attn", ("N",), _CHENG, 64, own_rans=True),
    "elic2022": _elic(),
}
ELIC_FIXED_GROUPS = 128  # Elic2022Official's first four channel groups (16+16+32+64); M-128 form the fifth


def is_baseline(variant: str) -> bool:
    return isinstance(variant, str) and variant.startswith(PREFIX)


@dataclass(frozen=True)
class BaselineConfig:
    """A CompressAI architecture and its widths (``M`` is None for cheng2020: M = N)."""

    architecture: str
    N: int
    M: int | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise HarnessError(f"unknown CompressAI architecture {self.architecture!r}: choose one of "
                               f"{', '.join(ARCHITECTURES)}")
        names = [name for name, _ in ARCHITECTURES[self.architecture].widths]
        if (self.M is not None) != ("M" in names):
            raise HarnessError(f"{PREFIX}{self.architecture} takes the widths {', '.join(names)}")
        for name, width in self.widths.items():
            limit = ARCHITECTURES[self.architecture].max_width
            if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= limit:
                raise HarnessError(f"{PREFIX}{self.architecture}: {name}={width!r} is not a whole number in "
                                   f"1..{limit}")
        if self.architecture == "elic2022" and self.M <= ELIC_FIXED_GROUPS:
            raise HarnessError(f"{PREFIX}elic2022 needs M > {ELIC_FIXED_GROUPS} (its channel groups are "
                               f"16, 16, 32, 64 and M - 128), got M={self.M}")

    @property
    def widths(self) -> dict[str, int]:
        return {k: v for k, v in (("N", self.N), ("M", self.M)) if v is not None}

    @property
    def variant(self) -> str:
        """Canonical name: no options at the default widths, else every width."""
        arch = ARCHITECTURES[self.architecture]
        if self.widths == dict(arch.widths):
            return PREFIX + self.architecture
        return f"{PREFIX}{self.architecture}?" + ",".join(f"{k}={v}" for k, v in self.widths.items())

    @property
    def stride(self) -> int:
        return ARCHITECTURES[self.architecture].stride

    @property
    def subbands(self) -> tuple[str, ...]:
        """No subbands: stage 2 of a sweep is a plain fine-tune (eq. 1), and rates are y and z only."""
        return ()

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaselineConfig":
        values = {k: v for k, v in data.items() if k != "variant"}
        try:
            config = cls(**values)
        except TypeError as error:
            raise HarnessError(f"invalid CompressAI model config ({error})") from None
        if data.get("variant") != config.variant:
            raise HarnessError(f"model config names variant {data.get('variant')!r} but its widths make {config.variant!r}")
        return config


def parse_variant(variant: str) -> BaselineConfig:
    """``compressai:<name>[?N=..,M=..]`` -> its config; every mistake is a one-line HarnessError."""
    if not is_baseline(variant):
        raise HarnessError(f"{variant!r} is not a CompressAI variant (compressai:<name>[?N=..,M=..])")
    name, _, options = variant[len(PREFIX):].partition("?")
    if name not in ARCHITECTURES:
        raise HarnessError(f"unknown CompressAI architecture {name!r} in {variant!r}: choose one of "
                           f"{', '.join(ARCHITECTURES)}")
    widths = dict(ARCHITECTURES[name].widths)
    given: set[str] = set()
    for option in filter(None, options.split(",")) if options else ():
        key, sep, value = option.partition("=")
        key = key.strip()
        if not sep or key not in widths or key in given:
            reason = "repeated" if key in given else "not KEY=VALUE" if not sep else "unknown"
            raise HarnessError(f"option {option!r} of {variant!r} is {reason}: {PREFIX}{name} takes "
                               f"{', '.join(f'{k}=INT' for k in widths)}")
        try:
            widths[key] = int(value)
        except ValueError:
            raise HarnessError(f"option {option!r} of {variant!r}: {key} must be a whole number") from None
        given.add(key)
    if options == "" and variant.endswith("?"):
        raise HarnessError(f"{variant!r} has an empty option list: drop the '?' or give {', '.join(widths)}")
    return BaselineConfig(name, widths["N"], widths.get("M"))


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
        out = super().forward(self.pad(x))
        return {"x_hat": out["x_hat"][..., :height, :width], "likelihoods": out["likelihoods"]}

    @torch.no_grad()
    def compress(self, x: Tensor, reconstruct: bool = False, integer: bool = False, tile: int | None = None) -> dict:
        _whole_and_float(integer, tile)
        height, width = x.shape[-2:] if x.dim() == 4 else (0, 0)
        padded = self.pad(x)
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


_CLASSES = {name: type(f"Harness{arch.cls.__name__}", (HarnessCodec, arch.cls), {})
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
