"""The network configuration of 3DM-WeConvene and its ablations: the dataclass and its checks
(the variants by name are :mod:`harness.zoo.variants`).

Architecture facts come from Fu et al., "3DM-WeConvene" (§III, Figs. 2-6) and the
authors' public 2D WeConvene code (ECCV 2024) that it extends:

* core networks with ResGroups of residual blocks, N = 128 filters, M = 320 latent
  channels, 3DM-WeConv layers at the down/up-sampling layers (Fig. 2);
* 3DM-WeConv: channel DWT (1 level) + multi-level spatial DWT (2 levels),
  3x3 conv on the spatial low band, 1x1 on the high bands (Figs. 3-4);
* 3DWeChARM: one channel + one spatial DWT level on y, 8 subbands, 10 slices,
  LLL/HLL split in 2 x 80 channels, the six high subbands 160 channels each (Fig. 5);
* e_Slice: AttentionNet + ParamNet + LRP, "some 1x1 convolutions in the ParamNet
  and LRP modules" to save parameters (Fig. 6).

Widths the paper does not state (hyper channels, AttentionNet and ParamNet widths)
are chosen so the parameter counts land on Tables I-IV; see README "Model".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from harness.errors import HarnessError

WAVELETS = ("haar", "5/3", "9/7")
SUBBANDS_3D = ("LLL", "HLL", "LLH", "LHL", "LHH", "HLH", "HHL", "HHH")
SUBBANDS_2D = ("LL", "LH", "HL", "HH")
# Spatial low bands: weighted by w1 in the stage-2 loss (paper eq. 2).
LOW_FREQUENCY_SUBBANDS = frozenset({"LLL", "HLL", "LL"})
# Bounds on what a config (and so a checkpoint file) may declare, checked before any network is
# built: the paper's and CompressAI's zoo widths are at most 320, and a network's memory grows
# with the square of its widths (a 1.7 KB file declaring 16384 channels asked for tens of GB).
MAX_WIDTH = 1024
MAX_RES_BLOCKS = 16  # residual blocks per ResGroup (the paper: 3)
MAX_DWT_LEVELS = 4  # of the wavelet conv layers (the paper: 1 channel, 2 spatial)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that determines the network's structure (and so its checkpoint)."""

    variant: str
    N: int = 128  # filters of the core and hyper networks
    M: int = 320  # latent channels
    Z: int = 192  # hyper-latent channels
    res_blocks: int = 3  # residual blocks per ResGroup
    wavelet: str = "9/7"
    # Wavelet-domain conv layers: channel_levels=0 with spatial_levels=1 and
    # hf_kernel=3 is the ECCV 2024 WeConv layer.
    conv_channel_levels: int = 1
    conv_spatial_levels: int = 2
    conv_hf_kernel: int = 1
    # Entropy model: "3d" = 3DWeChARM, "2d" = ECCV WeChARM.
    entropy: Literal["3d", "2d"] = "3d"
    attention_channels: int = 192  # inner width of each AttentionNet
    param_hidden: tuple[int, int] = (320, 256)  # hidden widths of ParamNet and LRP
    param_kernels: tuple[int, int, int] = (1, 3, 1)
    lrp_kernels: tuple[int, int, int] = (1, 3, 1)

    def __post_init__(self) -> None:
        if self.wavelet not in WAVELETS:
            raise HarnessError(f"unknown wavelet {self.wavelet!r}: choose one of {', '.join(WAVELETS)}")
        if self.entropy not in ("3d", "2d"):
            raise HarnessError(f"unknown entropy model {self.entropy!r}: choose '3d' or '2d'")
        widths = {"N": self.N, "M": self.M, "Z": self.Z, "attention_channels": self.attention_channels,
                  "param_hidden": self.param_hidden}
        counts = {"res_blocks": (self.res_blocks, MAX_RES_BLOCKS),
                  "conv_channel_levels": (self.conv_channel_levels, MAX_DWT_LEVELS),
                  "conv_spatial_levels": (self.conv_spatial_levels, MAX_DWT_LEVELS)}
        for name, value in [*widths.items(), *((name, v) for name, (v, _) in counts.items())]:
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in _values(value)):
                raise HarnessError(f"variant {self.variant!r}: {name} must be whole, got {value!r}")
        for name, value in widths.items():
            if not all(1 <= v <= MAX_WIDTH for v in _values(value)):
                raise HarnessError(f"variant {self.variant!r}: {name}={value} is outside 1..{MAX_WIDTH}")
        for name, (value, bound) in counts.items():
            if value > bound:
                raise HarnessError(f"variant {self.variant!r}: {name}={value} is over {bound}")
        if self.res_blocks < 0:
            raise HarnessError(f"variant {self.variant!r}: res_blocks must not be negative")
        if self.conv_spatial_levels < 1 or self.conv_channel_levels < 0:
            raise HarnessError(f"variant {self.variant!r}: needs >= 1 spatial and >= 0 channel DWT levels")
        if self.N % (2**self.conv_channel_levels):
            raise HarnessError(f"variant {self.variant!r}: N={self.N} not divisible by 2^{self.conv_channel_levels}")
        if any(k not in (1, 3) for k in (*self.param_kernels, *self.lrp_kernels, self.conv_hf_kernel)):
            raise HarnessError(f"variant {self.variant!r}: kernel sizes must be 1 or 3")
        if self.entropy == "3d" and self.M % 4:
            raise HarnessError(f"variant {self.variant!r}: 3DWeChARM needs M divisible by 4, got {self.M}")
        if self.entropy == "2d" and self.M % 5:
            raise HarnessError(f"variant {self.variant!r}: WeChARM needs M divisible by 5, got {self.M}")

    @property
    def stride(self) -> int:
        """Image sizes the network handles without padding: g_a (8) x DWT of y (2) x h_a (4)."""
        return 64

    @property
    def subbands(self) -> tuple[str, ...]:
        return SUBBANDS_3D if self.entropy == "3d" else SUBBANDS_2D

    @property
    def slices(self) -> tuple[tuple[tuple[str, int, int], ...], ...]:
        """Coding order of the latent: each slice lists (subband, first, stop) channel ranges.

        3DWeChARM: LLL^0, LLL^1, HLL^0, HLL^1, then LLH, LHL, LHH, HLH, HHL, HHH whole.
        WeChARM: 5 slices of the LL band, then 5 slices taking M/5 channels of each of
        LH, HL and HH (the ECCV paper's 192-channel HF slices).
        """
        if self.entropy == "3d":
            band, half = self.M // 2, self.M // 4
            low = tuple(((name, i * half, (i + 1) * half),) for name in ("LLL", "HLL") for i in range(2))
            high = tuple(((name, 0, band),) for name in SUBBANDS_3D[2:])
            return low + high
        part = self.M // 5
        low = tuple((("LL", i * part, (i + 1) * part),) for i in range(5))
        high = tuple(tuple((name, i * part, (i + 1) * part) for name in ("LH", "HL", "HH")) for i in range(5))
        return low + high

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HarnessError(f"model config has unknown fields: {', '.join(sorted(unknown))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _values(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)
