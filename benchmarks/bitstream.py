"""Compress / decompress speed of the default model vs CompressAI's ELIC (issue 5).

Both models freshly initialised (seed 0) with entropy tables updated, kodim01
(768 x 512), same process, same intra-op threads, interleaved. Goal: our time
<= 1.2x ELIC's each way. Our time is broken down by forward hooks and wrappers
(the breakdown's bookkeeping costs microseconds per call):

* ``g_a`` / ``g_s``: analysis and synthesis transforms;
* ``h_a`` / ``h_s``: hyperprior transforms (both h_s branches);
* ``e_Slice``: the slice nets of 3DWeChARM (AttentionNets, ParamNets, LRP);
* ``rANS``: compressai's coder calls, the conversion of symbols/indexes and
  entropy tables to Python lists, and the stream flush;
* ``other``: the rest (wavelet transforms of y, Gaussian scale indexes,
  quantisation, concatenations).

It also counts each direction's arithmetic (convolution and matmul FLOPs, by
``torch.utils.flop_counter``): on a CPU, where both models are compute-bound,
the FLOP ratio is the time ratio an implementation can at best reach.

Usage: PYTHONPATH=. python benchmarks/bitstream.py [--threads N] [--repeats R] [--image PATH]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from compressai.models import Elic2022Official
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from harness.artefacts.coding import to_tensor
from harness.model.network import WeConvene
from harness.model import entropy as entropy_module
from harness.pixels.images import load_rgb
from harness.zoo.variants import get_config

KODIM01 = Path(__file__).resolve().parents[1] / "datasets" / "kodak" / "kodim01.png"


class Breakdown:
    """Seconds spent per part of our model, from module hooks and wrapped rANS helpers."""

    def __init__(self, model: WeConvene) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        codec = model.latent_codec
        parts = {"g_a": [model.g_a], "g_s": [model.g_s], "h_a": [codec.h_a], "h_s": [codec.h_s_mean, codec.h_s_scale]}
        parts["e_Slice AttentionNets"] = [m for n in codec.slice_nets for m in (n.mean_attention, n.scale_attention)]
        parts["e_Slice ParamNets"] = [m for n in codec.slice_nets for m in (n.mean, n.scale)]
        parts["e_Slice LRP"] = [n.lrp for n in codec.slice_nets]
        for name, modules in parts.items():
            for module in modules:
                self._hook(module, name)
        self._wrap_rans()

    def _hook(self, module: torch.nn.Module, name: str) -> None:
        starts: list[float] = []
        module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
        module.register_forward_hook(lambda *_: self._add(name, starts.pop()))

    def _add(self, name: str, start: float) -> None:
        self.seconds[name] += time.perf_counter() - start

    def _timed(self, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._add("rANS", start)

        return wrapper

    def _wrap_rans(self) -> None:
        tables = entropy_module._Tables
        for name in ("__init__", "encode", "decode"):
            setattr(tables, name, self._timed(getattr(tables, name)))
        flush_owner = self

        class TimedEncoder(entropy_module.BufferedRansEncoder):
            def flush(self):
                start = time.perf_counter()
                try:
                    return super().flush()
                finally:
                    flush_owner._add("rANS", start)

        entropy_module.BufferedRansEncoder = TimedEncoder

    def take(self, total: float) -> dict[str, float]:
        parts = dict(self.seconds)
        parts["other"] = total - sum(parts.values())
        self.seconds.clear()
        return parts


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def fresh_models() -> tuple[WeConvene, Elic2022Official]:
    """The default 3DM-WeConvene and CompressAI's ELIC, each initialised from seed 0, tables updated."""
    torch.manual_seed(0)
    ours = WeConvene(get_config("3dm-weconvene")).eval()
    ours.update(force=True)
    torch.manual_seed(0)
    elic = Elic2022Official().eval()
    elic.update(force=True)
    return ours, elic


def _fused_conv_flop(x_shape, w_shape, bias, padding, stride, dilation, groups, *post_op, out_shape=None, **kwargs):
    return conv_flop_count(x_shape, w_shape, out_shape)


def gflop(function, *args) -> float:
    """Convolution and matmul GFLOP of one call, convolutions with a fused activation included
    (bf16 inference runs each convolution followed by a LeakyReLU as one oneDNN op, which torch's
    counter does not know: harness.model.layers.conv_leaky_relu)."""
    fused = {torch.ops.mkldnn._convolution_pointwise: _fused_conv_flop}
    with FlopCounterMode(display=False, custom_mapping=fused) as counter:
        function(*args)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per model and direction (median)")
    parser.add_argument("--image", type=Path, default=KODIM01)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s), {args.image.name}")

    ours, elic = fresh_models()
    breakdown = Breakdown(ours)
    x = to_tensor(load_rgb(args.image).pixels)

    def ours_round_trip():
        encoded, t_enc = timed(ours.compress, x)
        enc_parts = breakdown.take(t_enc)
        decoded, t_dec = timed(ours.decompress, encoded["strings"], encoded["shape"], encoded["size"])
        return (t_enc, enc_parts, t_dec, breakdown.take(t_dec), len(encoded["strings"][0][0]))

    def elic_round_trip():
        encoded, t_enc = timed(elic.compress, x)
        _, t_dec = timed(elic.decompress, encoded["strings"], encoded["shape"])
        return t_enc, t_dec

    with torch.no_grad():
        small = x[..., :64, :64]
        ours.decompress(**ours.compress(small))  # warm-up: allocator, kernels
        warm = elic.compress(small)
        elic.decompress(warm["strings"], warm["shape"])
        breakdown.take(0.0)
        enc_ours = ours.compress(x)
        enc_elic = elic.compress(x)
        flops_ours = (gflop(ours.compress, x), gflop(ours.decompress, enc_ours["strings"], enc_ours["shape"],
                                                     enc_ours["size"]))
        flops_elic = (gflop(elic.compress, x), gflop(elic.decompress, enc_elic["strings"], enc_elic["shape"]))
        breakdown.take(0.0)
        runs_ours, runs_elic = [], []
        for _ in range(args.repeats):
            runs_ours.append(ours_round_trip())
            runs_elic.append(elic_round_trip())

    def median(values):
        return statistics.median(values)

    enc, dec = median(r[0] for r in runs_ours), median(r[2] for r in runs_ours)
    elic_enc, elic_dec = median(r[0] for r in runs_elic), median(r[1] for r in runs_elic)
    params = sum(p.numel() for p in ours.parameters()) / 1e6, sum(p.numel() for p in elic.parameters()) / 1e6
    print(f"3DM-WeConvene ({params[0]:.1f} M params): encode {enc:.2f} s, decode {dec:.2f} s "
          f"({runs_ours[0][4]} bytes, untrained)")
    print(f"ELIC official ({params[1]:.1f} M params): encode {elic_enc:.2f} s, decode {elic_dec:.2f} s")
    print(f"ratio ours/ELIC: encode {enc / elic_enc:.2f}x, decode {dec / elic_dec:.2f}x (goal <= 1.2x)")
    print(f"arithmetic: ours {flops_ours[0]:.0f} / {flops_ours[1]:.0f} GFLOP, ELIC {flops_elic[0]:.0f} / "
          f"{flops_elic[1]:.0f} GFLOP (encode / decode); ratio encode {flops_ours[0] / flops_elic[0]:.2f}x, "
          f"decode {flops_ours[1] / flops_elic[1]:.2f}x")
    for label, index, total in (("encode", 1, enc), ("decode", 3, dec)):
        run = min(runs_ours, key=lambda r: abs(r[index - 1] - total))
        parts = ", ".join(f"{k} {v:.2f} s ({100 * v / run[index - 1]:.0f}%)" for k, v in run[index].items())
        print(f"  ours {label} breakdown: {parts}")


if __name__ == "__main__":
    main()
