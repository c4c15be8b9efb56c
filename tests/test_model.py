"""The network: variants, shapes with padding, subband likelihoods, loss, input errors."""

from __future__ import annotations

import math
import weakref
from dataclasses import replace
from functools import lru_cache

import pytest
import torch

from harness.errors import HarnessError
from harness.model.network import WeConvene
from harness.model.config import SUBBANDS_3D
from harness.model.loss import LossConfig, RateDistortionLoss
from harness.zoo.info import describe
from harness.zoo.variants import VARIANTS, get_config

PAPER_DEFAULT_PARAMS = 73.95e6


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@lru_cache(maxsize=None)
def tiny() -> WeConvene:
    torch.manual_seed(0)
    return WeConvene(get_config("tiny"))


@lru_cache(maxsize=None)
def params(variant: str) -> int:
    return describe(variant)["params"]


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(HarnessError, match="unknown model variant 'nope'.*3dm-weconvene"):
        get_config("nope")


@pytest.mark.slow
def test_default_variant_within_5_percent_of_paper():
    assert abs(params("3dm-weconvene") / PAPER_DEFAULT_PARAMS - 1) <= 0.05


@pytest.mark.slow
def test_ablation_sizes_ordered_as_in_paper():
    default = params("3dm-weconvene")
    assert params("weconv2d") > default and params("hf3x3") > default
    assert 0.95 * default < params("levels1") < default
    entropy_default = describe("3dm-weconvene")["modules"]["entropy_model"]
    entropy_2d = describe("wecharm2d")["modules"]["entropy_model"]
    # Table IV: WeChARM is 97.19 - 72.95 = 24.24 M larger than 3DWeChARM.
    assert 20e6 < entropy_2d - entropy_default < 28e6


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "tiny"])
def test_every_variant_builds_and_runs_forward(variant):
    torch.manual_seed(0)
    model = WeConvene(get_config(variant)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out["x_hat"].shape == (1, 3, 64, 64)
    assert set(out["likelihoods"]) == {*model.config.subbands, "z"}
    assert all(torch.isfinite(v).all() for v in out["likelihoods"].values())


@pytest.mark.parametrize("size", [(64, 64), (128, 64), (70, 45), (1, 1), (65, 130)])
def test_shapes_padded_to_stride_and_cropped_back(size):
    model = tiny()
    height, width = size
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out["x_hat"].shape == (2, 3, height, width)
    rows, cols = math.ceil(height / 64), math.ceil(width / 64)
    likelihoods = out["likelihoods"]
    assert list(likelihoods) == [*SUBBANDS_3D, "z"]
    for name in SUBBANDS_3D:
        assert likelihoods[name].shape == (2, model.config.M // 2, 4 * rows, 4 * cols), name
    assert likelihoods["z"].shape == (2, model.config.Z, rows, cols)


def test_wecharm2d_codes_four_spatial_subbands():
    config = replace(get_config("tiny"), variant="tiny-2d", entropy="2d", M=40)
    assert [sum(b - a for _, a, b in s) for s in config.slices] == [8] * 5 + [24] * 5
    with torch.no_grad():
        out = WeConvene(config)(torch.rand(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out["likelihoods"].items()} == {
        "LL": (1, 40, 4, 4), "LH": (1, 40, 4, 4), "HL": (1, 40, 4, 4), "HH": (1, 40, 4, 4), "z": (1, 32, 1, 1)
    }


def test_3d_slices_follow_the_paper():
    slices = get_config("3dm-weconvene").slices
    names = ["".join(sorted({name for name, _, _ in s})) for s in slices]
    assert names == ["LLL", "LLL", "HLL", "HLL", "LLH", "LHL", "LHH", "HLH", "HHL", "HHH"]
    assert [sum(b - a for _, a, b in s) for s in slices] == [80] * 4 + [160] * 6


@pytest.mark.parametrize("entropy, M", [("3d", 32), ("2d", 40)])
def test_slices_and_subbands_hold_the_latent_once(entropy, M):
    """The encoder's slices are copies, not views of the analysis's one buffer, which a view would
    hold whole until the last slice is coded; the decoder's subbands_of empties its list and makes
    a subband coded as one whole slice that slice. Neither holds the latent twice for long (an 8K
    latent is 0.66 GB in float32)."""
    config = replace(get_config("tiny"), variant="tiny-regroup", entropy=entropy, M=M)
    codec = WeConvene(config).latent_codec
    subbands = codec.analysis(torch.randn(1, M, 8, 12))
    slices = codec.slices_of(subbands)
    buffers = {tensor.untyped_storage().data_ptr() for tensor in subbands.values()}
    assert not buffers & {tensor.untyped_storage().data_ptr() for tensor in slices}
    coded = list(slices)
    regrouped = codec.subbands_of(slices)
    assert slices == [] and list(regrouped) == list(config.subbands)
    for name in config.subbands:
        assert torch.equal(regrouped[name], subbands[name])
    whole = {parts[0][0]: tensor for parts, tensor in zip(config.slices, coded)
             if len(parts) == 1 and parts[0][2] - parts[0][1] == subbands[parts[0][0]].shape[1]}
    assert sorted(whole) == (sorted(SUBBANDS_3D[2:]) if entropy == "3d" else [])
    for name, tensor in whole.items():
        assert regrouped[name].data_ptr() == tensor.data_ptr()


def test_training_adds_noise_evaluation_rounds():
    model = tiny()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        model.train()
        noisy = [model(x)["likelihoods"]["LLL"] for _ in range(2)]
        model.eval()
        rounded = [model(x)["likelihoods"]["LLL"] for _ in range(2)]
    assert not torch.equal(*noisy)
    assert torch.equal(*rounded)


def _output(model: WeConvene, x: torch.Tensor, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return model(x)


def test_stage2_reduces_to_stage1_with_unit_weights():
    model = tiny().train()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = _output(model, x)
    stage1 = RateDistortionLoss(LossConfig(lmbda=0.01, stage=1))(out, x)
    stage2 = RateDistortionLoss(LossConfig(lmbda=0.01, stage=2, w1=1.0, w2=1.0))(out, x)
    assert torch.allclose(stage1["loss"], stage2["loss"])


def test_bpp_per_subband_and_stage2_weights():
    model = tiny().train()
    x = torch.rand(1, 3, 70, 45)
    with torch.no_grad():
        out = _output(model, x)
    result = RateDistortionLoss(LossConfig(lmbda=0.01, stage=2, w1=2.0, w2=0.0))(out, x)
    subbands = sum(result[f"bpp_{name}"] for name in SUBBANDS_3D)
    assert torch.allclose(result["bpp_y"], subbands)
    assert torch.allclose(result["bpp"], subbands + result["bpp_z"])
    bits = -sum(torch.log2(v).sum() for v in out["likelihoods"].values())
    assert torch.allclose(result["bpp"], bits / (70 * 45))  # pixels of the original, not the padded image
    rate = result["loss"] - 0.01 * result["distortion"]
    assert torch.allclose(rate, 2 * (result["bpp_LLL"] + result["bpp_HLL"]) + result["bpp_z"], rtol=1e-4)
    assert torch.allclose(result["distortion"], 255**2 * result["mse"])


def test_one_optimisation_step_lowers_the_loss():
    torch.manual_seed(1)
    model = WeConvene(get_config("tiny")).train()
    criterion = RateDistortionLoss(LossConfig(lmbda=0.01))
    x = torch.rand(2, 3, 64, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    before = criterion(_output(model, x), x)["loss"]
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = criterion(_output(model, x), x)["loss"]
    assert after < before


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.rand(3, 64, 64), "N x 3 x H x W, got a 3-D"),
        (torch.rand(1, 1, 64, 64), "3 colour channels"),
        (torch.rand(1, 4, 64, 64), "3 colour channels"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int16),
         r"float images in \[0, 1\] or uint8 images, got dtype torch.int16"),
        (torch.rand(0, 3, 64, 64), "non-empty"),
        (torch.full((1, 3, 64, 64), float("nan")), "NaN"),
        (torch.tensor([[[[float("inf")]]] * 3]).reshape(1, 3, 1, 1), "NaN or infinite"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, message):
    with pytest.raises(HarnessError, match=message):
        tiny()(x)


def test_ms_ssim_distortion_and_its_size_limit():
    model = tiny().eval()
    criterion = RateDistortionLoss(LossConfig(lmbda=8.0, metric="ms-ssim"))
    small = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), pytest.raises(HarnessError, match="MS-SSIM needs images of at least 161"):
        criterion(model(small), small)
    x = torch.rand(1, 3, 192, 192)
    with torch.no_grad():
        result = criterion(model(x), x)
    assert 0 < result["ms_ssim"] <= 1
    assert torch.allclose(result["distortion"], 1 - result["ms_ssim"])


def test_invalid_loss_and_config_values():
    with pytest.raises(HarnessError, match="metric"):
        LossConfig(metric="psnr")
    with pytest.raises(HarnessError, match="stage"):
        LossConfig(stage=3)
    with pytest.raises(HarnessError, match="wavelet"):
        replace(get_config("tiny"), wavelet="db4")


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (70, 130)])
def test_compress_decompress_walk_the_forward_path(size):
    """The decoder rebuilds the encoder's reconstruction bit-exactly on both entropy paths; the
    float path equals forward() in eval mode, the integer path stays within its rounding of it."""
    model = tiny().eval()
    model.update(force=True)
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        reference = model(x)["x_hat"].clamp(0, 1)
    for integer in (False, True):
        encoded = model.compress(x, reconstruct=True, integer=integer)
        assert len(encoded["strings"]) == 1 and len(encoded["strings"][0]) == 1  # z and every slice in one stream
        decoded = model.decompress(encoded["strings"], encoded["shape"], encoded["size"], integer=integer)
        assert torch.equal(decoded["x_hat"], encoded["x_hat"])
        if integer:
            assert (decoded["x_hat"] - reference).abs().mean() < 2e-3
        else:
            assert torch.equal(decoded["x_hat"], reference)


def test_residual_block_sums_in_place_only_without_gradients():
    """Our ResidualBlock writes its sum over its own output when no gradient is kept: the very
    values of compressai's block, whose parameters it has; with gradients it is compressai's."""
    from compressai.layers import ResidualBlock as Theirs

    from harness.model.layers import ResidualBlock

    torch.manual_seed(0)
    ours, theirs = ResidualBlock(8, 8), Theirs(8, 8)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8, 12, 10, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    ours.double(), theirs.double()
    with torch.no_grad():
        assert torch.equal(ours(x.double()), theirs(x.double()))  # the integer path's float64
    out = ours(x.double())
    out.sum().backward()  # the in-place LeakyReLU's output is kept for backward: a new sum
    assert out.grad_fn is not None and x.grad is not None


def test_the_wavelet_domain_conv_frees_each_analysis_before_its_synthesis(monkeypatch):
    """Each wavelet buffer of a 3DM-WeConv layer is as large as its input: the channel analysis's
    is freed by the time the spatial synthesis allocates its own (at g_s's peak, which is a
    decode's), the spatial one's holds the filtered bands that the synthesis reads (no second set
    of bands), and the layer's output is what it was."""
    from harness import wavelets
    from harness.model.layers import WaveletDomainConv

    torch.manual_seed(0)
    layer = WaveletDomainConv(16, "5/3", channel_levels=1, spatial_levels=2, hf_kernel=1).eval()
    x = torch.randn(1, 16, 32, 24)
    expected = layer(x).detach()  # with gradients: into new bands, not over the analysis's
    analyses, alive = [], []

    def kept(function):
        def call(*args, **kwargs):
            out = function(*args, **kwargs)
            first = out[0] if isinstance(out, (tuple, list)) else out
            analyses.append(weakref.ref(first.untyped_storage()))
            return out
        return call

    def synthesis(low, highs, *args, **kwargs):
        alive.append([ref() is not None for ref in analyses])
        spatial = analyses[1]()
        alive.append([band.untyped_storage().data_ptr() == spatial.data_ptr() for level in highs for band in level])
        return idwt2(low, highs, *args, **kwargs)

    idwt2 = wavelets.idwt2
    monkeypatch.setattr(wavelets, "channel_dwt", kept(wavelets.channel_dwt))
    monkeypatch.setattr(wavelets, "dwt2", kept(wavelets.dwt2))
    monkeypatch.setattr(wavelets, "idwt2", synthesis)
    with torch.no_grad():
        assert torch.equal(layer(x), expected)
    assert alive == [[False, True], [True] * 6]


def _dispatched(call):
    """The aten ops ``call()`` runs, by name, and its result."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Ops() as ops:
        out = call()
    return ops.names, out


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_normalises_in_place_only_without_gradients(inverse):
    """Our GDN writes the root and the product over the sum when no gradient is kept: compressai's
    values bit for bit (float32, float64, bf16 under autocast as g_a and g_s run), no tensor made
    for either; with gradients, or where the product must widen the dtype, it is compressai's."""
    from compressai.layers import GDN as Theirs

    from harness.model.layers import GDN

    torch.manual_seed(0)
    ours, theirs = GDN(8, inverse=inverse), Theirs(8, inverse=inverse)
    with torch.no_grad():
        ours.gamma.add_(torch.rand_like(ours.gamma) * 0.1)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 12, 10)
    root = "sqrt" if inverse else "rsqrt"
    for dtype, layout in [(torch.float32, torch.contiguous_format), (torch.float64, torch.contiguous_format),
                          (torch.bfloat16, torch.channels_last)]:
        given = x.to(dtype=dtype, memory_format=layout)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            ours.to(dtype if dtype == torch.float64 else torch.float32), theirs.to(ours.beta.dtype)
            names, out = _dispatched(lambda: ours(given))
            assert torch.equal(out, theirs(given)) and out.dtype == dtype
            assert f"{root}_.default" in names and f"{root}.default" not in names
            assert "mul_.Tensor" in names and "mul.Tensor" not in names
    ours.float(), theirs.float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ours(x), theirs(x))  # a float32 x, a bf16 norm: the product is float32
    given = x.clone().requires_grad_()
    out = ours(given)
    out.sum().backward()
    assert torch.equal(out, theirs(x)) and given.grad is not None


def _onednn_convolves_bf16() -> bool:
    from harness.model.layers import _onednn_convolves_bf16

    return _onednn_convolves_bf16()


_NO_BF16_CONVOLUTION = "this CPU's oneDNN does not convolve bf16 (it needs AVX-512 or AVX-NE-CONVERT)"


@pytest.mark.skipif(not _onednn_convolves_bf16(), reason=_NO_BF16_CONVOLUTION)
def test_a_fused_convolution_rounds_its_leaky_relu_once():
    """conv_leaky_relu in bf16 inference: one oneDNN convolution, no LeakyReLU pass; its positive
    outputs are the unfused bits, its negative ones within one bf16 unit in the last place (the
    slope's product rounded once, not twice), channels-last as the unfused output."""
    from torch import nn

    from harness.model.layers import conv_leaky_relu

    torch.manual_seed(0)
    conv, act = nn.Conv2d(16, 24, 3, padding=1), nn.LeakyReLU(inplace=True)
    x = torch.randn(1, 16, 20, 18).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        unfused = act(conv(x))
        names, fused = _dispatched(lambda: conv_leaky_relu(conv, act, x))
    assert "_convolution_pointwise.default" in names and not any("leaky" in name for name in names)
    assert fused.dtype == torch.bfloat16 and fused.is_contiguous(memory_format=torch.channels_last)
    positive = unfused > 0
    assert torch.equal(fused[positive], unfused[positive]) and not torch.equal(fused, unfused)
    ulp = unfused.float().abs() * 2.0**-7  # bf16 keeps 8 significant bits: an ulp is at most |v| / 2^7
    assert ((fused.float() - unfused.float()).abs() <= ulp).all()


@pytest.mark.skipif(not _onednn_convolves_bf16(), reason=_NO_BF16_CONVOLUTION)
@pytest.mark.parametrize("block", ["residual", "stem", "first up", "down", "up"])
def test_bf16_inference_fuses_each_leaky_relu_of_the_transforms_into_its_convolution(block, monkeypatch):
    """g_a's and g_s's blocks under bf16 autocast without gradients run no LeakyReLU pass, and give
    the unfused values within bf16 rounding; in float32, or with gradients, they run as before, bit
    for bit (fusion is for bf16 inference only)."""
    from harness.model import layers

    torch.manual_seed(0)
    module = {"residual": lambda: layers.ResidualBlock(8, 8), "stem": lambda: layers.ResidualBlockWithStride(3, 8, 1),
              "first up": lambda: layers.ResidualBlockUpsample(8, 8, 1),
              "down": lambda: layers.WeConvDown(8, 8, "5/3", 1, 2, 1),
              "up": lambda: layers.WeConvUp(8, 8, "5/3", 1, 2, 1)}[block]().eval()
    x = torch.randn(1, 3 if block == "stem" else 8, 16, 12)
    bf16 = x.to(dtype=torch.bfloat16, memory_format=torch.channels_last)

    def run(given, bits=torch.bfloat16):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bits == torch.bfloat16):
            return _dispatched(lambda: module(given))

    names, fused = run(bf16)
    float_names, in_float = run(x, torch.float32)
    trained = module(x.clone().requires_grad_())
    monkeypatch.setattr(layers, "_fusable", lambda conv, x: False)
    unfused_names, unfused = run(bf16)
    assert any("leaky" in name for name in unfused_names) and not any("leaky" in name for name in names)
    assert torch.allclose(fused.float(), unfused.float(), rtol=2**-5, atol=2**-5)
    assert any("leaky" in name for name in float_names) and torch.equal(in_float, run(x, torch.float32)[1])
    assert torch.equal(trained, in_float)


def test_a_cpu_whose_onednn_cannot_convolve_bf16_applies_the_leaky_relu_apart(monkeypatch):
    """On a CPU without AVX-512 or AVX-NE-CONVERT (an AVX2-only one) oneDNN refuses bf16
    convolutions, fused or not, and torch convolves bf16 on its own path: conv_leaky_relu runs
    the convolution and then the LeakyReLU, the bits of the two apart, instead of failing. Run as
    such a CPU here; on one, as itself."""
    from torch import nn

    from harness.model import layers

    monkeypatch.setattr(layers, "_onednn_convolves_bf16", lambda: False)
    torch.manual_seed(0)
    conv, act = nn.Conv2d(16, 24, 3, padding=1), nn.LeakyReLU(inplace=True)
    x = torch.randn(1, 16, 20, 18).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        apart = act(conv(x))
        names, out = _dispatched(lambda: layers.conv_leaky_relu(conv, act, x))
    assert not any("_convolution_pointwise" in name for name in names) and any("leaky" in name for name in names)
    assert out.dtype == torch.bfloat16 and torch.equal(out, apart)


@pytest.mark.parametrize("layer", ["down", "up"])
def test_3dm_weconv_layers_free_the_wavelet_domain_input_once_analysed(layer):
    """The wavelet-domain conv's input (50 MB of float32 at g_s's last layer on Kodak) is gone by
    the time its subbands are filtered: the layer hands it over, not through Module.__call__,
    whose argument tuple would hold it to the end."""
    from harness.model.layers import WeConvDown, WeConvUp

    torch.manual_seed(0)
    block = (WeConvDown if layer == "down" else WeConvUp)(8, 8, "5/3", 1, 2, 1).eval()
    made_by = block.conv[1] if layer == "up" else block.act  # the module whose output it reads
    inputs, alive = [], []
    made_by.register_forward_hook(lambda module, args, out: inputs.append(weakref.ref(out)))
    block.wavelet_conv.low[0].register_forward_pre_hook(lambda module, args: alive.append(inputs[-1]() is not None))
    with torch.no_grad():
        block(torch.randn(1, 8, 16, 12))
    assert alive == [False]


@pytest.mark.parametrize("layer", ["down", "up"])
@pytest.mark.parametrize("size, layout", [((16, 12), torch.contiguous_format), ((9, 7), torch.channels_last)])
def test_3dm_weconv_layers_add_their_skip_in_place_only_without_gradients(layer, size, layout):
    """A 3DM-WeConv layer writes its residual sum over the wavelet-domain output when no gradient
    is kept (one image-sized tensor fewer; the up-sampling layer's skip added through a view, not a
    shuffled copy): the values of the sum made anew, padded maps and channels-last ones too; with
    gradients, a new sum."""
    from harness.model.layers import WeConvDown, WeConvUp

    torch.manual_seed(0)
    block = (WeConvDown if layer == "down" else WeConvUp)(8, 8, "5/3", 1, 2, 1).eval().to(memory_format=layout)
    x = torch.randn(1, 8, *size).contiguous(memory_format=layout).requires_grad_()
    with torch.no_grad():
        wavelet = block.wavelet_conv(block.act(block.conv(x)))
        expected = wavelet + block.skip(x)
        made, forward = [], block.wavelet_conv.forward  # the layer calls it as a plain method
        block.wavelet_conv.forward = lambda t: made.append(forward(t)) or made[-1]
        out = block(x)
        del block.wavelet_conv.forward
    assert torch.equal(out, expected) and out.data_ptr() == made[0].data_ptr()
    trained = block(x)
    trained.sum().backward()
    assert torch.equal(trained, expected) and x.grad is not None
