"""The integer entropy path: what decides what the decoder reads, bit-identical on every machine.

rANS decodes a symbol with the CDF its scale index names, so the networks that
predict the scales and means (both h_s branches and every e_Slice: AttentionNet,
ParamNet, LRP) must give the encoder and the decoder the same numbers, to the
last bit, whatever the CPU, thread count, oneDNN/BLAS kernel or device. Float
convolutions do not: their sums are rounded in an order each kernel chooses, a
predicted scale moves across a table threshold and the rest of the stream
decodes as garbage (CompressAI issues 279, 309, 340).

After Ballé, Johnston and Minnen, "Integer networks for data compression"
(ICLR 2019), the trained float networks are converted (no fine-tune) into a
network whose every sum is an exact integer sum:

* **Convolutions** (:class:`IntegerConv2d`): weights are integers per output
  channel, ``w = round(w_float * 2^6 / max_c)`` (:func:`quantize_weights`), so
  ``|w| <= 2^6``; inputs are integers per image, ``a = round(x * 2^e)`` with
  ``|a| <= 2^12`` (a power-of-two exponent chosen from the image's largest
  magnitude, which is exact). Every product is at most 2^18 and a whole sum below
  2^34, so any summation order gives the same integer: :func:`integer_matmul`
  computes it from the activations' two 6-bit limbs times the weights (one int8)
  through torch's int8 GEMM with int32 sums (AMX/VNNI where the CPU has them), or
  in float64, which holds integers below 2^53 exactly on every CPU and GPU. On a
  CPU without VNNI torch's int8 GEMM is a plain loop, so there the limbs go through
  oneDNN's int8 GEMM by its quantised linear op (on x86), else through float32
  GEMMs, 4096 terms at a time: a limb times a weight is at most 2^12, so every
  block's sums are integers of at most 2^24, which both return exactly in float32
  (:func:`~harness.model.exact_cpu.limb_product`). All give the integer itself,
  so identical bits. Limbs and weights are at most 64 in
  magnitude because oneDNN's kernels for CPUs without VNNI add pairs of u8 x s8
  products into a saturating int16 (``vpmaddubsw``) after shifting one operand by
  128: 7-bit operands saturate there (measured with ``ONEDNN_MAX_CPU_ISA=AVX2``, and
  on an AVX2-only CPU), 6-bit ones stay below 2^15. Weights of one int8 (7 bits with
  the sign) rather than two limbs halve the GEMMs (path ``integer-1`` had 12-bit
  weights); on the trained tiny over the 24 Kodak images the files stay as long as
  the float networks' (benchmarks/RESULTS.md).
* **Element-wise steps** run in float64 with +, -, x, / and sqrt only, each
  correctly rounded by IEEE 754 on every device, and never fused (no FMA): bias
  adds, the rescale of the integer sums, ReLU/LeakyReLU, residual adds, GDN's
  normalisation, the LRP update and the wavelet lifting inside 3DM-WeConv (run on
  torch's portable path, see :func:`harness.wavelets.portable`).
* **Non-linearities** (GELU, sigmoid, tanh: libm's and SLEEF's differ in the last
  bits between CPUs) are tables on a 2^-8 grid with linear interpolation
  (:class:`Table`), built from exp and erf evaluated with + - x / only
  (:func:`_exp`, :func:`_erf`), so the tables are the same bits everywhere.
* **Scale indexes** compare the float64 scale with thresholds computed in
  decimal arithmetic (:func:`scale_thresholds`).

Plain float64 would not do: it still rounds each partial sum, in an order that
depends on the kernel. Training stays float; this path is built from the
weights whenever the entropy tables are updated (export) and is deterministic in
them, so an encoder and a decoder that load the same checkpoint have the same
network: the checkpoint carries it (:func:`pack`, :func:`load_converted`), or a
load builds it from the weights. :data:`PATH_ID` names this recipe in
checkpoints, cards and the container version.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator
from decimal import Decimal, localcontext

import numpy as np
import torch
import torch.nn.functional as F
from compressai.layers import GDN, AttentionBlock, ResidualBlock
from torch import Tensor, nn

from harness.errors import HarnessError
from harness.model import exact_cpu

PATH_ID = "integer-2"  # activations 12-bit, weights 7-bit integers, tables on a 2^-8 grid
ACTIVATION_BITS = 12  # |a| <= 2^12: a signed high limb in [-64, 64] and a low one in [0, 63]
WEIGHT_BITS = 6  # |w| <= 2^6: one int8, within the limbs' range
GDN_WEIGHT_BITS = 12  # GDN sums in float64 (squares need 24 bits): no limbs, full precision
# Larger outputs of a widening 1x1 convolution are made where they are read, a chunk at a time,
# once for their maximum, then once per reader: as fast from 1 MP on (less memory traffic), 5-8 %
# slower on Kodak's images, whose widest (18 MB) stays formed (benchmarks/RESULTS.md, memory.py).
DEFER_BYTES = 32 << 20
_LIMB = 6
_CPU_PARTS = (exact_cpu.Pointwise, exact_cpu.Rounded)  # inputs only the CPU kernels read
_TABLE_STEP_BITS = 8
_TABLE_RANGE = 16.0


# ---------------------------------------------------------------------------- exact sums


def _sums_on_limbs(device: torch.device) -> bool:
    """Whether exact sums on ``device`` go through int8 limbs and the CPU kernels (on the CPU:
    :func:`exact_cpu.limb_product` decides which GEMM multiplies them); elsewhere they are
    float64 GEMMs, exact too."""
    return device.type == "cpu"


def _limbs(values: Tensor) -> tuple[Tensor, Tensor]:
    """Integers |v| <= 2^12 (in a float tensor) as (high, low) int8 limbs: v = high * 2^6 + low, low in [0, 63]."""
    ints = values.to(torch.int16)
    return (ints >> _LIMB).to(torch.int8), (ints & (2**_LIMB - 1)).to(torch.int8)


def _pad_to(t: Tensor, dim: int, multiple: int) -> Tensor:
    extra = -t.shape[dim] % multiple
    if not extra:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [0, extra]
    return F.pad(t, pad)


class IntegerMatrix(nn.Module):
    """An integer weight matrix (K x N, |w| <= 2^6) as one int8, padded to multiples of 8 for the
    int8 GEMM; the float64 product reads the same integers from it (a float64 copy of every
    matrix would be 8 bytes a weight held for the rare small or GPU product).

    Made unfilled, for :meth:`fill` or :func:`load_converted`; either checks that its integers
    lie within +-2^6, which the exactness of every sum rests on."""

    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        if k > 2**16:
            raise HarnessError(f"integer entropy path: {k} terms per sum exceed 2^16")
        self.k, self.n = k, n
        self.register_buffer("limbs", torch.empty(k + -k % 8, n + -n % 8, dtype=torch.int8))
        self._kept: tuple[Tensor, Tensor | tuple[Tensor, ...]] | None = None  # (limbs, their operand)

    @classmethod
    def of(cls, values: Tensor) -> IntegerMatrix:
        """The matrix of ``values``, integers in a float tensor."""
        matrix = cls(*values.shape)
        matrix.fill(values)
        return matrix

    def fill(self, values: Tensor) -> None:
        _check_weights(values)
        self.limbs = _pad_to(_pad_to(values, 0, 8), 1, 8).to(torch.int8).contiguous()

    @property
    def values(self) -> Tensor:
        """The K x N integers in float64 (exact: |w| <= 2^6)."""
        return self.limbs[: self.k, : self.n].double()

    def operand(self) -> Tensor | tuple[Tensor, ...]:
        """The weights as the CPU's GEMM multiplies them (:func:`exact_cpu.gemm_weight`): those
        :meth:`keep_operand` made, while ``limbs`` is still the tensor they were made from (a
        fill or a load puts a new one), else made now."""
        if self._kept is not None and self._kept[0] is self.limbs:
            return self._kept[1]
        return exact_cpu.gemm_weight(self.limbs)

    def keep_operand(self) -> None:
        """Prepare :meth:`operand` now and keep it, where that is packing
        (:func:`exact_cpu.packs_weights`), for a process that codes many images with these weights."""
        if exact_cpu.packs_weights():
            self._kept = (self.limbs, exact_cpu.gemm_weight(self.limbs))


def _check_weights(values: Tensor) -> None:
    # without abs()'s copy: this runs for every weight of a build. Two passes: torch.aminmax of
    # these transposed views took ten times as long (0.2 s of a default model's build)
    low, high = values.amin(), values.amax()
    if max(-low.item(), high.item()) > 2**WEIGHT_BITS:
        raise HarnessError(f"integer entropy path: weights beyond +-2^{WEIGHT_BITS}")


def integer_matmul(a: Tensor, w: IntegerMatrix) -> Tensor:
    """Exact ``a @ w`` for integers |a| <= 2^12 (in a float tensor), as float64.

    With K <= 2^16 terms every partial sum of every order is an integer below 2^34,
    so the float64 product is exact; on the CPU the same integer comes from the two
    limb products accumulated in int32 (each below 2^28)."""
    if not _sums_on_limbs(a.device) or a.shape[0] <= 16:
        return a.double() @ w.values
    m, n = a.shape[0], w.n
    a_hi, a_lo = _limbs(_pad_to(a, 1, 8))
    stacked = exact_cpu.limb_product(torch.cat([a_hi, a_lo]), w.operand()).to(torch.int64)
    return ((stacked[:m, :n] << _LIMB) + stacked[m:, :n]).to(torch.float64)


def power_scales(magnitudes: Tensor, bits: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per entry, 2^e and 2^-e (float64) such that magnitude * 2^e <= 2^bits (e = 0 for zeros).

    numpy's frexp and ldexp are exact (torch's pow may go through exp2), and one vectorised
    call each instead of a tensor per convolution built from a Python list."""
    values = magnitudes.detach().double().cpu().numpy()
    _, exp = np.frexp(values)
    e = np.where(values > 0, bits - exp, 0)
    return torch.from_numpy(np.ldexp(1.0, e)).to(device), torch.from_numpy(np.ldexp(1.0, -e)).to(device)


def _row_max(t: Tensor) -> Tensor:
    """The largest magnitude of each index of dim 0 (an image of a batch, an output channel):
    max(-min, max), exact, without an abs() copy (torch.aminmax is 4-10x slower on a weight's rows)."""
    rows = t.reshape(t.shape[0], -1)
    return torch.maximum(-rows.amin(dim=1), rows.amax(dim=1))


def _round_rows(t: Tensor, factors: Tensor) -> Tensor:
    """round(t[i] * factors[i]) for each index i of dim 0."""
    return torch.round(t * factors.reshape(-1, *([1] * (t.dim() - 1))))


def quantize_rows(t: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Integers round(t[i] * 2^e_i) with |.| <= 2^bits, one power-of-two exponent per index i
    of dim 0 (an image of a batch); returns them and 2^-e_i."""
    up, down = power_scales(_row_max(t), bits, t.device)
    return _round_rows(t, up), down


def quantize_weights(weight: Tensor, bits: int = WEIGHT_BITS) -> tuple[Tensor, Tensor]:
    """Integer weights per output channel, the largest at +-2^bits; returns (w, step_c), w * step_c ~ weight.

    A channel's step is its largest magnitude / 2^bits (exact: a power-of-two division), so all
    2^(bits+1) + 1 levels are used; w = round(weight * (2^bits / largest)), one correctly rounded
    division and product each, on the CPU: the same integers on every machine. The step then
    scales an exact integer sum once, a single correctly rounded product like any other.

    Rounded in place in one float64 copy: this runs for every weight at every model load, and
    three more copies of each, freed at once but kept by glibc, made the default model's load
    peak at up to 1.74 GB against 1.48 (six loads each)."""
    weight = weight.detach().to(device="cpu", dtype=torch.float64, copy=True)
    largest = _row_max(weight)
    up = torch.where(largest > 0, 2.0**bits / largest, torch.zeros_like(largest))  # an all-zero channel stays 0
    return weight.mul_(up.reshape(-1, *([1] * (weight.dim() - 1)))).round_(), largest / 2.0**bits


# ---------------------------------------------------------------------------- layers


class IntegerConv2d(nn.Module):
    """A trained ``nn.Conv2d`` as an exact integer convolution (zero padding, no groups or dilation);
    unless ``fill``, of its shapes only, for :func:`load_converted`."""

    def __init__(self, conv: nn.Conv2d, fill: bool = True) -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise HarnessError(f"integer entropy path: unsupported convolution {conv}")
        self.kernel, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.out_channels = conv.out_channels
        # rows (ky, kx, channel): the im2col rows are then runs of channels-last pixels
        self.weight = IntegerMatrix(conv.in_channels * math.prod(self.kernel), self.out_channels)
        scale, bias = torch.empty(self.out_channels, dtype=torch.float64), torch.zeros(self.out_channels)
        if fill:
            weight, scale = quantize_weights(conv.weight)
            self.weight.fill(weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).t())
            bias = conv.bias.detach() if conv.bias is not None else bias
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias.double().cpu())
        self.activation: Table | nn.ReLU | None = None  # applied as the outputs are written: fuse()

    def fuse(self, activation: Table | nn.ReLU) -> None:
        """Apply ``activation`` to the outputs as they are written (on the CPU, in the pass that
        rescales the sums) instead of in a pass of its own over them: the same values."""
        if self.activation is not None:
            raise HarnessError("integer entropy path: a convolution takes one activation")
        self.activation = activation

    def forward(self, x: Tensor | list[Tensor]) -> Tensor:
        """The convolution of ``x``, or of the channel concatenation of a list of parts (one batch
        and size), which the CPU kernels read part by part instead of forming it."""
        parts = list(x) if isinstance(x, (list, tuple)) else [x]
        tensors = [part for part in parts if not isinstance(part, _CPU_PARTS)]  # those made only where they're read
        if all(exact_cpu.usable(part) and _sums_on_limbs(part.device) for part in tensors):
            return exact_cpu.convolve([part if isinstance(part, _CPU_PARTS) else exact_cpu.dense(part)
                                       for part in parts], ACTIVATION_BITS, self.kernel, self.stride, self.padding,
                                      self.weight.limbs, self.weight.operand(), self.scale, self.bias,
                                      self._epilogue())
        parts = [part.tensor() if isinstance(part, exact_cpu.Pointwise) else part for part in parts]
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        n, _, height, width = x.shape
        ints, down = quantize_rows(x, ACTIVATION_BITS)
        ints = ints.float()  # |ints| <= 2^12: exact, and half the bytes to rearrange
        (ph, pw), (sh, sw), (kh, kw) = self.padding, self.stride, self.kernel
        grid = F.pad(ints, (pw, pw, ph, ph)).permute(0, 2, 3, 1)
        out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
        taps = [grid[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
                for i in range(kh) for j in range(kw)]
        rows = torch.cat(taps, dim=-1).reshape(n * out_h * out_w, -1)
        sums = integer_matmul(rows, self.weight).reshape(n, out_h, out_w, self.out_channels).permute(0, 3, 1, 2)
        scale = down.reshape(n, 1, 1, 1) * self.scale.reshape(1, -1, 1, 1)  # a power of two times the step: exact
        out = sums * scale + self.bias.reshape(1, -1, 1, 1)
        return out if self.activation is None else self.activation(out)

    def _epilogue(self) -> exact_cpu.Epilogue:
        if self.activation is None:
            return exact_cpu.PLAIN
        if isinstance(self.activation, nn.ReLU):
            return exact_cpu.RECTIFIED
        return self.activation.epilogue


def widen(conv: nn.Module, x: Tensor) -> Tensor | exact_cpu.Pointwise:
    """``conv(x)``; for a 1x1 integer convolution on the CPU whose output would exceed
    :data:`DEFER_BYTES`, that output deferred to the integer convolutions that read it
    (:class:`~harness.model.exact_cpu.Pointwise`: the same values, made a chunk at a time)."""
    if (isinstance(conv, IntegerConv2d) and conv.kernel == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.activation is None and exact_cpu.usable(x)
            and _sums_on_limbs(x.device)
            and 8 * conv.out_channels * x[:, 0].numel() > DEFER_BYTES):
        return exact_cpu.Pointwise(exact_cpu.dense(x), ACTIVATION_BITS, conv.weight.limbs, conv.scale, conv.bias,
                                   conv.weight.operand())
    return conv(x)


def hold(x: Tensor) -> Tensor | exact_cpu.Rounded:
    """``x``, kept for integer convolutions to read later (the entropy model's context): on the
    CPU in 2 bytes an element, the integers they read unchanged (:class:`~harness.model.exact_cpu.Rounded`)."""
    if exact_cpu.usable(x) and x.dtype == torch.float64 and _sums_on_limbs(x.device):
        return exact_cpu.Rounded(x, ACTIVATION_BITS)
    return x


def convolve_parts(conv: nn.Module, parts: list[Tensor | exact_cpu.Pointwise]) -> Tensor:
    """``conv`` of the channel concatenation of ``parts``: formed for a float convolution, read
    part by part by an integer one (on the integer path the concatenation of the latent's coded
    slices is the largest tensor of the entropy model)."""
    return conv(parts) if isinstance(conv, IntegerConv2d) else conv(torch.cat(parts, dim=1))


class IntegerGDN(nn.Module):
    """compressai's GDN / inverse GDN, y = x * sqrt(beta + gamma * x^2) (or its reciprocal), with an
    exact sum; unless ``fill``, of its shapes only, for :func:`load_converted`."""

    def __init__(self, gdn: GDN, fill: bool = True) -> None:
        super().__init__()
        self.inverse = gdn.inverse
        channels = gdn.beta.numel()
        weight, scale = torch.empty(channels, channels, dtype=torch.float64), torch.empty(channels, dtype=torch.float64)
        beta = torch.empty(channels, dtype=torch.float64)
        if fill:
            with torch.no_grad():
                beta = gdn.beta_reparam(gdn.beta).double().cpu()
                gamma = gdn.gamma_reparam(gdn.gamma).double()
            weight, scale = quantize_weights(gamma, GDN_WEIGHT_BITS)
            weight = weight.t().contiguous()
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("beta", beta)

    def check_weights(self) -> None:
        """Loaded weights must be integers within +-2^12: squares of 12-bit integers times these,
        summed over the channels, stay below 2^53, exact in float64."""
        weight = self.weight
        if not (torch.equal(weight, weight.round()) and weight.abs().max() <= 2**GDN_WEIGHT_BITS):
            raise HarnessError(f"integer entropy path: GDN weights not integers within +-2^{GDN_WEIGHT_BITS}")

    def forward(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        # x^2 of 12-bit integers needs 24 bits: float64 sums (below 2^(24+12+log2(c)) < 2^53)
        ints, down = quantize_rows(x, ACTIVATION_BITS)
        rows = (ints * ints).permute(0, 2, 3, 1).reshape(-1, c)
        sums = (rows @ self.weight).reshape(n, height, width, c).permute(0, 3, 1, 2)
        scale = (down * down).reshape(n, 1, 1, 1) * self.scale.reshape(1, -1, 1, 1)
        norm = torch.sqrt(sums * scale + self.beta.reshape(1, -1, 1, 1))
        return x * norm if self.inverse else x / norm


def _exp(x: np.ndarray) -> np.ndarray:
    """exp from + - x / and ldexp only (Cody-Waite reduction, degree-16 Taylor polynomial).

    Constants are literals or correctly rounded Python arithmetic (/, sqrt), never libm."""
    ln2_hi, ln2_lo = 0.693145751953125, 1.4286068203094173e-06  # ln2_hi has 17 significant bits: k*ln2_hi is exact
    k = np.rint(x * 1.4426950408889634)
    r = (x - k * ln2_hi) - k * ln2_lo
    p = np.ones_like(x)
    for n in range(16, 0, -1):
        p = 1.0 + p * r * (1.0 / n)
    return np.ldexp(p, k.astype(np.int64))


def _erf(x: np.ndarray) -> np.ndarray:
    """erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)): positive terms, no cancellation."""
    x2 = x * x
    term, total = x.copy(), x.copy()
    for n in range(1, 600):
        term = term * (2.0 * x2) / (2 * n + 1)
        total = total + term
    return np.clip(total * _exp(-x2) * (2.0 / math.sqrt(math.pi)), -1.0, 1.0)


def _gelu(x: np.ndarray) -> np.ndarray:
    return x * (0.5 + 0.5 * _erf(x * (1.0 / math.sqrt(2.0))))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + _exp(-x))


def _tanh(x: np.ndarray) -> np.ndarray:
    e = _exp(-2.0 * np.abs(x))
    return np.sign(x) * ((1.0 - e) / (1.0 + e))


# name -> (function on the grid, value below the range, slope above it: f(x) = slope * x + value)
_FUNCTIONS = {
    "gelu": (_gelu, 0.0, (1.0, 0.0)),
    "sigmoid": (_sigmoid, 0.0, (0.0, 1.0)),
    "tanh": (_tanh, -1.0, (0.0, 1.0)),
}


@functools.cache
def _table(name: str) -> np.ndarray:
    count = int(_TABLE_RANGE * 2**_TABLE_STEP_BITS)
    grid = np.arange(-count, count + 1, dtype=np.float64) * 2.0**-_TABLE_STEP_BITS
    return _FUNCTIONS[name][0](grid)


class Table(nn.Module):
    """f(x) for GELU / sigmoid / tanh: linear interpolation in a table on a 2^-8 grid over [-16, 16].

    Index and weight come from x exactly (x * 2^8 is exact, floor is exact), the blend
    is one multiply and two adds; beyond the grid f is its asymptote (GELU: 0 or x)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        # the same table for every path of this PATH_ID: not saved with one (persistent=False)
        self.register_buffer("values", torch.from_numpy(_table(name)), persistent=False)

    @functools.cached_property
    def epilogue(self) -> exact_cpu.Epilogue:
        """The table as the CPU kernels apply it (made once: every call of a table or of the
        convolution it is fused into reads it)."""
        _, below, (slope, above) = _FUNCTIONS[self.name]
        return exact_cpu.Epilogue.table(self.values, 2.0**_TABLE_STEP_BITS, below, slope, above)

    def forward(self, x: Tensor) -> Tensor:
        """f(x); on the CPU kernels' path x is overwritten, as by ``ReLU(inplace=True)``: every
        table of the integer networks reads a temporary, and a large latent's peak is one fewer of them."""
        if exact_cpu.usable(x) and x.dtype == torch.float64:
            return exact_cpu.lookup(exact_cpu.dense(x), self.epilogue)
        _, below, (slope, above) = _FUNCTIONS[self.name]
        count = (self.values.numel() - 1) // 2
        position = x * 2.0**_TABLE_STEP_BITS
        inside = position.abs() < count
        clamped = torch.where(inside, position, torch.zeros_like(position))
        index = torch.floor(clamped)
        frac = clamped - index
        i = index.long() + count
        low, high = self.values[i], self.values[i + 1]
        y = low + (high - low) * frac
        outside = torch.where(x > 0, x * slope + above, torch.full_like(x, below))
        return torch.where(inside, y, outside)


class IntegerAttentionBlock(nn.Module):
    """compressai's AttentionBlock (Cheng et al. 2020): x + a(x) * sigmoid(b(x)), sigmoid as a table."""

    def __init__(self, block: AttentionBlock, fill: bool = True) -> None:
        super().__init__()
        self.conv_a = convert(block.conv_a, fill)
        self.conv_b = convert(block.conv_b, fill)
        self.conv_b[-1].fuse(Table("sigmoid"))  # the gate, applied by conv_b's last (1x1) convolution

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_a(x)
        out.mul_(self.conv_b(x))  # in place: the same roundings, two fewer temporaries
        return out.add_(x)


# Modules whose forward is only sub-modules, adds, concatenations, slicing, 0.5 * x and
# the wavelet lifting: they stay as they are, with their children converted.
_COMPOSITES: tuple[type, ...] = (nn.Sequential, nn.ModuleList, ResidualBlock)
_EXACT_AS_IS: tuple[type, ...] = (nn.ReLU, nn.LeakyReLU, nn.PixelShuffle, nn.Identity)
_EXTRA_COMPOSITES: list[type] = []


def register_composite(cls: type) -> type:
    """Mark a module class whose own forward is exact in float64 (decorator)."""
    _EXTRA_COMPOSITES.append(cls)
    return cls


def _is_composite(module: nn.Module) -> bool:
    # compressai defines AttentionBlock's residual unit inside __init__, so it has no importable name
    local_unit = type(module).__qualname__ == "AttentionBlock.__init__.<locals>.ResidualUnit"
    return local_unit or isinstance(module, (*_COMPOSITES, *_EXTRA_COMPOSITES))


def convert(module: nn.Module, fill: bool = True) -> nn.Module:
    """The integer version of a trained float network (a new module, sharing only the stateless
    ones such as ReLU; ``module`` is not changed).
    Unless ``fill``, the same modules with their integer tensors unfilled, of their shapes, for
    :func:`load_converted` (only ``module``'s shapes are read: its values may be unset)."""
    if isinstance(module, nn.Conv2d):
        return IntegerConv2d(module, fill)
    if isinstance(module, GDN):
        return IntegerGDN(module, fill)
    if isinstance(module, AttentionBlock):
        return IntegerAttentionBlock(module, fill)
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return Table("gelu")
    if isinstance(module, nn.Sigmoid):
        return Table("sigmoid")
    if isinstance(module, nn.Tanh):
        return Table("tanh")
    if isinstance(module, _EXACT_AS_IS):
        return module  # stateless (no tensors, the same in every mode): shared, a deep copy of each took 0.05 s a load
    if not _is_composite(module):
        raise HarnessError(f"integer entropy path: no exact version of {type(module).__qualname__}")
    shell = copy.copy(module)
    shell._modules = {name: convert(child, fill) for name, child in module._modules.items()}
    shell._parameters, shell._buffers = {}, {}
    if list(module.parameters(recurse=False)):
        raise HarnessError(f"integer entropy path: {type(module).__qualname__} holds its own parameters")
    if isinstance(shell, nn.Sequential):
        _fuse_activations(shell)
    return shell


def pack(network: nn.Module) -> dict[str, Tensor]:
    """A conversion's tensors as one flat tensor per dtype (``"int8"``, ``"float64"``), each the
    concatenation of that dtype's tensors in the order of :func:`_saved`: what
    :func:`load_converted` reads. Two tensors, not one per buffer: a checkpoint's 1,632 small
    tensors took 0.3 s to read (torch.load's cost is per tensor), about what building them from
    the weights took (benchmarks/RESULTS.md, speed.py)."""
    parts: dict[str, list[Tensor]] = {}
    for _, _, tensor in _saved(network):
        parts.setdefault(_dtype_name(tensor.dtype), []).append(tensor.reshape(-1))
    return {name: torch.cat(group) for name, group in parts.items()}


def load_converted(network: nn.Module, packed: dict[str, Tensor]) -> None:
    """Fill an unfilled conversion (``convert(..., fill=False)``) with a :func:`pack` of one, without
    a copy: each tensor becomes a view of its dtype's flat tensor. The flat tensors must hold
    exactly the conversion's values, dtype for dtype, and the weights lie within the ranges the
    exactness of every sum rests on, as a conversion checks them. A one-line HarnessError names
    what differs."""
    slots = list(_saved(network))
    sizes: dict[str, int] = {}
    for _, _, tensor in slots:
        sizes[_dtype_name(tensor.dtype)] = sizes.get(_dtype_name(tensor.dtype), 0) + tensor.numel()
    for name, size in sizes.items():
        flat = packed.get(name)
        if not isinstance(flat, Tensor) or flat.dim() != 1 or _dtype_name(flat.dtype) != name or flat.numel() != size:
            held = f"{tuple(flat.shape)} {flat.dtype}" if isinstance(flat, Tensor) else type(flat).__name__
            raise HarnessError(f"integer entropy path: its {name} values are {held}, not ({size},) torch.{name}")
    if set(packed) != set(sizes):
        raise HarnessError(f"integer entropy path: values of another type ({', '.join(sorted(set(packed) - set(sizes)))})")
    _check_weights(packed["int8"])  # every int8 value is a limb of an IntegerMatrix: one pass, not one per matrix
    offsets = dict.fromkeys(sizes, 0)
    for module, name, tensor in slots:  # set directly: load_state_dict's walk took as long as the rest
        dtype = _dtype_name(tensor.dtype)
        module._buffers[name] = packed[dtype][offsets[dtype] : offsets[dtype] + tensor.numel()].view(tensor.shape)
        offsets[dtype] += tensor.numel()
    for module in dict.fromkeys(module for module, _, _ in slots if isinstance(module, IntegerGDN)):
        module.check_weights()


def _saved(network: nn.Module) -> Iterator[tuple[nn.Module, str, Tensor]]:
    """Each module of a conversion, the name and tensor of each of its saved buffers, in module
    order (a conversion has buffers only: its tables' are not saved, they are the same for all)."""
    for module in network.modules():
        for name, tensor in module._buffers.items():
            if tensor is not None and name not in module._non_persistent_buffers_set:
                yield module, name, tensor


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fuse_activations(sequence: nn.Sequential) -> None:
    """Each integer convolution of ``sequence`` followed by a ReLU or a table applies it as it writes
    its outputs (:meth:`IntegerConv2d.fuse`); the activation's place is left to an identity."""
    names = list(sequence._modules)
    for name, following in zip(names, names[1:]):
        conv, activation = sequence._modules[name], sequence._modules[following]
        if isinstance(conv, IntegerConv2d) and conv.activation is None and isinstance(activation, (Table, nn.ReLU)):
            conv.fuse(activation)
            sequence._modules[following] = nn.Identity()


# ---------------------------------------------------------------------------- scale indexes


@functools.cache
def _thresholds(table: tuple[float, ...]) -> tuple[float, ...]:
    with localcontext() as ctx:
        ctx.prec = 40
        values = [Decimal(v) for v in table]
        out = []
        for a, b in zip(values[:-1], values[1:]):
            cut = (2 * (b / a).ln() / (1 / (a * a) - 1 / (b * b))).sqrt()
            out.append(float(cut))
    return tuple(out)


def scale_thresholds(scale_table: Tensor) -> Tensor:
    """Where coding with table entry b beats entry a (equal KL cost), in float64, computed in decimal.

    Between entries a < b the expected cost of coding N(0, s) with either is equal at
    s* = sqrt(2 ln(b/a) / (1/a^2 - 1/b^2)); ``torch.log`` would give machine-dependent
    last bits, so s* is computed to 40 digits and rounded once."""
    return torch.tensor(_thresholds(tuple(scale_table.double().tolist())), dtype=torch.float64)
