"""The precision of a model's analysis and synthesis transforms (g_a, g_s, h_a): fp32 or bf16.

Only what the decoder reads has to be computed exactly, and the integer entropy
path (:mod:`harness.model.exact`) does that. The transforms may run in any
precision: g_a and h_a decide which symbols the encoder writes (the container's
latent check covers those), and g_s decides only the pixels. So a file encoded
in bf16 decodes in fp32 and the other way round; only g_s's rounding differs.

bf16 here means autocast to bfloat16 with channels_last weights and
activations. On CPUs with AMX, oneDNN's bf16 kernels then run the 3×3
convolutions about 6× faster than float32 (benchmarks/RESULTS.md, speed.py and
precision.py). The 3DM-WeConv layers' wavelet transforms run on the bf16
channels-last tensors in the compiled kernels of :mod:`harness.wavelets.cpu`
(float32 arithmetic, one rounding to bf16 per output) and hand their
convolutions channels-last bands. On CUDA the same code runs on tensor cores.
Autocast keeps the weights in float32, so the same wrapper serves coding and
mixed-precision training: the gradients and the optimiser's weights stay float32.

fp32 on the CPU runs channels-last too, in models that declare it
(``fp32_channels_last``: 3DM-WeConvene and its ablations): oneDNN's float32
kernels read and write that layout as it is, while each convolution of a
contiguous (NCHW) tensor is reordered into oneDNN's blocked layout and back, two
more passes and buffers as large as its input and output (g_a of kodim01 about
a fifth faster and 0.2 GB lower: benchmarks/RESULTS.md, speed.py). Its
convolutions sum in another order than the NCHW kernels, so the values differ
from theirs in the last bits, as any other kernel's would. CompressAI's
baselines keep CompressAI's layout, so that their fp32 streams and decodes are
CompressAI's own, bit for bit; fp32 on other devices runs in the default layout.

Each transform's output is cast back to contiguous float32. Everything after
it therefore runs in float32 as before: the wavelet analysis of the latent,
the hyperprior's synthesis, the slice networks, the likelihoods and the loss.

How the precision is applied: ``model.g_a`` (likewise ``g_s`` and any ``h_a``,
at any depth) is shadowed by an instance attribute that wraps the registered
module. Our ``compress``/``forward`` and CompressAI's own methods all call
``self.g_a(x)``, so they get the wrapper. The module tree is untouched:
``state_dict``, ``parameters``, checkpoints and fingerprints stay as they are.
``auto`` is resolved on the device the model's weights are on, so move the
model first.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from harness.precisions import AUTO, check_precision

TRANSFORMS = ("g_a", "g_s", "h_a")
# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) that still let it use AMX's bf16 tiles.
_AMX_ISAS = ("ALL", "DEFAULT", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16",
             "AVX10_2_512_AMX_2")


class ChannelsLast(nn.Module):
    """Runs ``module`` (its weights channels-last) on a channels-last copy of its input; returns
    its output contiguous, so that what reads a transform's output sees the layout it always did."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last)).contiguous()


class Mixed(ChannelsLast):
    """Runs ``module`` under bf16 autocast on channels_last bf16 input; returns contiguous float32.

    The transforms wrapped here (ours and CompressAI's g_a, g_s, h_a) start with convolutions,
    which autocast would give a bf16 copy of the input each (g_a's and h_a's first layer has two
    readers, a 3x3 and a 1x1 skip): casting once here gives them the same values, without a
    float32 channels_last copy beside them (at 6 MP, h_a's input is 126 MB in float32)."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.module(x.to(dtype=torch.bfloat16, memory_format=torch.channels_last))
        return out.float().contiguous()


def input_format(module: nn.Module, dtype: torch.dtype) -> tuple[torch.dtype, torch.memory_format]:
    """The dtype and layout ``module``, a transform run as :func:`set_precision` set it, takes a
    ``dtype`` input in: a caller that assembles the input there (h_a's, from the latent's subbands)
    spares the copy :class:`Mixed` would make, and so holds it once, not twice."""
    if isinstance(module, Mixed):
        return torch.bfloat16, torch.channels_last
    if isinstance(module, ChannelsLast):
        return dtype, torch.channels_last
    return dtype, torch.contiguous_format


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bf16 convolutions faster than float32: an NVIDIA GPU with bf16
    tensor cores (compute capability 8.0+; assumed when no GPU is visible here, i.e. a run planned
    on a CPU head for GPU workers), or a CPU whose AMX tiles oneDNN may use."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return True  # planned here for GPU workers elsewhere: bf16 tensor cores since Ampere (2020)
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":
        return False
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private: absent in some builds
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper()
    return bool(amx and amx()) and isa in _AMX_ISAS


def resolve(precision: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` or ``bf16``; ``auto`` picks bf16 where it runs fast (:func:`bf16_is_fast`)."""
    check_precision(precision)
    if precision == AUTO:
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def set_precision(model: nn.Module, precision: str) -> str:
    """Run ``model``'s transforms in ``precision`` (``auto`` resolved on the model's device) from now
    on, for coding and training alike; returns the precision applied."""
    device = next(model.parameters()).device
    precision = resolve(precision, device)
    bf16 = precision == "bf16"
    # oneDNN's layout in both precisions on the CPU, where the model declares it (module docstring)
    last = bf16 or (device.type == "cpu" and getattr(model, "fp32_channels_last", False))
    for owner in list(model.modules()):
        for name in TRANSFORMS:
            owner.__dict__.pop(name, None)
            module = owner._modules.get(name)
            if module is None:
                continue
            module.to(memory_format=torch.channels_last if last else torch.contiguous_format)
            if last:
                owner.__dict__[name] = Mixed(module) if bf16 else ChannelsLast(module)
    model.precision = precision
    return precision


def precision_of(model: nn.Module) -> str:
    """The precision :func:`set_precision` applied to ``model`` (fp32 when never called)."""
    return getattr(model, "precision", "fp32")
