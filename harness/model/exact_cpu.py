"""The CPU kernels of :class:`harness.model.exact.IntegerConv2d`: numba passes around the int8 GEMM.

With torch ops, one integer convolution is about twenty passes over memory around its
GEMM (the per-image rescale and rounding, im2col, padding, two limb conversions, the
concatenation of the limbs, then a shift, an add and two conversions back, the
rescale and the bias), and on the latent's small tensors those passes, not the GEMM, are
most of the entropy path's time. Here one pass takes the float activations, in any layout,
to the int8 limbs of a zero-bordered channels-last grid (a 1x1 convolution's grid is its
im2col matrix; otherwise one more pass copies each kernel row's taps, adjacent in the grid, as
one run into the im2col rows), and one pass takes the limb sums to the float64 output,
rescaled and biased, channels-last, so that the next convolution reads it in order.

The values are the torch path's, bit for bit: rounding is round-half-to-even on exact
products by powers of two, limbs are the floor of the integer over 2^6 and its remainder,
the limb sums combine exactly (integers below 2^53), and the output is one correctly rounded
multiplication (by the image's power of two times the channel's weight step, exact) and one
correctly rounded add, as in :func:`harness.model.exact.integer_matmul`
and :meth:`~harness.model.exact.IntegerConv2d.forward`. ``tests/test_model_exact.py``
compares the two paths.
"""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from harness import process_memory
from harness.kernels import jit, memory

ENABLED = True  # tests switch the kernels off to compare with the torch path
_FRUGAL = threading.local()  # frugal(): the heap trimmed before each convolution, on this thread
CHUNK_BYTES = 8 << 20  # a convolution's im2col rows and their sums, made and used this much at a time
_MIN_CHUNK = 64  # rows: fewer would make the int8 GEMMs slow
# The kernels run on the calling thread: spread over a thread pool they ran slower, and so did
# the GEMMs between them (torch's OpenMP threads, spinning after each GEMM, took their cores).
_LIMB = 6
NONE, RELU, TABLE = 0, 1, 2  # a convolution's activation, applied as it writes its outputs (Epilogue)


# Offsets inside the kernels are unsigned: numba then drops its negative-index wraparound, and
# the inner loops over channels vectorise (2-5x faster than signed offsets, measured).


@jit()
def _quantize(x, strides, up, grid, geometry, start, stop):
    """Image rows ``start:stop`` (image, y) of ``round(x * up[image])`` as int8 limbs into the
    interior of a zero-bordered channels-last grid, ``row`` bytes a pixel, from channel ``first``
    on (x is one part of a concatenation along channels): high limbs, then low. ``x`` may hold
    only those rows: ``origin`` is where its first element would be in the whole part. The limbs
    of the integer v, floor(v / 2^6) and the rest, are computed in float64, exactly (|v| <= 2^12):
    in int64 they are the same, at half the speed where float64 converts to int64 one element
    at a time (AVX2)."""
    channels, height, width, ph, pw, row, half, first, origin = geometry
    sn, sc, sy, sx = strides
    wp = width + 2 * pw
    hp = height + 2 * ph
    for r in range(start, stop):
        n = r // height
        y = r - n * height
        scale = up[n]
        for i in range(width):
            src = np.uint64(n * sn + y * sy + i * sx - origin)
            hi = np.uint64(((n * hp + y + ph) * wp + i + pw) * row + first)
            lo = np.uint64(((n * hp + y + ph) * wp + i + pw) * row + first + half)
            if sc == 1:  # channels-last: a contiguous run
                for c in range(np.uint64(channels)):
                    v = np.rint(np.float64(x[src + c]) * scale)
                    high = np.floor(v * (1.0 / (1 << _LIMB)))
                    grid[hi + c] = np.int32(high)
                    grid[lo + c] = np.int32(v - high * (1 << _LIMB))
            else:
                step = np.uint64(sc)
                for c in range(np.uint64(channels)):
                    v = np.rint(np.float64(x[src + c * step]) * scale)
                    high = np.floor(v * (1.0 / (1 << _LIMB)))
                    grid[hi + c] = np.int32(high)
                    grid[lo + c] = np.int32(v - high * (1 << _LIMB))


@jit()
def _im2col(grid, limbs, geometry, start, stop):
    """im2col rows ``start:stop`` (image, y, x) of both halves of the grid, into ``limbs`` from its
    row 0 (high limbs) and row ``rows`` (low): per kernel row, the ``kw`` taps are adjacent
    channels-last pixels, one run of ``kw * channels`` bytes."""
    channels, out_h, out_w, hp, wp, kh, kw, sh, sw, kp, half, rows = geometry
    run = np.uint64(kw * channels)
    for m in range(start, stop):
        n = m // (out_h * out_w)
        oy = (m - n * out_h * out_w) // out_w
        ox = m - n * out_h * out_w - oy * out_w
        for ky in range(kh):
            src = np.uint64(((n * hp + oy * sh + ky) * wp + ox * sw) * channels)
            src_lo = np.uint64(((n * hp + oy * sh + ky) * wp + ox * sw) * channels + half)
            dst = np.uint64((m - start) * kp + ky * kw * channels)
            dst_lo = np.uint64((m - start + rows) * kp + ky * kw * channels)
            for j in range(run):
                limbs[dst + j] = grid[src + j]
                limbs[dst_lo + j] = grid[src_lo + j]


@jit()
def _max_bits(bits, per_image, mask, out, start, stop):
    """Per image, the largest magnitude's bit pattern: the sign bit masked off, the IEEE
    patterns of non-negative floats order as integers (and integer maxima vectorise)."""
    for n in range(start, stop):
        top = bits.dtype.type(0)
        first = np.uint64(n * per_image)
        for i in range(np.uint64(per_image)):
            top = max(top, bits[first + i] & mask)
        out[n] = top


@jit()
def _scales(magnitudes, bits, up, down):
    """Per image, the power-of-two scales of :func:`harness.model.exact.power_scales` for its
    largest magnitude (frexp and ldexp are exact)."""
    for i in range(magnitudes.shape[0]):
        exponent = bits - math.frexp(np.float64(magnitudes[i]))[1] if magnitudes[i] > 0 else 0
        up[i] = math.ldexp(1.0, exponent)
        down[i] = math.ldexp(1.0, -exponent)


@jit()
def _round_to_odd(x, up, out, per_image):
    """``out = x * up[image]`` rounded to odd: the integer itself where the product is one, else
    the odd one of the two integers around it (the products are exact: powers of two)."""
    for i in range(np.uint64(x.shape[0])):
        v = np.float64(x[i]) * up[i // np.uint64(per_image)]
        low = np.floor(v)
        r = np.int64(low)
        if v != low:
            r |= 1
        out[i] = r


@jit()
def _prepare(x, patterns, per_image, strides, top, magnitudes, mask, bits, up, down, grid, quantise):
    """A one-part convolution input in one call from Python (each call costs tens of
    microseconds): per image the largest magnitude (from ``patterns``, x's memory as integers;
    ``top`` and ``magnitudes`` are one buffer as integers and as floats), its scales, then the
    limbs into the grid (geometry ``quantise``)."""
    n = top.shape[0]
    _max_bits(patterns, per_image, mask, top, 0, n)
    _scales(magnitudes, bits, up, down)
    _quantize(x, strides, up, grid, quantise, 0, n * quantise[1])


@jit()
def _table_at(v, values, params):
    """f(v) from the table ``values`` on a 2^-8 grid over [-count, count] / 2^8, the steps of
    :meth:`harness.model.exact.Table.forward` one by one; beyond it slope * v + above, or below."""
    count, steps, below, slope, above = params[0], params[1], params[2], params[3], params[4]
    position = v * steps
    if abs(position) < count:
        index = np.floor(position)
        frac = position - index
        k = np.int64(index) + np.int64(count)
        low = values[k]
        return low + (values[k + 1] - low) * frac
    if v > 0:
        return v * slope + above
    return below


@jit()
def _scaled_sums(sums, down, scale, bias, out, geometry, table, params, start, stop):
    """Output pixels ``first + start : first + stop`` (image, y, x), channels-last, from the
    rows ``start:stop`` of the sums (int32, or float32 holding integers: :func:`limb_product`):
    sum * down[image] * scale[c] + bias[c], each sum put together from its two limb products,
    rows apart (a multiply and an add, never fused); then the convolution's activation
    (:class:`Epilogue`): the values of its own pass. The limb products combine in float64,
    exactly (integers below 2^38): in int64 they are the same, at half the speed where int64
    converts to float64 one element at a time (AVX2)."""
    channels, n8, rows, positions, first, activation = geometry
    for m in range(start, stop):
        hi = np.uint64(m * n8)
        lo = np.uint64((m + rows) * n8)
        at = np.uint64((first + m) * channels)
        factor = down[(first + m) // positions]
        for c in range(np.uint64(channels)):
            total = np.float64(sums[hi + c]) * np.float64(1 << _LIMB) + np.float64(sums[lo + c])
            value = total * (factor * scale[c]) + bias[c]
            if activation == RELU:
                value = max(value, 0.0)
            elif activation == TABLE:
                value = _table_at(value, table, params)
            out[at + c] = value


@jit()
def _lookup(x, values, out, params, start, stop):
    """f(x) from the table ``values`` (:func:`_table_at`), element by element."""
    for i in range(start, stop):
        out[i] = _table_at(x[i], values, params)


@dataclass(frozen=True)
class Epilogue:
    """What :func:`convolve` applies to each output as it writes it, instead of a pass of its own
    over the float64 output: nothing, ReLU, or a table (:class:`harness.model.exact.Table`:
    ``values`` and its parameters, :meth:`table`)."""

    activation: int = NONE
    values: np.ndarray = field(default_factory=lambda: np.zeros(2))
    params: np.ndarray = field(default_factory=lambda: np.zeros(5))

    @classmethod
    def table(cls, values: Tensor, steps: float, below: float, slope: float, above: float) -> "Epilogue":
        count = (values.numel() - 1) // 2
        return cls(TABLE, values.numpy(), np.array([count, steps, below, slope, above], dtype=np.float64))


PLAIN, RECTIFIED = Epilogue(), Epilogue(RELU)  # made once: a convolution reads one at every call


def lookup(x: Tensor, table: Epilogue) -> Tensor:
    """``table``'s f(x) for a :func:`dense` float64 ``x``, written over it."""
    _lookup(memory(x), table.values, memory(x), table.params, 0, x.numel())
    return x


def usable(x: Tensor) -> bool:
    return ENABLED and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4


def dense(x: Tensor) -> Tensor:
    """``x`` in one of the two layouts whose images are blocks of memory: as it is if it is
    contiguous or channels-last, else copied to channels-last."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def _maxima(x: Tensor) -> tuple[np.ndarray, np.ndarray, np.integer]:
    """A buffer for per-image maxima as integer bit patterns and, the same memory, as floats;
    and the mask that clears the sign bit."""
    floats = np.empty(x.shape[0], dtype=np.float64 if x.dtype == torch.float64 else np.float32)
    top = floats.view(np.int64 if x.dtype == torch.float64 else np.int32)
    return top, floats, top.dtype.type((1 << (8 * top.itemsize - 1)) - 1)


def _largest(x: Tensor) -> np.ndarray:
    """Per image, the largest magnitude of a :func:`dense` ``x`` (float64)."""
    top, magnitudes, mask = _maxima(x)
    _max_bits(memory(x).view(top.dtype), x[0].numel(), mask, top, 0, x.shape[0])
    return magnitudes.astype(np.float64)


def _grid(parts: list, bits: int, padding, row: int, bordered: bool) -> tuple[Tensor, np.ndarray]:
    """``[high; low]`` int8 limbs of ``round(x * 2^e)`` on a zero-bordered channels-last grid of
    ``row`` bytes a pixel, x the channel concatenation of ``parts`` (never formed), with
    ``|.| <= 2^bits`` and a power of two per image, from the largest magnitude of all parts; and
    2^-e per image."""
    n, _, height, width = parts[0].shape
    (ph, pw) = padding
    half = n * (height + 2 * ph) * (width + 2 * pw) * row
    grid = (torch.zeros if bordered else torch.empty)(2 * half, dtype=torch.int8)
    up, down = np.empty(n), np.empty(n)
    if len(parts) == 1 and not isinstance(parts[0], (Pointwise, Rounded)):
        (x,) = parts
        top, magnitudes, mask = _maxima(x)
        flat = memory(x)
        quantise = np.array([x.shape[1], height, width, ph, pw, row, half, 0, 0], dtype=np.int64)
        _prepare(flat, flat.view(top.dtype), x[0].numel(), np.array(x.stride(), dtype=np.int64), top, magnitudes,
                 mask, bits, up, down, grid.numpy(), quantise)
        return grid, down
    largest = np.zeros(n)
    for x in parts:
        largest = np.maximum(largest, x.largest if isinstance(x, (Pointwise, Rounded)) else _largest(x))
    _scales(largest, bits, up, down)
    first = 0
    for x in parts:
        quantise = np.array([x.shape[1], height, width, ph, pw, row, half, first, 0], dtype=np.int64)
        if isinstance(x, Pointwise):  # each chunk of whole rows, channels-last: read from its own start
            pixel = width * x.shape[1]
            for image, y, values in x.chunks():
                quantise[-1] = (image * height + y) * pixel
                rows = values.shape[0] // width
                _quantize(values.reshape(-1), np.array([height * pixel, 1, pixel, x.shape[1]], dtype=np.int64), up,
                          grid.numpy(), quantise, image * height + y, image * height + y + rows)
        elif isinstance(x, Rounded):  # round(x * 2^e) = round(v * 2^(e - e_v)), e_v - e >= 2
            _quantize(memory(x.values), np.array(x.values.stride(), dtype=np.int64), up * x.down, grid.numpy(),
                      quantise, 0, n * height)
        else:
            _quantize(memory(x), np.array(x.stride(), dtype=np.int64), up, grid.numpy(), quantise, 0, n * height)
        first += x.shape[1]
    return grid, down


class Rounded:
    """A float64 tensor that only integer convolutions read, held in 2 bytes an element instead of 8.

    The entropy model's context (the hyper features and every coded slice) is read by each later
    slice's first convolutions, each quantising the concatenation of its parts with the exponent
    e of their largest magnitude: round(x * 2^e). A part alone has an exponent e_x >= e (its
    largest magnitude is at most theirs), and round-to-nearest of x * 2^e is the same integer as
    round-to-nearest of v * 2^(e - e_x - 2), v = x * 2^(e_x + 2) rounded to odd: v lies on the
    same side of every multiple of 2^(e_x + 1 - e) (even, as e <= e_x) as x * 2^(e_x + 2) and is
    never on one unless x * 2^(e_x + 2) is (Boldo and Melquiond, "When double rounding is odd",
    2005). |v| <= 2^(bits + 2) fits int16, and the convolutions read the same integers, bit for
    bit, as from the float64 part. Layout as ``x``'s."""

    def __init__(self, x: Tensor, bits: int) -> None:
        x = dense(x)
        n = x.shape[0]
        self.largest = _largest(x)
        up, self.down = np.empty(n), np.empty(n)
        _scales(self.largest, bits + 2, up, self.down)
        self.values = torch.empty_like(x, dtype=torch.int16)  # same strides: x is dense
        _round_to_odd(memory(x), up, memory(self.values), x[0].numel())
        self.shape = tuple(x.shape)


class Pointwise:
    """The float64 output of a 1x1 integer convolution of ``x``, never formed whole.

    The entropy model's AttentionNet widens 192 channels to the whole context (up to 1440 of
    float64, 280 MB at 6 MP); only the integer convolutions after it read that, each quantising
    it with the exponent of its largest magnitude. They read it :meth:`chunks` at a time: its
    maximum once (:attr:`largest`, shared by its readers), then its limbs once per reader, each
    chunk made again from ``x``'s int8 grid (which is all this holds, a sixteenth of the
    output's bytes at 1440 channels): the same values, bit for bit, as the whole output, since
    every chunk is the same exact sums, rescaled alike."""

    def __init__(self, x: Tensor, bits: int, weight: Tensor, scale: Tensor, bias: Tensor,
                 operand: Tensor | tuple[Tensor, ...]) -> None:
        n, channels, height, width = x.shape
        kp = weight.shape[0]
        self.shape = (n, bias.shape[0], height, width)
        self.grid, self.down = _grid([x], bits, (0, 0), kp, bordered=kp > channels)
        self.weight, self.scale, self.bias = weight, scale, bias
        self.operand = operand  # gemm_weight(weight), prepared once for every reader

    @functools.cached_property
    def largest(self) -> np.ndarray:
        """Per image, the largest magnitude of the output (one pass over it, shared by every reader)."""
        largest = np.zeros(self.shape[0])
        for image, _, values in self.chunks():
            largest[image] = max(largest[image], float(np.abs(values).max()))
        return largest

    def chunks(self):
        """(image, first row, values): the output's rows of one image a chunk at a time, each
        chunk's values channels-last, (rows x width) x channels float64."""
        n, channels, height, width = self.shape
        kp, n8 = self.weight.shape
        pixels = n * height * width
        matrix = self.grid.view(2 * pixels, kp)
        rows = max(1, CHUNK_BYTES // (width * (8 * channels + 8 * n8 + 2 * kp)))
        for image in range(n):
            for y in range(0, height, rows):
                count = min(rows, height - y) * width
                first = (image * height + y) * width
                limbs = torch.cat([matrix[first : first + count], matrix[pixels + first : pixels + first + count]])
                sums = limb_product(limbs, self.operand)
                values = np.empty((count, channels))
                geometry = np.array([channels, n8, count, count, 0, NONE], dtype=np.int64)
                _scaled_sums(sums.view(-1).numpy(), self.down[image : image + 1], self.scale.numpy(),
                             self.bias.numpy(), values.reshape(-1), geometry, PLAIN.values, PLAIN.params, 0, count)
                yield image, y, values

    def tensor(self) -> Tensor:
        """The whole output (NCHW, channels-last in memory), for a reader other than an integer
        convolution on the CPU."""
        n, channels, height, width = self.shape
        out = np.empty((n, height * width, channels))
        for image, y, values in self.chunks():
            out[image, y * width : y * width + values.shape[0]] = values
        return torch.from_numpy(out).reshape(n, height, width, channels).permute(0, 3, 1, 2)


_BLOCK_TERMS = 4096  # |limb x weight| <= 2^12: 4096 of them sum to at most 2^24, exact in float32
INT_MM, ONEDNN, FLOAT32 = "torch's int8 GEMM", "oneDNN's int8 GEMM", "float32 GEMMs"  # what multiplies the limbs


def gemm_weight(weight: Tensor) -> Tensor | tuple[Tensor, ...]:
    """The int8 weights as :func:`limb_product` multiplies them on this CPU, made once for a
    convolution's chunks to share (or kept for every coding: :func:`packs_weights`): the int8
    matrix itself for torch's int8 GEMM, else its blocks of :data:`_BLOCK_TERMS` rows, each
    packed for oneDNN's int8 GEMM or copied to float32."""
    gemm = _gemm()
    if gemm == INT_MM:
        return weight
    blocks = weight.split(_BLOCK_TERMS)
    if gemm == ONEDNN:  # oneDNN's own layout, with its compensation for signed inputs
        return tuple(torch.ops.onednn.qlinear_prepack(block.t().contiguous(), None) for block in blocks)
    return tuple(block.float() for block in blocks)


def limb_product(limbs: Tensor, weight: Tensor | tuple[Tensor, ...]) -> Tensor:
    """``limbs @ weight`` of int8 integers (limbs in [-64, 64], weights within +-2^6, int8 or as
    :func:`gemm_weight` gives them), by the GEMM :func:`_gemm` picks for this CPU: int32 sums
    from torch's int8 GEMM; past it the terms go :data:`_BLOCK_TERMS` at a time, each
    block's sums integers of at most 2^24 that its GEMM returns in float32, exactly, and the
    blocks add in int32. With one block those float32 sums are the result (integers too, so
    every reader converts them exactly): a conversion pass fewer. The same integers on every path."""
    if isinstance(weight, Tensor):
        if _gemm() == INT_MM:
            return torch._int_mm(limbs, weight)
        weight = gemm_weight(weight)
    if len(weight) == 1:
        return _block_product(limbs, weight[0])
    sums, start = None, 0
    for block in weight:
        terms = block.shape[0]
        part = _block_product(limbs[:, start : start + terms], block).to(torch.int32)
        sums = part if sums is None else sums.add_(part)
        start += terms
    return sums


def _block_product(limbs: Tensor, block: Tensor) -> Tensor:
    if block.is_mkldnn:  # scales of one and no bias: the int32 sums themselves, in float32
        ones, zeros = _unit_scales(block.shape[1])
        return torch.ops.onednn.qlinear_pointwise(limbs, 1.0, 0, block, ones, zeros, None, 1.0, 0, torch.float32,
                                                  "none", [], "")
    return limbs.float() @ block


@functools.cache
def _unit_scales(columns: int) -> tuple[Tensor, Tensor]:
    return torch.ones(columns), torch.zeros(columns, dtype=torch.int64)


@functools.cache
def _gemm() -> str:
    """torch's int8 GEMM where torch hands it to oneDNN (CPUs with VNNI: it decides from the CPU
    itself, not from oneDNN's ISA cap); on other x86 CPUs, where torch's is a plain loop at 3-5
    GOP/s, oneDNN's int8 GEMM through its quantised linear op (1.5-2x the float32 GEMMs' rate on
    an AVX2-only CPU, benchmarks/integer_path.py gemms); elsewhere, where it was never measured,
    float32 GEMMs. oneDNN's kernels for CPUs without VNNI add pairs of u8 x s8 products in a
    saturating int16 after shifting the signed operand by 128: the 6-bit limbs and weights keep
    every pair below 2^15 (:mod:`harness.model.exact`)."""
    if not onednn_int8_available():
        return FLOAT32
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)  # private: without it, oneDNN's op (exact too)
    return INT_MM if vnni and vnni() else ONEDNN


def packs_weights() -> bool:
    """Whether :func:`gemm_weight` packs the weights (oneDNN's int8 GEMM), which is worth keeping
    for a process that codes many images. On an AVX2-only host, kodim01 (benchmarks/RESULTS.md,
    integer_path.py kept): packing the default model's 61 M weights took 0.26-0.29 s of each
    coding, and a compress and decompress took 0.7-1.0 s less with them kept (16.1-17.1 against
    15.4-16.1 s, two runs); the packed copy holds 67 MB. tiny's: 7 MB, 1.75-1.9 against 1.36-1.45 s.
    torch's int8 GEMM reads the weights as they are; a float32 copy would hold 4 bytes a weight."""
    return _gemm() == ONEDNN


def onednn_int8_available() -> bool:
    """Whether oneDNN's quantised linear op may multiply the limbs here: x86 with oneDNN (measured
    there only)."""
    return torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")


@contextlib.contextmanager
def frugal() -> Iterator[None]:
    """Within the block, each convolution first hands the heap's free pages back to the system
    (:func:`harness.process_memory.trim`): glibc keeps the blocks of tens of MB that a large
    latent's convolutions free, and the next convolution's, of other sizes, land beside them. At 6
    MP that took 0.3 GB off the encoder's peak and added about half to the entropy model's time
    (faulting the pages back in), so only a process coding within a memory budget asks for it."""
    previous = getattr(_FRUGAL, "on", False)
    _FRUGAL.on = True
    try:
        yield
    finally:
        _FRUGAL.on = previous


def convolve(parts: list, bits: int, kernel, stride, padding, weight: Tensor, operand: Tensor | tuple[Tensor, ...],
             scale: Tensor, bias: Tensor, epilogue: Epilogue = PLAIN) -> Tensor:
    """:meth:`harness.model.exact.IntegerConv2d.forward` on the CPU for the channel concatenation
    of ``parts`` (:func:`dense` tensors or :class:`Pointwise` outputs, of one batch and size; the
    concatenation is never formed): the float64 output, NCHW, channels-last in memory.
    ``weight``: the int8 integer weights (kp x n8, rows (ky, kx, channel)), ``operand`` the same
    as :func:`gemm_weight` prepares them (for this convolution, or kept for every coding),
    ``scale`` and ``bias`` per output channel; ``epilogue``: the activation that follows it,
    applied as the outputs are written.

    The im2col rows and their int32 sums are made :data:`CHUNK_BYTES` at a time, so the
    convolution holds its input, its int8 grid and its output, and no whole-size workspace."""
    if getattr(_FRUGAL, "on", False):
        process_memory.trim()
    n, _, height, width = parts[0].shape
    channels = sum(x.shape[1] for x in parts)
    kp, n8 = weight.shape
    out_channels = bias.shape[0]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    hp, wp = height + 2 * ph, width + 2 * pw
    out_h, out_w = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    rows = n * out_h * out_w
    pointwise = kernel == (1, 1) and stride == (1, 1) and padding == (0, 0)
    row = kp if pointwise else channels  # a 1x1 convolution's grid is its im2col matrix
    # cells the quantisation does not write (the border, columns of the padded K) must be zeros
    grid, down = _grid(parts, bits, padding, row, bordered=bool(ph or pw) or row > channels)
    out = torch.empty(n, out_h, out_w, out_channels, dtype=torch.float64)
    chunk = max(_MIN_CHUNK, CHUNK_BYTES // (2 * (kp + 4 * n8)))
    for first in range(0, rows, chunk):
        count = min(chunk, rows - first)
        if pointwise and count == rows:
            limbs = grid.view(2 * rows, kp)
        elif pointwise:
            matrix = grid.view(2 * rows, kp)
            limbs = torch.cat([matrix[first : first + count], matrix[rows + first : rows + first + count]])
        else:  # columns of the padded K stay zero
            limbs = (torch.zeros if kh * kw * channels < kp else torch.empty)(2 * count, kp, dtype=torch.int8)
            geometry = np.array([channels, out_h, out_w, hp, wp, kh, kw, sh, sw, kp, grid.numel() // 2, count],
                                dtype=np.int64)
            _im2col(grid.numpy(), limbs.view(-1).numpy(), geometry, first, first + count)
        sums = limb_product(limbs, operand)
        geometry = np.array([out_channels, n8, count, out_h * out_w, first, epilogue.activation], dtype=np.int64)
        _scaled_sums(sums.view(-1).numpy(), down, scale.numpy(), bias.numpy(), out.view(-1).numpy(), geometry,
                     epilogue.values, epilogue.params, 0, count)
    return out.permute(0, 3, 1, 2)
