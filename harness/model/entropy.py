"""3DWeChARM (paper §III-B, Figs. 5-6) and the ECCV WeChARM, as a CompressAI-style latent codec.

The latent y is taken to the wavelet domain (3D: one channel + one spatial DWT
level, 8 subbands; 2D: one spatial level, 4 subbands), the hyperprior h_a/h_s
codes side information z from all subbands, and the subbands are coded slice by
slice in :attr:`ModelConfig.slices` order. Each slice's ``e_Slice`` network
predicts the Gaussian mean and scale from the hyper features and all previously
coded slices (AttentionNet -> ParamNet), then adds Latent Residual Prediction
(Minnen & Singh 2020) to the dequantised slice.

Every use of the model, training forward, evaluation forward, ``compress`` and
``decompress``, walks the slices through one method, :meth:`WeChARM._walk`;
the uses differ only in how a slice is quantised (noise / rounding / rANS
encode / rANS decode), so the decoder sees exactly the context the encoder saw.

Bitstream: z and then every slice go into ONE rANS stream per image
(:class:`~harness.model.rans.RansWriter`, the bytes compressai's ``BufferedRansEncoder``
writes, from a compact buffer; the decoder pulls symbols from one bounds-checked
:class:`~harness.model.rans.RansReader` slice by slice). A stream
per slice costs a 64-bit coder flush each, about 0.5 % of a low-rate image's bits
for 11 streams.

Latent check: ``compress`` and ``decompress`` both return the CRC-32 of every
quantised symbol (z, then each slice, as int32) per image. The container
carries the encoder's, so a decoder whose entropy model ran differently (other
threads or CPU kernels moved a predicted scale across a table threshold, and
rANS then read the stream with the wrong CDF) notices instead of writing a
wrong image.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import Counter
from typing import Callable

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional
from compressai.latent_codecs import LatentCodec
from compressai.layers import AttentionBlock, conv1x1, conv3x3, subpel_conv3x3
from compressai.ops import quantize_ste
from torch import Tensor, nn

from harness import process_memory, wavelets
from harness.errors import HarnessError
from harness.model import exact, exact_cpu, rans
from harness.model.config import ModelConfig
from harness.model.layers import WeConvDown, WeConvUp, conv, res_group
from harness.model.precision import input_format
from harness.model.rans import RansReader, RansWriter

# Quantises one slice given its predicted mean and scale; returns the dequantised slice.
SliceQuantizer = Callable[[int, Tensor, Tensor], Tensor]
# Hyper features (float64) from which the heap is trimmed after each slice (~3 MP): on Kodak's
# images there is little to return, and faulting it back cost a third of the entropy model's time.
TRIM_BYTES = 32 << 20


def _nothing() -> None:
    pass


def _same(t: Tensor) -> Tensor:
    return t


class NearestScaleGaussian(GaussianConditional):
    """GaussianConditional that codes each scale with the table entry of least expected cost.

    CompressAI's ``build_indexes`` rounds a scale up to the next table entry, so
    every symbol is coded with a too-wide Gaussian: 1.35 % more bits than the
    likelihoods on Kodak for a briefly trained ``tiny`` with 256 log-spaced
    scales. Between entries a < b the cost of coding N(0, s) with a or b, i.e.
    the KL divergence ln(t/s) + s^2/(2t^2) - 1/2, is equal at
    s* = sqrt(2 ln(b/a) / (1/a^2 - 1/b^2)); scales below s* use a, others b.
    That cuts the table overhead to within 0.1 % of the likelihoods.
    """

    def build_indexes(self, scales: Tensor) -> Tensor:
        thresholds = exact.scale_thresholds(self.scale_table).to(device=scales.device, dtype=scales.dtype)
        return torch.bucketize(self.lower_bound_scale(scales).contiguous(), thresholds).int()


class _Tables:
    """One entropy model's rANS tables, as the arrays :class:`harness.model.rans.RansWriter` and
    :class:`~harness.model.rans.RansReader` code with (built once per image)."""

    def __init__(self, model: EntropyModel) -> None:
        self.cdf_array = model.quantized_cdf.int().cpu().numpy()
        self.length_array = model.cdf_length.reshape(-1).int().cpu().numpy()
        self.offset_array = model.offset.reshape(-1).int().cpu().numpy()

    def encode(self, writer: RansWriter, symbols: Tensor, indexes: Tensor) -> None:
        writer.add(symbols.cpu().numpy(), indexes.cpu().numpy(), self.cdf_array, self.length_array, self.offset_array)

    def decode(self, reader: RansReader, indexes: Tensor) -> Tensor:
        values = reader.decode(indexes.cpu().numpy(), self.cdf_array, self.length_array, self.offset_array)
        return torch.from_numpy(values).reshape(indexes.shape)

    def min_bits(self) -> np.ndarray:
        """Per table, the fewest bits any symbol coded with it costs: -log2 of its largest
        quantised probability (every escape costs more than its own probability says)."""
        pmf = np.diff(self.cdf_array.astype(np.int64), axis=1)
        valid = np.arange(pmf.shape[1])[None] < (self.length_array[:, None] - 1)
        largest = np.where(valid, pmf, 0).max(axis=1).clip(1, 1 << rans.PRECISION)
        return rans.PRECISION - np.log2(largest)


class SymbolCRC:
    """CRC-32 of the quantised symbols (int32) of each image of a batch, in the order the rANS
    coder sees them: the latent check of every model, 3DM-WeConvene's and CompressAI's."""

    def __init__(self, batch: int = 1) -> None:
        self.values = [0] * batch

    def update(self, symbols: Tensor) -> None:
        """``symbols``: one row per image of the batch (dim 0), in coding order."""
        for b in range(len(self.values)):
            data = symbols[b].detach().to(torch.int32).cpu().contiguous().numpy().tobytes()
            self.values[b] = zlib.crc32(data, self.values[b])


@exact.register_composite
class AttentionNet(nn.Module):
    """Context fusion of e_Slice: 1x1 in, a residual attention block, 1x1 out (Fig. 6)."""

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__()
        self.inp = conv1x1(channels, inner)
        self.attention = AttentionBlock(inner)
        self.out = conv1x1(inner, channels)

    def forward(self, parts: list[Tensor | exact_cpu.Rounded]) -> Tensor | exact_cpu.Pointwise:
        """Of the channel concatenation of ``parts`` (the hyper features and the coded slices); on
        the integer path of a large latent, deferred to the convolutions that read it (as wide as
        the context, the largest tensor the entropy model would hold: :func:`exact.widen`)."""
        return exact.widen(self.out, self.attention(exact.convolve_parts(self.inp, parts)))


@exact.register_composite
class ParamNet(nn.Module):
    """Three convs with GELUs; kernel sizes per layer (1x1 where the paper saves parameters)."""

    def __init__(self, in_ch: int, out_ch: int, hidden: tuple[int, int], kernels: tuple[int, int, int]) -> None:
        super().__init__()
        widths = (in_ch, *hidden, out_ch)
        layers: list[nn.Module] = []
        for i, kernel in enumerate(kernels):
            layers.append(conv(widths[i], widths[i + 1], kernel))
            if i < 2:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def forward(self, parts: list[Tensor]) -> Tensor:
        """Of the channel concatenation of ``parts``."""
        x = exact.convolve_parts(self.net[0], parts)
        for layer in self.net[1:]:
            x = layer(x)
        return x


@exact.register_composite
class SliceNet(nn.Module):
    """e_Slice: mean and scale of one slice from hyper features + coded slices, and its LRP."""

    def __init__(self, context_ch: int, slice_ch: int, config: ModelConfig) -> None:
        super().__init__()
        self.mean_attention = AttentionNet(context_ch, config.attention_channels)
        self.scale_attention = AttentionNet(context_ch, config.attention_channels)
        self.mean = ParamNet(context_ch, slice_ch, config.param_hidden, config.param_kernels)
        self.scale = ParamNet(context_ch, slice_ch, config.param_hidden, config.param_kernels)
        self.lrp = ParamNet(context_ch + slice_ch, slice_ch, config.param_hidden, config.lrp_kernels)
        self.squash = nn.Tanh()

    def predict(self, hyper_means: Tensor | exact_cpu.Rounded, hyper_scales: Tensor | exact_cpu.Rounded,
                coded: list[Tensor | exact_cpu.Rounded]) -> tuple[Tensor, Tensor, Tensor | exact_cpu.Pointwise]:
        # the scale first: its support (as wide as the context, unless deferred) is freed before the mean's is made
        scale = self.scale([self.scale_attention([hyper_scales, *coded])])
        mean_support = self.mean_attention([hyper_means, *coded])
        return self.mean([mean_support]), scale, mean_support

    def refine(self, mean_support: Tensor | exact_cpu.Pointwise, y_hat: Tensor) -> Tensor:
        return y_hat + 0.5 * self.squash(self.lrp([mean_support, y_hat]))


def hyper_analysis(config: ModelConfig) -> nn.Sequential:
    """h_a: 3DM-WeConv down-sampling from all subbands (4M channels), ResGroup, strided conv to Z."""
    c = config
    return nn.Sequential(
        WeConvDown(4 * c.M, c.N, c.wavelet, c.conv_channel_levels, c.conv_spatial_levels, c.conv_hf_kernel),
        *res_group(c.N, c.res_blocks),
        conv3x3(c.N, c.Z, stride=2),
    )


def hyper_synthesis(config: ModelConfig) -> nn.Sequential:
    """One h_s branch: inverse 3DM-WeConv up-sampling, ResGroup, sub-pixel conv to M hyper features."""
    c = config
    return nn.Sequential(
        WeConvUp(c.Z, c.N, c.wavelet, c.conv_channel_levels, c.conv_spatial_levels, c.conv_hf_kernel),
        *res_group(c.N, c.res_blocks),
        subpel_conv3x3(c.N, c.M, 2),
    )


FLOAT_PRIOR = ("h_s_mean", "h_s_scale", "slice_nets")  # WeChARM's float networks that the integer path stands in for


class _PriorNets(nn.Module):
    """The networks that decide what the decoder reads: both h_s branches and the e_Slice nets."""

    def __init__(self, h_s_mean: nn.Module, h_s_scale: nn.Module, slice_nets: nn.ModuleList) -> None:
        super().__init__()
        self.h_s_mean, self.h_s_scale, self.slice_nets = h_s_mean, h_s_scale, slice_nets

    def to(self, device: torch.device) -> "_PriorNets":  # type: ignore[override]
        if next(self.slice_nets.buffers()).device == device:  # walking every module costs 30 ms a call
            return self
        return super().to(device)


class WeChARM(LatentCodec):
    """Hyperprior + wavelet-domain channel-wise autoregressive latent codec (3D or 2D per config).

    ``compress``/``decompress`` run the prior networks on the integer entropy path
    (:mod:`harness.model.exact`, built by :meth:`build_integer_path`) unless
    ``integer=False``: the float path (containers naming "float"), which decodes
    right only where the encoder's kernels ran."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.h_a = hyper_analysis(config)
        self.h_s_mean = hyper_synthesis(config)
        self.h_s_scale = hyper_synthesis(config)
        self.entropy_bottleneck = EntropyBottleneck(config.Z)
        self.gaussian_conditional = NearestScaleGaussian(None)
        self.slice_nets = nn.ModuleList()
        coded = 0
        for parts in config.slices:
            width = sum(stop - start for _, start, stop in parts)
            self.slice_nets.append(SliceNet(config.M + coded, width, config))
            coded += width
        self._integer: list[_PriorNets] = []  # a list keeps it out of the module tree and the state dict

    def build_integer_path(self, saved: dict[str, Tensor] | None = None) -> None:
        """(Re)build the integer prior networks from the current weights (deterministic in them),
        a network at a time, each one's float64 temporaries handed back before the next: glibc
        keeps them, and the build is the peak of a coding process's load (the default model's:
        1.38-1.48 GB converted at once, 1.38-1.40 GB so, six loads each). Or take them from
        ``saved``, the :meth:`integer_state` a checkpoint carries for these weights, without
        converting (:func:`harness.model.exact.load_converted` checks its tensors)."""
        built = []
        for net in (self.h_s_mean, self.h_s_scale, *self.slice_nets):
            built.append(exact.convert(net, fill=saved is None))
            process_memory.trim()
        mean, scale, *slices = built
        nets = _PriorNets(mean, scale, nn.ModuleList(slices))
        if saved is not None:
            exact.load_converted(nets, saved)
        self._integer[:] = [nets]

    def _built(self) -> _PriorNets:
        """The integer prior networks; a one-line error when they were never built."""
        if not self._integer:
            raise HarnessError("the integer entropy path is not built: call update() (checkpoints do)")
        return self._integer[0]

    def keep_gemm_weights(self) -> None:
        """Prepare the integer prior networks' weights for this CPU's GEMM now and keep them
        (:meth:`harness.model.exact.IntegerMatrix.keep_operand`) until the path is rebuilt, for a
        process that codes many images with this model on the CPU. A process that codes once
        prepares each convolution's weights as it runs it and frees them after."""
        for module in self._built().modules():
            if isinstance(module, exact.IntegerMatrix):
                module.keep_operand()

    def integer_state(self) -> dict[str, Tensor]:
        """The integer prior networks' tensors, packed for a checkpoint to carry
        (:func:`harness.model.exact.pack`, read by :meth:`build_integer_path`)."""
        return exact.pack(self._built())

    def drop_float_prior(self) -> None:
        """Free the float networks the integer path stands in for when coding: both h_s branches
        and every e_Slice (61.5 M of the default model's 75.7 M parameters, 246 MB). For a process
        that codes on the integer path only, once it has the model's fingerprint: training, the
        float path and the state dict need them, and refuse in one line once they are dropped."""
        self._built()  # the integer networks must be there to stand in for them
        for name in FLOAT_PRIOR:
            delattr(self, name)

    def _prior_nets(self, integer: bool, device: torch.device) -> _PriorNets:
        if not integer and "slice_nets" not in self._modules:
            raise HarnessError("this model's float entropy networks were dropped for coding on the integer path")
        if not integer:
            return _PriorNets(self.h_s_mean, self.h_s_scale, self.slice_nets)
        return self._built().to(device)

    # ---- wavelet domain -------------------------------------------------------------

    def analysis(self, y: Tensor) -> dict[str, Tensor]:
        """Subbands of y, keyed by name (3D: LLL..HHH; 2D: LL, LH, HL, HH)."""
        if self.config.entropy == "3d":
            return dict(wavelets.dwt3(y, self.config.wavelet, channel_levels=1, spatial_levels=1, channel_dim=1))
        low, highs = wavelets.dwt2(y, self.config.wavelet, 1)
        lh, hl, hh = highs[0]
        return {"LL": low, "LH": lh, "HL": hl, "HH": hh}

    def synthesis(self, subbands: dict[str, Tensor]) -> Tensor:
        if self.config.entropy == "3d":
            return wavelets.idwt3(subbands, self.config.wavelet, channel_levels=1, spatial_levels=1, channel_dim=1)
        return wavelets.idwt2(subbands["LL"], [(subbands["LH"], subbands["HL"], subbands["HH"])], self.config.wavelet)

    def split(self, y: Tensor) -> tuple[list[Tensor], Tensor]:
        """y's slices in coding order and the hyper-latent z from all its subbands."""
        return self.split_subbands(self.analysis(y))

    def split_subbands(self, subbands: dict[str, Tensor]) -> tuple[list[Tensor], Tensor]:
        """:meth:`split` of y's :meth:`analysis`; ``subbands`` is emptied before h_a runs, so that
        h_a runs beside the latent's slices and its own input only. That input is assembled in
        the dtype and layout h_a runs in (bf16: half the bytes, and no second copy to cast)."""
        names = self.config.subbands
        first = subbands[names[0]]
        dtype, layout = input_format(self.h_a, first.dtype)
        shape = (first.shape[0], sum(subbands[name].shape[1] for name in names), *first.shape[2:])
        joined = torch.empty(shape, dtype=dtype, device=first.device, memory_format=layout)
        offset = 0
        for name in names:  # the concatenation along channels, cast as h_a would cast it
            width = subbands[name].shape[1]
            joined[:, offset : offset + width].copy_(subbands[name])
            offset += width
        slices = self.slices_of(subbands)
        subbands.clear()
        return slices, self.h_a(joined)

    def slices_of(self, subbands: dict[str, Tensor]) -> list[Tensor]:
        """The latent's slices in coding order, each its own copy: the subbands of an analysis
        are views of one buffer, which a view kept as a slice would hold until the last slice is
        coded; copies are freed one by one as the slices are coded."""
        return [torch.cat([subbands[name][:, a:b] for name, a, b in parts], dim=1) for parts in self.config.slices]

    def subbands_of(self, slices: list[Tensor]) -> dict[str, Tensor]:
        """Inverse of :meth:`slices_of` (also regroups per-slice likelihoods per subband). Empties
        ``slices``: each is freed once the subbands it holds parts of are formed, and a subband
        coded as one whole slice is that slice, so the latent is held about once, not twice."""
        pending = Counter(name for parts in self.config.slices for name, _, _ in parts)
        pieces: dict[str, list[Tensor]] = {name: [] for name in self.config.subbands}
        subbands: dict[str, Tensor] = {}
        for parts in self.config.slices:
            tensor, offset = slices.pop(0), 0
            for name, a, b in parts:
                pieces[name].append(tensor[:, offset : offset + b - a])
                offset += b - a
                pending[name] -= 1
                if not pending[name]:
                    chunks = pieces.pop(name)
                    subbands[name] = torch.cat(chunks, dim=1) if len(chunks) > 1 else chunks[0]
            del tensor
        return {name: subbands[name] for name in self.config.subbands}

    # ---- the one slice walk ---------------------------------------------------------

    def _walk(self, z_hat: Tensor, quantize: SliceQuantizer, integer: bool = False,
              keep: torch.dtype | None = None, frugal: bool = False) -> list[Tensor]:
        """Code every slice in order; returns the reconstructed slices (with LRP) in ``keep``, or
        none (``keep`` None: an encoder that does not reconstruct). On the integer path the
        networks take float64 values and run their wavelets portably, and the context they read
        is held as the integers they read (:func:`exact.hold`); ``frugal`` (a process coding
        within a memory budget): the heap is trimmed before each of their convolutions."""
        nets = self._prior_nets(integer, z_hat.device)
        # the integer path's CPU kernels read channels-last rows; rANS gives NCHW, which they
        # would copy on every later slice's read of it. Layout changes no value on this path.
        def layout(t: Tensor) -> Tensor:
            return t.contiguous(memory_format=torch.channels_last) if integer else t

        hold = exact.hold if integer else _same
        with wavelets.portable() if integer else contextlib.nullcontext(), \
                exact_cpu.frugal() if frugal else contextlib.nullcontext():
            z_hat = layout(z_hat.double() if integer else z_hat)
            hyper_means, hyper_scales = nets.h_s_mean(z_hat), nets.h_s_scale(z_hat)
            # a slice's networks' buffers go back to the system: else the next slice's land beside them
            # (frugal: each convolution trims already)
            trim = process_memory.trim if not frugal and 8 * hyper_means.numel() > TRIM_BYTES else _nothing
            hyper_means, hyper_scales = hold(hyper_means), hold(hyper_scales)
            context: list = []
            coded: list[Tensor] = []
            for index, net in enumerate(nets.slice_nets):
                mean, scale, support = net.predict(hyper_means, hyper_scales, context)
                trim()
                slice_hat = net.refine(support, layout(quantize(index, mean, scale)))
                del mean, scale, support  # before the next slice's networks
                context.append(hold(slice_hat))
                if keep is not None:
                    coded.append(slice_hat.to(keep))
                del slice_hat
        return coded

    # ---- training / evaluation ------------------------------------------------------

    def forward(self, y: Tensor) -> dict:
        """Likelihoods per subband and z, and y_hat.

        Rates use additive uniform noise in training and rounding of y - mean in
        evaluation (GaussianConditional's own modes). What the synthesis sees is
        round(y - mean) + mean with a straight-through gradient in both modes, as
        in the authors' code, so training and decoding see the same values.
        """
        y_slices, z = self.split(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians()
        z_hat = quantize_ste(z - medians) + medians
        likelihoods: list[Tensor] = []

        def quantize(index: int, mean: Tensor, scale: Tensor) -> Tensor:
            _, slice_likelihoods = self.gaussian_conditional(y_slices[index], scale, mean)
            likelihoods.append(slice_likelihoods)
            return quantize_ste(y_slices[index] - mean) + mean

        y_hat = self.synthesis(self.subbands_of(self._walk(z_hat, quantize, keep=z_hat.dtype)))
        per_subband = self.subbands_of(likelihoods)
        per_subband["z"] = z_likelihoods
        return {"likelihoods": per_subband, "y_hat": y_hat}

    # ---- real bitstreams (compressai's rANS coder) -----------------------------------

    def compress(self, y: Tensor, integer: bool = True) -> dict:
        """rANS-code y: ``strings`` = [[one bytes object per batch element]] holding z and then
        every slice in coding order; ``shape`` = z's H x W; ``y_hat`` = exactly what
        :meth:`decompress` will rebuild; ``latent_crc`` = per image, the CRC-32 of its symbols.
        ``integer``: predict means and scales on the integer path (else the float networks)."""
        return self.compress_slices(*self.split(y), integer)

    def compress_slices(self, y_slices: list[Tensor], z: Tensor, integer: bool = True,
                        reconstruct: bool = True, frugal: bool = False) -> dict:
        """:meth:`compress` of y as :meth:`split` gives it, so that a caller can free y first; each
        entry of ``y_slices`` is set to None once coded. Without ``reconstruct``, no ``y_hat``;
        ``frugal``: within a memory budget, at some cost in time (:meth:`_walk`)."""
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_tables, y_tables = _Tables(eb), _Tables(gc)
        batch, dtype = z.shape[0], y_slices[0].dtype
        writers = [RansWriter() for _ in range(batch)]
        medians = eb._get_medians().detach().reshape(1, -1, 1, 1)
        z_symbols = eb.quantize(z, "symbols", medians)
        z_indexes = eb._build_indexes(z.size())
        crc = SymbolCRC(batch)
        crc.update(z_symbols)
        for b, writer in enumerate(writers):
            z_tables.encode(writer, z_symbols[b], z_indexes[b])
        z_hat = eb.dequantize(z_symbols, medians)

        def quantize(index: int, mean: Tensor, scale: Tensor) -> Tensor:
            y_slice, y_slices[index] = y_slices[index], None  # coded: freed before the next slice's networks
            symbols = gc.quantize(y_slice, "symbols", mean)
            indexes = gc.build_indexes(scale)
            crc.update(symbols)
            for b, writer in enumerate(writers):
                y_tables.encode(writer, symbols[b], indexes[b])
            return gc.dequantize(symbols, mean)

        coded = self._walk(z_hat, quantize, integer, dtype if reconstruct else None, frugal)
        out = {"strings": [[writer.flush() for writer in writers]],  # before the synthesis: their buffers freed
               "shape": tuple(z.shape[-2:]), "latent_crc": crc.values}
        if reconstruct:
            out["y_hat"] = self.synthesis(self.subbands_of(coded))
        return out

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int], integer: bool = True,
                   frugal: bool = False) -> dict:
        """Inverse of :meth:`compress`: every slice is decoded from already-decoded slices only;
        ``latent_crc`` is the CRC-32 of the symbols decoded, to compare with the encoder's;
        ``frugal`` as for :meth:`compress_slices`."""
        if len(strings) != 1:
            raise ValueError(f"expected 1 stream per image, got {len(strings)}")
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_tables, y_tables = _Tables(eb), _Tables(gc)
        decoders = [RansReader(string) for string in strings[0]]
        z_indexes = eb._build_indexes((1, self.config.Z, *shape))[0]
        device = eb.quantiles.device  # rANS decodes on the CPU; the networks run where the model is
        z_symbols = torch.stack([z_tables.decode(decoder, z_indexes) for decoder in decoders]).to(device)
        crc = SymbolCRC(len(decoders))
        crc.update(z_symbols)
        medians = eb._get_medians().detach().reshape(1, -1, 1, 1)
        z_hat = eb.dequantize(z_symbols, medians)

        def quantize(index: int, mean: Tensor, scale: Tensor) -> Tensor:
            indexes = gc.build_indexes(scale)
            symbols = torch.stack([y_tables.decode(decoder, indexes[b]) for b, decoder in enumerate(decoders)])
            symbols = symbols.to(device)
            crc.update(symbols)
            return gc.dequantize(symbols, mean)

        coded = self._walk(z_hat, quantize, integer, self.entropy_bottleneck.quantiles.dtype, frugal)
        return {"y_hat": self.synthesis(self.subbands_of(coded)), "latent_crc": crc.values}

    def min_stream_bytes(self, shape: tuple[int, int]) -> int:
        """Bytes below which no stream of a z of ``shape`` can be: each symbol costs at least
        -log2 of the largest probability of any table it may use (z: its channel's; a slice's:
        any scale's), less what rANS's integer rounding can save (under 2^-15 of the state, at
        least 2^31: 2^-15 / ln 2 bits a symbol); the flush writes the last 64 bits of state."""
        slack = 2.0**-15 / np.log(2)
        rows, cols = shape
        z_bits = (_Tables(self.entropy_bottleneck).min_bits() - slack).clip(0).sum() * rows * cols
        y_bits = max(_Tables(self.gaussian_conditional).min_bits().min() - slack, 0) * 64 * self.config.M * rows * cols
        return max(8, int((z_bits + y_bits) // 8))
