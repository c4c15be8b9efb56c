"""The integer entropy path: exact sums, deterministic tables and thresholds, faithful conversion."""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from compressai.layers import GDN
from torch import nn

from harness.errors import HarnessError
from harness.model import exact, exact_cpu

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REPO = Path(__file__).resolve().parents[1]
LIMIT, WEIGHT_LIMIT = 2**exact.ACTIVATION_BITS, 2**exact.WEIGHT_BITS


def _extreme_integers(rows: int, cols: int, seed: int, limit: int = LIMIT) -> torch.Tensor:
    """Integers in [-limit, limit], a third of them at the extremes, where limbs and sums are largest."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-limit, limit + 1, (rows, cols), generator=g)
    pick = torch.randint(0, 3, (rows, cols), generator=g)
    values = torch.where(pick == 0, torch.full_like(values, limit), values)
    values = torch.where(pick == 1, torch.full_like(values, -limit), values)
    return values.double()


def test_integer_matmul_is_the_exact_product_at_the_extremes():
    a, w = _extreme_integers(40, 1000, 0), _extreme_integers(1000, 24, 1, WEIGHT_LIMIT)
    exact_product = (a.long() @ w.long()).double()  # int64: exact by definition
    assert torch.equal(exact.integer_matmul(a, exact.IntegerMatrix.of(w)), exact_product)
    assert exact_product.abs().max() > 2**24  # float32 could not hold these sums


_INT_MM_HERE = exact_cpu._gemm() == exact_cpu.INT_MM
_ONEDNN_HERE = exact_cpu.onednn_int8_available()
_NO_INT_MM = "torch's int8 GEMM is oneDNN's only on CPUs with VNNI; elsewhere a plain loop, minutes for these products"
_NO_ONEDNN = "oneDNN's quantised linear op serves the limbs on x86 CPUs with oneDNN only"
_GEMMS = [pytest.param(exact_cpu.INT_MM, marks=pytest.mark.skipif(not _INT_MM_HERE, reason=_NO_INT_MM)),
          pytest.param(exact_cpu.ONEDNN, marks=pytest.mark.skipif(not _ONEDNN_HERE, reason=_NO_ONEDNN)),
          exact_cpu.FLOAT32]


@pytest.mark.parametrize("gemm", _GEMMS)
def test_a_product_of_limbs_is_exact_at_the_extremes_on_every_gemm(gemm, monkeypatch):
    """The limbs' product is the same integers whichever GEMM runs it: torch's int8 GEMM (where
    oneDNN runs it: CPUs with VNNI), oneDNN's through its quantised linear op, or float32 GEMMs:
    at the extremes each block's sums reach 2^24, which float32 still holds, and the blocks'
    total goes past it."""
    monkeypatch.setattr(exact_cpu, "_gemm", lambda: gemm)
    block = exact_cpu._BLOCK_TERMS
    terms = 2 * block + 8
    g = torch.Generator().manual_seed(0)
    # products of one sign, large and uneven: sums past 2^24 that float32 would round
    limbs = torch.randint(32, 65, (16, terms), generator=g).to(torch.int8)
    limbs[8:] = -limbs[8:]
    weight = torch.randint(32, 65, (terms, 16), generator=g).to(torch.int8)
    limbs[:2, :block], weight[:block, 0] = 64, 64  # 2^24: a block at its largest
    limbs[2:4], weight[:, 1] = 63, -64  # the low limb's largest
    sums = exact_cpu.limb_product(limbs, weight)  # three blocks
    assert sums.dtype == torch.int32 and torch.equal(sums.long(), limbs.long() @ weight.long())
    assert sums[0, 0] > 2**24 + 2**23
    one_block = exact_cpu.limb_product(limbs[:, :block], weight[:block])  # float32 off torch's int8 GEMM
    assert one_block[0, 0] == 2**24 and torch.equal(one_block.long(), limbs[:, :block].long() @ weight[:block].long())
    prepared = exact_cpu.gemm_weight(weight)  # as a convolution's chunks share it
    assert torch.equal(exact_cpu.limb_product(limbs, prepared), sums)


@pytest.mark.parametrize("gemm", _GEMMS[1:])  # torch's int8 GEMM takes the terms whole
def test_a_product_in_blocks_reads_each_block_of_terms_once(gemm, monkeypatch):
    """Rows of weights that sit in no block would be left out of the sums; rows in two, counted twice."""
    monkeypatch.setattr(exact_cpu, "_BLOCK_TERMS", 8)
    monkeypatch.setattr(exact_cpu, "_gemm", lambda: gemm)
    g = torch.Generator().manual_seed(1)
    limbs = torch.randint(-64, 65, (5, 8 * 3 + 8), generator=g).to(torch.int8)
    weight = torch.randint(-64, 65, (limbs.shape[1], 8), generator=g).to(torch.int8)
    assert len(exact_cpu.gemm_weight(weight)) == 4
    assert torch.equal(exact_cpu.limb_product(limbs, weight).long(), limbs.long() @ weight.long())


def test_an_integer_matrix_holds_its_weights_once_as_int8():
    """The small and GPU products read the integers from the int8 GEMM's copy: no float64 copy of
    every weight stays in memory (8 bytes a weight of h_s and every e_Slice)."""
    w = _extreme_integers(20, 5, 1, WEIGHT_LIMIT)
    matrix = exact.IntegerMatrix.of(w)
    assert [buffer.dtype for buffer in matrix.buffers()] == [torch.int8]
    assert torch.equal(matrix.values, w.double())
    a = _extreme_integers(3, 20, 2)  # 3 rows: the float64 product
    assert torch.equal(exact.integer_matmul(a, matrix), (a.long() @ w.long()).double())

@pytest.mark.parametrize("gemm", _GEMMS)
def test_an_integer_matrix_keeps_its_packed_weights_only_while_they_are_its_weights(gemm, monkeypatch):
    """A process coding many images keeps the weights packed (oneDNN's GEMM); a fill or a load
    puts new weights, which must not be multiplied by the old packing. torch's int8 GEMM reads
    the weights as they are, and float32 copies (4 bytes a weight) are not kept."""
    monkeypatch.setattr(exact_cpu, "_gemm", lambda: gemm)
    made = []
    prepare = exact_cpu.gemm_weight
    monkeypatch.setattr(exact_cpu, "gemm_weight", lambda weight: made.append(weight) or prepare(weight))
    old, new = _extreme_integers(40, 16, 3, WEIGHT_LIMIT), _extreme_integers(40, 16, 4, WEIGHT_LIMIT)
    matrix = exact.IntegerMatrix.of(old)
    a = _extreme_integers(64, 40, 5)  # past 16 rows: the limbs' product
    matrix.keep_operand()
    kept = len(made)
    assert torch.equal(exact.integer_matmul(a, matrix), (a.long() @ old.long()).double())
    assert kept == (gemm == exact_cpu.ONEDNN) and len(made) == (gemm != exact_cpu.ONEDNN) + kept
    matrix.fill(new)
    assert torch.equal(exact.integer_matmul(a, matrix), (a.long() @ new.long()).double())


@pytest.mark.skipif(not _ONEDNN_HERE, reason=_NO_ONEDNN)
def test_a_model_that_keeps_its_gemm_weights_codes_the_same_bytes_without_preparing_them_again(monkeypatch):
    """keep_gemm_weights (a leaderboard worker's models) packs every integer convolution's weights
    once; its codings then pack none, and write and read the same bytes as a coding that packs
    each convolution's weights as it runs it."""
    from harness.model.network import WeConvene
    from harness.zoo.variants import get_config

    monkeypatch.setattr(exact_cpu, "_gemm", lambda: exact_cpu.ONEDNN)
    torch.manual_seed(0)
    model = WeConvene(get_config("tiny")).eval()
    model.update(force=True)
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        packing = model.compress(x)
        made = []
        prepare = exact_cpu.gemm_weight
        monkeypatch.setattr(exact_cpu, "gemm_weight", lambda weight: made.append(weight) or prepare(weight))
        model.keep_gemm_weights()
        convolutions = len(made)
        kept = model.compress(x)
        decoded = model.decompress(kept["strings"], kept["shape"], kept["size"])["x_hat"]
    assert convolutions > 100 and len(made) == convolutions  # tiny's entropy model: 532 integer convolutions
    assert kept["strings"] == packing["strings"]
    with torch.no_grad():
        model.latent_codec.build_integer_path()  # anew: nothing kept
        assert torch.equal(model.decompress(kept["strings"], kept["shape"], kept["size"])["x_hat"], decoded)
    assert len(made) > convolutions


def test_weights_use_every_level_and_an_all_zero_channel_stays_zero():
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 3, 3)
    weight[1] = 0.0
    ints, step = exact.quantize_weights(weight)
    assert ints.abs().amax(dim=(1, 2, 3)).tolist() == [WEIGHT_LIMIT, 0, WEIGHT_LIMIT]
    assert torch.all((ints * step.reshape(-1, 1, 1, 1) - weight.double()).abs() <= step.reshape(-1, 1, 1, 1) / 2)


def test_weights_are_rounded_in_one_float64_copy_to_the_integers_of_their_definition():
    """quantize_weights runs for every weight at every load: one float64 copy rounded in place
    (more copies were the load's peak), the integers round(w * 2^bits / max |w|) per channel."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.made = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if isinstance(out, torch.Tensor) and out.numel() == weight.numel() and not name.endswith("_"):
                self.made.append(name)  # a new tensor of the weight's size, or a view of one
            return out

    torch.manual_seed(0)
    weight = torch.randn(6, 5, 3, 3) * torch.tensor([1e-3, 1.0, 7.0, -2.0, 0.0, 1e4]).reshape(-1, 1, 1, 1)
    with Ops() as ops:
        ints, step = exact.quantize_weights(weight, 6)
    largest = weight.double().abs().reshape(6, -1).amax(dim=1)
    up = torch.where(largest > 0, 2.0**6 / largest, torch.zeros_like(largest)).reshape(-1, 1, 1, 1)
    assert torch.equal(ints, torch.round(weight.double() * up)) and torch.equal(step, largest / 2.0**6)
    assert [name for name in ops.made if name not in ("detach", "view", "_reshape_alias")] == ["_to_copy"], ops.made


def test_weights_beyond_one_limb_are_refused():
    with pytest.raises(HarnessError, match="weights beyond"):
        exact.IntegerMatrix.of(torch.full((4, 3), WEIGHT_LIMIT + 1.0))


_ISA_CHECK = """
import torch
from harness.model import exact, exact_cpu
g = torch.Generator().manual_seed(0)
a = torch.randint(-4096, 4097, (64, 700), generator=g).double()
w = torch.randint(-64, 65, (700, 40), generator=g).double()
a[:, ::2] = 4096.0
w[::3] = -64.0
w[1::3] = 64.0
exact_product = (a.long() @ w.long()).double()
int8_gemms = [exact_cpu.ONEDNN] + ([exact_cpu.INT_MM] if exact_cpu._gemm() == exact_cpu.INT_MM else [])
for gemm in int8_gemms:
    exact_cpu._gemm = lambda: gemm
    print(gemm, torch.equal(exact.integer_matmul(a, exact.IntegerMatrix.of(w)), exact_product))
"""


@pytest.mark.slow
@pytest.mark.skipif(not _ONEDNN_HERE, reason=_NO_ONEDNN)
@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE", "SSE41"])
def test_integer_matmul_is_exact_with_every_onednn_kernel(isa):
    """oneDNN's int8 GEMMs for CPUs without VNNI saturate pairs of products in int16: the limbs stay
    below it, through oneDNN's quantised linear op and (on CPUs with VNNI) torch's int8 GEMM."""
    done = subprocess.run([sys.executable, "-c", _ISA_CHECK], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "ONEDNN_MAX_CPU_ISA": isa})
    lines = done.stdout.strip().splitlines()
    assert lines and all(line.endswith("True") for line in lines), done.stdout + done.stderr[-2000:]


def test_both_backends_and_thread_counts_give_the_same_bits(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 40, 3, padding=1)
    layer = exact.IntegerConv2d(conv)
    x = torch.randn(2, 48, 9, 11, dtype=torch.float64) * 3
    int8 = layer(x)
    torch.set_num_threads(2)
    assert torch.equal(layer(x), int8)
    monkeypatch.setattr(exact, "_sums_on_limbs", lambda device: False)
    assert torch.equal(layer(x), int8)
    with torch.no_grad():
        reference = conv(x.float()).double()
    # 7-bit weights: each off by up to 2^-7 of its channel's largest, over 432 terms a sum
    assert (int8 - reference).abs().max() < 2e-2 * reference.abs().max()


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    wide = torch.cat([x, x], dim=3)
    return {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
            "strided": wide[..., ::2]}


@pytest.mark.parametrize("kernel, stride, padding, channels", [
    (3, 1, 1, 48), (1, 1, 0, 13), (5, 2, 2, 9), (3, 2, 0, 16), (1, 2, 0, 8),
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_kernels_give_the_torch_path_bits(monkeypatch, kernel, stride, padding, channels, dtype):
    """The numba passes around the int8 GEMM (exact_cpu) against the torch ops they replace, in
    every layout, on a batch whose images get different exponents (K not a multiple of 8 too)."""
    torch.manual_seed(0)
    layer = exact.IntegerConv2d(nn.Conv2d(channels, 24, kernel, stride=stride, padding=padding))
    x = torch.randn(2, channels, 11, 14, dtype=torch.float64) * torch.tensor([3.0, 700.0]).reshape(2, 1, 1, 1)
    x[0, 0, 0, :3] = torch.tensor([0.5, -2.5, 1.5]) * 2.0**-9  # halves after the rescale: ties to even
    for name, tensor in _layouts(x.to(dtype)).items():
        fused = layer(tensor)
        assert fused.is_contiguous(memory_format=torch.channels_last) and not fused.is_contiguous(), name
        with monkeypatch.context() as m:
            m.setattr(exact_cpu, "ENABLED", False)
            reference = layer(tensor)
        assert torch.equal(fused, reference), name


@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid", "tanh"])
@pytest.mark.parametrize("kernel, padding", [(1, 0), (3, 1)])
def test_an_activation_fused_into_a_convolution_gives_the_bits_of_its_own_pass(monkeypatch, activation, kernel,
                                                                              padding):
    """A convolution that applies its ReLU or table as it writes its outputs: the bits of the
    activation's own pass after it, on the CPU kernels and on the torch path, outputs beyond the
    table's grid included; no pass of the activation's own runs."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, kernel, padding=padding)
    fused, apart = exact.IntegerConv2d(conv), exact.IntegerConv2d(conv)
    act = nn.ReLU(inplace=True) if activation == "relu" else exact.Table(activation)
    fused.fuse(act)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64) * torch.tensor([3.0, 700.0]).reshape(2, 1, 1, 1)
    sums = apart(x)
    assert (sums.abs() > 16).any() and (sums.abs() < 16).any()  # beyond the table's grid and on it
    reference = act(sums)
    passes = []
    original = exact_cpu._lookup
    monkeypatch.setattr(exact_cpu, "_lookup", lambda *args: passes.append(args) or original(*args))
    assert torch.equal(fused(x), reference) and not passes
    with monkeypatch.context() as m:
        m.setattr(exact_cpu, "ENABLED", False)
        assert torch.equal(fused(x), reference)
    with pytest.raises(HarnessError, match="one activation"):
        fused.fuse(nn.ReLU())


def test_conversion_fuses_the_activations_that_follow_convolutions(monkeypatch):
    """ParamNet's GELUs, the ReLUs inside the attention block's units and its sigmoid gate are
    applied by the convolutions before them: a slice network converted so makes no table pass
    but the LRP's tanh, and gives the bits of the torch path, which applies each after its convolution."""
    from harness.model.config import ModelConfig
    from harness.model.entropy import SliceNet

    torch.manual_seed(0)
    net = exact.convert(SliceNet(12, 4, ModelConfig("test", N=8, M=8, Z=8, attention_channels=8, param_hidden=(8, 8))))
    left = [m for m in net.modules() if isinstance(m, (exact.Table, nn.ReLU))
            and not any(getattr(c, "activation", None) is m for c in net.modules())]
    assert [m.name for m in left if isinstance(m, exact.Table)] == ["tanh"]
    assert all(isinstance(m, nn.ReLU) for m in left if not isinstance(m, exact.Table))  # after a residual sum
    hyper = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    coded = [torch.randn(1, 4, 6, 5, dtype=torch.float64)]
    passes = []
    original = exact_cpu._lookup
    monkeypatch.setattr(exact_cpu, "_lookup", lambda *args: passes.append(args) or original(*args))
    mean, scale, support = net.predict(hyper, hyper, coded)
    refined = net.refine(support, coded[0])
    assert [args[3][2] for args in passes] == [-1.0]  # one table pass, the tanh's (its value below the grid)
    with monkeypatch.context() as m:
        m.setattr(exact_cpu, "ENABLED", False)
        expected = net.predict(hyper, hyper, coded)
        assert torch.equal(mean, expected[0]) and torch.equal(scale, expected[1])
        assert torch.equal(refined, net.refine(expected[2], coded[0]))


@pytest.mark.parametrize("kernel, padding", [(1, 0), (3, 1)])
def test_a_convolution_of_parts_is_the_convolution_of_their_concatenation(monkeypatch, kernel, padding):
    """The entropy model hands its context (hyper features + coded slices) as parts, which the CPU
    kernels quantise in place with the exponent of the largest magnitude of all of them: the same
    bits as the concatenation, on both paths, in every layout of each part."""
    torch.manual_seed(0)
    layer = exact.IntegerConv2d(nn.Conv2d(20, 16, kernel, padding=padding))
    quiet = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    loud = torch.randn(2, 14, 9, 7, dtype=torch.float64) * torch.tensor([50.0, 0.01]).reshape(2, 1, 1, 1)
    for name, part in _layouts(loud).items():
        assert torch.equal(layer([quiet, part]), layer(torch.cat([quiet, part], dim=1))), name
    whole = layer(torch.cat([quiet, loud], dim=1))
    with monkeypatch.context() as m:
        m.setattr(exact_cpu, "ENABLED", False)
        assert torch.equal(layer([quiet, loud]), whole)
    assert torch.equal(exact.convolve_parts(layer, [quiet, loud]), whole)


@pytest.mark.parametrize("kernel, stride, padding", [(1, 1, 0), (3, 1, 1), (3, 2, 1)])
def test_a_convolution_made_in_row_chunks_gives_the_same_bits(monkeypatch, kernel, stride, padding):
    """Large latents are convolved a chunk of output rows at a time (chunks that cross from one
    image of the batch to the next, and a last one shorter than the int8 GEMM's 16 rows)."""
    torch.manual_seed(0)
    layer = exact.IntegerConv2d(nn.Conv2d(12, 24, kernel, stride=stride, padding=padding))
    x = torch.randn(2, 12, 13, 11, dtype=torch.float64) * torch.tensor([3.0, 700.0]).reshape(2, 1, 1, 1)
    whole = layer(x)
    rows_a_chunk = []
    original = exact_cpu._scaled_sums
    monkeypatch.setattr(exact_cpu, "_scaled_sums", lambda *args: rows_a_chunk.append(args[-1]) or original(*args))
    monkeypatch.setattr(exact_cpu, "CHUNK_BYTES", 2 * (layer.weight.limbs.shape[0] + 4 * layer.weight.limbs.shape[1]))
    rows = whole.shape[0] * whole.shape[2] * whole.shape[3]
    monkeypatch.setattr(exact_cpu, "_MIN_CHUNK", (rows - 5) // 3)  # 3 chunks and 5-7 rows
    assert torch.equal(layer(x), whole)
    assert len(rows_a_chunk) == 4 and rows_a_chunk[-1] < 16, rows_a_chunk


@pytest.mark.parametrize("kernel, padding", [(1, 0), (3, 1)])
def test_a_deferred_widening_gives_the_bits_of_its_formed_output(monkeypatch, kernel, padding):
    """AttentionNet's 1x1 widening to the whole context is deferred on large latents
    (exact.widen): the convolutions that read it make it a chunk of rows at a time, twice. Read
    alone or beside another part, formed by tensor(), or on the torch path: the formed output's
    bits, on a batch whose images get different exponents, one row a chunk."""
    torch.manual_seed(0)
    widening = exact.IntegerConv2d(nn.Conv2d(12, 40, 1))
    beside, alone = (exact.IntegerConv2d(nn.Conv2d(width, 16, kernel, padding=padding)) for width in (46, 40))
    x = torch.randn(2, 12, 9, 7, dtype=torch.float64) * torch.tensor([3.0, 700.0]).reshape(2, 1, 1, 1)
    x[:, :, 0] *= 64  # the largest magnitudes in the first chunk: the maximum is of every chunk
    other = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    formed = exact.widen(widening, x)
    assert torch.equal(formed, widening(x))  # 20 KB: below DEFER_BYTES, formed
    monkeypatch.setattr(exact, "DEFER_BYTES", 0)
    monkeypatch.setattr(exact_cpu, "CHUNK_BYTES", 1)
    deferred = exact.widen(widening, x)
    assert isinstance(deferred, exact_cpu.Pointwise)
    assert torch.equal(beside([deferred, other]), beside([formed, other]))
    assert torch.equal(alone([deferred]), alone([formed]))
    assert torch.equal(deferred.tensor(), formed)
    monkeypatch.setattr(exact_cpu, "ENABLED", False)
    assert torch.equal(beside([deferred, other]), beside([formed, other]))


def test_a_context_part_held_as_integers_gives_the_bits_of_its_float64(monkeypatch):
    """The entropy model holds its context (the hyper features and the coded slices) in 2 bytes an
    element (exact.hold) for the later slices' convolutions, which quantise it with the exponent
    of a louder part: the float64 part's bits, also for values a hair from a half step there (where
    rounding to nearest twice, at the part's own exponent and then at theirs, would not be)."""
    torch.manual_seed(0)
    layer = exact.IntegerConv2d(nn.Conv2d(20, 16, 3, padding=1))
    loud = torch.randn(2, 6, 9, 7, dtype=torch.float64) * torch.tensor([50.0, 0.3]).reshape(2, 1, 1, 1)
    step = torch.tensor([2.0 ** -(exact.ACTIVATION_BITS - math.frexp(float(loud[i].abs().max()))[1]) for i in range(2)])
    halves = torch.randint(-50, 50, (2, 14, 9, 7)).double() + 0.5
    hair = torch.tensor([2.0**-20, -(2.0**-20), 0.0])[torch.randint(0, 3, halves.shape)]
    quiet = (halves + hair) * step.reshape(2, 1, 1, 1)  # its own exponent: 8 bits finer than loud's
    quiet[0, 0, 0, 0] = 0.0
    for name, part in _layouts(quiet).items():
        whole = layer(torch.cat([loud, part], dim=1))
        held = exact.hold(part)
        assert isinstance(held, exact_cpu.Rounded) and held.values.dtype == torch.int16, name
        assert torch.equal(layer([loud, held]), whole), name
        assert torch.equal(layer([exact.hold(loud), held]), whole), name
        assert torch.equal(layer([exact.hold(torch.cat([loud, part], dim=1))]), whole), name
    monkeypatch.setattr(exact_cpu, "ENABLED", False)
    assert exact.hold(quiet) is quiet  # the torch path reads float64 tensors


@pytest.mark.parametrize("name", ["gelu", "sigmoid", "tanh"])
def test_cpu_table_kernel_gives_the_torch_path_bits(monkeypatch, name):
    table = exact.Table(name)
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64) * 8
    edges = [16.0, -16.0, 16 - 2.0**-9, -16 + 2.0**-9, 0.0, -0.0, 40.0, -40.0, float("inf"), -float("inf"), float("nan")]
    x.view(-1)[: len(edges)] = torch.tensor(edges, dtype=torch.float64)
    for layout, tensor in _layouts(x).items():
        fused = table(tensor.clone())  # the CPU kernel writes over a dense input
        with monkeypatch.context() as m:
            m.setattr(exact_cpu, "ENABLED", False)
            reference = table(tensor)
        assert torch.equal(fused.nan_to_num(nan=7.0), reference.nan_to_num(nan=7.0)), layout
        assert torch.equal(fused.isnan(), reference.isnan()), layout


@pytest.mark.parametrize("name, args", [
    ("_scaled_sums", lambda: (np.zeros(32, np.int32), np.ones(1), np.ones(8), np.ones(8), np.zeros(16),
                              np.array([8, 8, 2, 2, 0, exact_cpu.TABLE]), np.linspace(0, 1, 9),
                              np.array([4.0, 4.0, 0, 1, 0]), 0, 2)),
    ("_lookup", lambda: (np.linspace(-1, 1, 16), np.linspace(0, 1, 9), np.zeros(16), np.array([4.0, 4.0, 0, 1, 0]),
                         0, 16)),
    ("_table_at", lambda: (0.5, np.linspace(0, 1, 9), np.array([4.0, 4.0, 0, 1, 0]))),
])
def test_cpu_kernels_never_fuse_a_multiply_and_an_add(name, args):
    """A fused multiply-add rounds once where the torch path rounds twice, and only CPUs with FMA
    have it: the kernels, compiled with the options they are compiled with, must not contain one."""
    kernel = getattr(exact_cpu, name)
    options = {key: value for key, value in kernel.targetoptions.items() if key != "cache"}
    fresh = numba.jit(**options)(kernel.py_func)  # uncached, so its assembly can be read
    fresh(*args())
    (assembly,) = fresh.inspect_asm().values()
    assert "ret" in assembly
    assert not re.search(r"\bv?fn?m(add|sub)\d", assembly), f"{name} fuses a multiply and an add"


def test_each_image_of_a_batch_is_quantised_on_its_own():
    """An image coded alone or in a batch beside a louder one gets the same means and scales."""
    layer = exact.IntegerConv2d(nn.Conv2d(8, 8, 1))
    quiet, loud = torch.randn(1, 8, 5, 5, dtype=torch.float64), 1000 * torch.randn(1, 8, 5, 5, dtype=torch.float64)
    assert torch.equal(layer(torch.cat([quiet, loud]))[:1], layer(quiet))


def test_integer_gdn_follows_gdn():
    torch.manual_seed(0)
    for inverse in (False, True):
        gdn = GDN(16, inverse=inverse)
        with torch.no_grad():
            gdn.gamma.add_(0.05 * torch.rand_like(gdn.gamma))
        x = torch.randn(1, 16, 6, 7)
        with torch.no_grad():
            reference = gdn(x).double()
        assert torch.allclose(exact.IntegerGDN(gdn)(x.double()), reference, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name, reference", [
    ("gelu", lambda x: torch.nn.functional.gelu(x)),
    ("sigmoid", torch.sigmoid),
    ("tanh", torch.tanh),
])
def test_tables_follow_the_functions_between_and_beyond_the_grid(name, reference):
    x = torch.linspace(-20, 20, 100_003, dtype=torch.float64)  # mostly off the 2^-8 grid
    assert (exact.Table(name)(x) - reference(x)).abs().max() < 2e-6


# SHA-256 of each table's float64 bytes. The tables are built with + - x / only, so every
# machine builds these very bits; a libm call slipped into them would show here first.
TABLE_SHA256 = {
    "gelu": "cbcc01e02103ab19ceeeebdba01fe544c3f162d239d3f0ef73297320e6a2f6ee",
    "sigmoid": "d389fc91a984bd3028fdc675581a3a85f1548cdce41d1e3226696ee786f6c90f",
    "tanh": "3998a86e721b8f64516da0dfc91dddd95d91acf7e7d22733ec3f8264f3d38225",
}


@pytest.mark.parametrize("name", sorted(TABLE_SHA256))
def test_tables_are_the_same_bits_everywhere(name):
    assert hashlib.sha256(exact._table(name).tobytes()).hexdigest() == TABLE_SHA256[name]


def test_scale_thresholds_are_the_equal_cost_points():
    table = torch.exp(torch.linspace(math.log(0.11), math.log(256), 64)).float()
    thresholds = exact.scale_thresholds(table)
    low, high = table[:-1].double(), table[1:].double()
    formula = torch.sqrt(2 * torch.log(high / low) / (low.reciprocal() ** 2 - high.reciprocal() ** 2))
    assert torch.allclose(thresholds, formula, rtol=1e-13, atol=0)
    assert bool(((low < thresholds) & (thresholds < high)).all())


def test_conversion_refuses_what_it_cannot_make_exact():
    with pytest.raises(HarnessError, match="no exact version of GELU"):
        exact.convert(nn.Sequential(nn.Conv2d(2, 2, 1), nn.GELU(approximate="tanh")))
    with pytest.raises(HarnessError, match="no exact version of Softplus"):
        exact.convert(nn.Sequential(nn.Softplus()))
    with pytest.raises(HarnessError, match="unsupported convolution"):
        exact.convert(nn.Conv2d(4, 4, 3, groups=2))


def test_conversion_leaves_the_float_network_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 2, 1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    converted = exact.convert(net)
    assert isinstance(converted[0], exact.IntegerConv2d) and isinstance(converted[0].activation, exact.Table)
    assert isinstance(converted[1], nn.Identity)  # the GELU is applied as the convolution writes its outputs
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(converted(x.double()), net(x).double(), atol=2e-2)  # 7-bit weights


def test_checkpoints_name_the_path_and_others_are_refused_in_one_line(tmp_path):
    from harness.artefacts.checkpoint import load_checkpoint, run_init
    from harness.artefacts.config import InitModelConfig

    path = tmp_path / "tiny.pt"
    run_init(InitModelConfig(out=path, variant="tiny"))
    payload = torch.load(path, weights_only=True)
    assert payload["entropy_path"] == exact.PATH_ID
    assert load_checkpoint(path).integer_path
    for held, message in [(None, "names no entropy path"), ("integer-1", "exported for entropy path 'integer-1'"),
                          ("float", "exported for entropy path 'float'")]:
        if held is None:
            del payload["entropy_path"]  # a checkpoint of a harness before the integer path
        else:
            payload["entropy_path"] = held
        torch.save(payload, path)
        with pytest.raises(HarnessError, match=message) as refused:
            load_checkpoint(path)
        assert "\n" not in str(refused.value) and f"with {exact.PATH_ID!r}" in str(refused.value)


def _integer_nets(model) -> dict[str, torch.Tensor]:
    return model.latent_codec._integer[0].state_dict()


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _tiny_checkpoint_payload(tmp_path):
    from harness.artefacts.checkpoint import run_init
    from harness.artefacts.config import InitModelConfig

    path = tmp_path / "tiny.pt"
    run_init(InitModelConfig(out=path, variant="tiny"))
    return path, torch.load(path, weights_only=True)


def test_a_checkpoint_carries_its_integer_networks_and_a_load_takes_them_without_converting(tmp_path, monkeypatch):
    """A checkpoint holds the integer networks as built from its weights, packed one tensor per
    dtype with the weights' fingerprint; a load takes them as they are (no weight is quantised),
    the tensors a build gives, so a file codes to the same bytes whether its checkpoint carries
    them or not (one written before they were carried)."""
    from harness.artefacts.checkpoint import fingerprint, load_checkpoint, load_fingerprinted
    from harness.artefacts.coding import encode

    path, payload = _tiny_checkpoint_payload(tmp_path)
    carried = payload["integer_nets"]
    assert sorted(carried) == ["fingerprint", "float64", "int8"]
    del payload["integer_nets"]
    torch.save(payload, tmp_path / "before.pt")
    built, digest = load_fingerprinted(tmp_path / "before.pt")
    assert carried["fingerprint"] == digest == fingerprint(built)

    quantized = []
    monkeypatch.setattr(exact, "quantize_weights", lambda *args: quantized.append(args) or (_ for _ in ()).throw(
        AssertionError("a weight was quantised at load")))
    taken = load_checkpoint(path)
    assert not quantized and _same_tensors(_integer_nets(taken), _integer_nets(built))
    assert repr(taken.latent_codec._integer[0]) == repr(built.latent_codec._integer[0])  # fused as built
    pixels = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    assert encode(taken, pixels) == encode(built, pixels)


def test_integer_networks_carried_for_other_weights_are_built_anew_from_the_checkpoints(tmp_path):
    """A state dict edited by hand after export (averaged, pruned) no longer has the fingerprint
    the carried networks were built from: the load builds them from the weights it holds."""
    from harness.artefacts.checkpoint import load_checkpoint

    path, payload = _tiny_checkpoint_payload(tmp_path)
    key = next(k for k in payload["state_dict"] if k.startswith("latent_codec.slice_nets.0.") and k.endswith("weight"))
    payload["state_dict"][key] = payload["state_dict"][key] * 0.5
    torch.save(payload, path)
    edited = load_checkpoint(path)
    del payload["integer_nets"]
    torch.save(payload, tmp_path / "built.pt")
    built = load_checkpoint(tmp_path / "built.pt")
    assert _same_tensors(_integer_nets(edited), _integer_nets(built))
    stale = torch.load(tmp_path / "tiny.pt", weights_only=True)["integer_nets"]["float64"]
    assert not torch.equal(exact.pack(edited.latent_codec._integer[0])["float64"], stale)  # the halved steps


@pytest.mark.parametrize("damage, message", [
    (lambda nets: nets["int8"].__setitem__(0, 65), "weights beyond"),
    (lambda nets: nets.__setitem__("int8", nets["int8"].to(torch.int16)), r"int8 values are \(\d+,\) torch.int16, not"),
    (lambda nets: nets.__setitem__("int8", nets["int8"][:-1].clone()), r"int8 values are \(\d+,\) torch.int8, not"),
    (lambda nets: nets.pop("float64"), "float64 values are NoneType"),
    (lambda nets: nets.__setitem__("float32", torch.zeros(3)), r"values of another type \(float32\)"),
    (lambda nets: nets["float64"].fill_(0.5), "GDN weights not integers"),
    (lambda nets: nets.__setitem__("int8", [1, 2]), "int8 values are list, not"),
], ids=["a weight beyond 2^6", "16-bit limbs", "a value missing", "no float64 values", "values of another type",
        "a GDN weight not an integer", "a list for a tensor"])
def test_a_checkpoint_whose_integer_networks_are_damaged_is_refused_in_one_line(tmp_path, damage, message):
    """Carried integer networks of the checkpoint's weights must be the variant's, value for value,
    in their dtypes, with weights within the ranges the exact sums rest on: else a damaged file."""
    from harness.artefacts.checkpoint import load_checkpoint

    path, payload = _tiny_checkpoint_payload(tmp_path)
    damage(payload["integer_nets"])
    torch.save(payload, path)
    with pytest.raises(HarnessError, match=message) as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(str(path))
    assert str(refused.value).endswith("the file is damaged")


@pytest.mark.parametrize("nets", [torch.zeros(3), {"fingerprint": 3}], ids=["a tensor", "a number for a fingerprint"])
def test_a_checkpoint_whose_integer_networks_are_not_a_fingerprint_and_tensors_is_refused(tmp_path, nets):
    from harness.artefacts.checkpoint import load_checkpoint

    path, payload = _tiny_checkpoint_payload(tmp_path)
    payload["integer_nets"] = nets
    torch.save(payload, path)
    with pytest.raises(HarnessError, match="its integer entropy networks are not a fingerprint and tensors"):
        load_checkpoint(path)


def test_the_integer_path_is_built_a_network_at_a_time_handing_back_each_ones_temporaries(monkeypatch):
    """Building the integer networks makes float64 temporaries of every weight, which glibc keeps:
    the pages are handed back after each network (both h_s branches, each e_Slice), the same
    networks as one conversion of them all."""
    from harness import process_memory
    from harness.model.network import WeConvene
    from harness.zoo.variants import get_config

    torch.manual_seed(0)
    model = WeConvene(get_config("tiny")).eval()
    model.update(force=True)
    codec = model.latent_codec
    trims = []
    monkeypatch.setattr(process_memory, "trim", lambda: trims.append(1))
    codec.build_integer_path()
    assert len(trims) == 2 + len(codec.slice_nets)
    whole = exact.convert(codec.slice_nets)
    built = codec._integer[0].slice_nets
    assert [repr(net) for net in built] == [repr(net) for net in whole]
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), whole.state_dict().values()))
