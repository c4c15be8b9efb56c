"""Every model variant by name, without building one: 3DM-WeConvene's and its ablations'
(:mod:`harness.zoo.variants`) and CompressAI's architectures as ``compressai:<zoo name>[?N=..,M=..]``.

Variant syntax: ``compressai:mbt2018-mean`` has the widths of CompressAI's zoo model at quality 6
(ELIC, not in the zoo: ``Elic2022Official``'s defaults); ``compressai:mbt2018-mean?N=64,M=96``
sets them (cheng2020 models take only N: their latent has N channels). Written checkpoints and
cards spell a variant canonically: no options at the default widths, else every width.

Names, widths and strides only, without torch or CompressAI, so that the commands' options and
a plan's checks stay fast: :mod:`harness.zoo.baselines` builds CompressAI's networks and
:mod:`harness.zoo.factory` any variant's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import HarnessError
from harness.model.config import MAX_WIDTH, ModelConfig
from harness.zoo.variants import VARIANTS, get_config

PREFIX = "compressai:"
ZOO_QUALITY = 6  # the zoo quality whose widths a variant without options has

# CompressAI 1.2.8's zoo widths per quality, (N, M) or cheng2020's (N,): compressai.zoo.image.cfgs
# (tests/test_model_baselines.py checks them against the installed CompressAI).
ZOO_WIDTHS: dict[str, dict[int, tuple[int, ...]]] = {
    "bmshj2018-factorized": {q: (128, 192) if q < 6 else (192, 320) for q in range(1, 9)},
    "bmshj2018-hyperprior": {q: (128, 192) if q < 6 else (192, 320) for q in range(1, 9)},
    "mbt2018-mean": {q: (128, 192) if q < 5 else (192, 320) for q in range(1, 9)},
    "mbt2018": {q: (192, 192) if q < 5 else (192, 320) for q in range(1, 9)},
    "cheng2020-anchor": {q: (128,) if q < 4 else (192,) for q in range(1, 7)},
    "cheng2020-attn": {q: (128,) if q < 4 else (192,) for q in range(1, 7)},
}


@dataclass(frozen=True)
class Architecture:
    class_name: str  # CompressAI's class of the network, in compressai.models
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


def _zoo(class_name: str, name: str, keys: tuple[str, ...], tensors: tuple[str, ...], stride: int,
         own_rans: bool = False) -> Architecture:
    return Architecture(class_name, tuple(zip(keys, ZOO_WIDTHS[name][ZOO_QUALITY])), tuple(zip(keys, tensors)), stride,
                        own_rans)


# ELIC is built for real to learn its shapes (see Architecture.fakeable): at 512 channels that
# takes 1.5 GB with torch imported (148 M parameters; 1024 would take 3.3 GB), 1.6x the zoo's M.
ELIC_MAX_WIDTH = 512
_NM, _CHENG = ("g_a.0.weight", "g_a.6.weight"), ("g_a.0.conv1.weight",)
ARCHITECTURES: dict[str, Architecture] = {
    "bmshj2018-factorized": _zoo("FactorizedPrior", "bmshj2018-factorized", ("N", "M"), _NM, 16),
    "bmshj2018-hyperprior": _zoo("ScaleHyperprior", "bmshj2018-hyperprior", ("N", "M"), _NM, 64),
    "mbt2018-mean": _zoo("MeanScaleHyperprior", "mbt2018-mean", ("N", "M"), _NM, 64),
    "mbt2018": _zoo("JointAutoregressiveHierarchicalPriors", "mbt2018", ("N", "M"), _NM, 64, own_rans=True),
    "cheng2020-anchor": _zoo("Cheng2020Anchor", "cheng2020-anchor", ("N",), _CHENG, 64, own_rans=True),
    "cheng2020-attn": _zoo("Cheng2020Attention", "cheng2020-attn", ("N",), _CHENG, 64, own_rans=True),
    # Elic2022Official's constructor defaults (N=192, M=320)
    "elic2022": Architecture("Elic2022Official", (("N", 192), ("M", 320)), (("N", "g_a.0.weight"), ("M", "g_a.13.weight")),
                             64, max_width=ELIC_MAX_WIDTH, fakeable=False),
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


def model_config(variant: str) -> BaselineConfig | ModelConfig:
    """The config of any variant: a :class:`BaselineConfig` or a 3DM-WeConvene ``ModelConfig``."""
    if is_baseline(variant):
        return parse_variant(variant)
    try:
        return get_config(variant)
    except HarnessError as error:
        raise HarnessError(f"{error}, or a CompressAI baseline {PREFIX}NAME[?N=INT,M=INT] ({', '.join(ARCHITECTURES)})") from None


def codec_id(variant: str) -> str:
    """The leaderboard's codec id of a model variant: the variant itself for 3DM-WeConvene
    and its ablations, ``compressai-<name>`` for a baseline (codec ids hold no ``:``, the
    ``codec:config`` separator, and one curve spans the widths the zoo uses per quality)."""
    return f"compressai-{parse_variant(variant).architecture}" if is_baseline(variant) else variant


def serves_codec(codec: str) -> bool:
    """Whether ``codec`` is the codec id of a variant (the id of a learned curve)."""
    return codec in VARIANTS or (codec.startswith("compressai-") and codec[len("compressai-"):] in ARCHITECTURES)
