"""``harness compress`` / ``harness decompress``: one image <-> one ``.3dmw`` container.

``--precision`` chooses how g_a, h_a and g_s run (:mod:`harness.model.precision`):
bf16 where the hardware runs it fast, else fp32. A file decodes in either
precision, since the entropy path is exact in both; only g_s's rounding differs,
so the pixels equal the encoder's reconstruction when both sides use the same one.

The model pads the image to its stride and the decoder crops back to the size
in the header; the decoder refuses a container written by another model
(fingerprints differ) before touching the entropy-coded streams, and refuses
an image whose decoded symbols differ from the encoder's (the container's
latent check). 3DM-WeConvene's means and scales come from the integer entropy
path (:mod:`harness.model.exact`), the same bits on every machine; the container
names the path it was coded on. Files coded with the float networks (CompressAI's
baselines, or ``encode(integer=False)``) can round differently on another machine,
thread count or oneDNN kernel, and rANS then decodes garbage. The check makes such
a decode an error, never an image.

Sizes are checked before anything of their size is allocated: the image's pixel count
against ``max_pixels`` (from the image file's or the container's header), each stream's
length against the least any stream of that many symbols needs, and the memory coding
needs against ``max_memory`` or what the machine has (:mod:`harness.artefacts.memory`):
g_a and g_s then run in tiles (:mod:`harness.model.tiling`) as large as that memory allows,
which changes neither the file's format nor, beyond float rounding, its contents.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.artefacts.bitstream import FLOAT_PATH, Container, pack, unpack
from harness.artefacts.checkpoint import fingerprint, load_fingerprinted
from harness.artefacts.config import CompressConfig, DecompressConfig
from harness.artefacts.memory import MemoryPlan, plan_memory
from harness.atomic import check_output, write_atomic
from harness.errors import HarnessError
from harness.model.exact import PATH_ID
from harness.model.layers import as_float
from harness.model.network import WeConvene
from harness.model.precision import set_precision
from harness.model.rans import StreamError
from harness.model.tiling import alignment
from harness.pixels.images import MAX_PIXELS, check_pixels, image_size, load_rgb, save_png

# What explains symbols other than the encoder's on the integer entropy path, where every machine
# decodes the same ones (and a stream that ends too early): the file or the model changed.
ALTERED = ("altered after encoding (CRC recomputed), or decoded by a different entropy model "
           "(harness or checkpoint version)")


def image_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W uint8 (a copy, 3 bytes a pixel: an image's array may be
    read-only): what the models code, scaled to [0, 1] as they read it (:func:`harness.model.layers.as_float`)."""
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)[None]


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1]."""
    return as_float(image_tensor(pixels))


def to_pixels(x_hat: torch.Tensor) -> np.ndarray:
    """1 x 3 x H x W in [0, 1] -> H x W x 3 uint8 (round to nearest). In place: one float copy
    of a large image less at the decoder's peak."""
    return x_hat[0].mul_(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().contiguous().numpy()


def memory_plan(model: WeConvene, height: int, width: int, what: str, budget: int | None,
                transform: str) -> MemoryPlan:
    """The tile (or none) that coding ``what`` with ``model`` within ``budget`` (None: what the machine
    has available) takes; ``transform`` is the one that runs tiled, ``"g_a"`` (compress) or ``"g_s"``."""
    halo = getattr(model, "halos", None)  # CompressAI's baselines are not tiled
    device = next(model.parameters()).device
    return plan_memory(model, height, width, what, budget, halo and halo[transform == "g_s"],
                       alignment(model.config) if halo else 0, device, transform)


def encode(model: WeConvene, pixels: np.ndarray, mode: str = "RGB", digest: str | None = None,
           integer: bool | None = None, tile: int | None = None) -> bytes:
    """Container bytes for one RGB image, on the model's integer entropy path where it has one.
    ``integer=False`` predicts the entropy parameters with the float networks and writes a
    file naming that path, which decodes right only under the encoder's thread count, CPU kernels and
    device: for comparing the two paths (and all CompressAI baselines can do)."""
    return encode_reconstruct(model, pixels, mode, digest, integer, reconstruct=False, tile=tile)[0]


def encode_reconstruct(model: WeConvene, pixels: np.ndarray, mode: str = "RGB", digest: str | None = None,
                       integer: bool | None = None, reconstruct: bool = True,
                       tile: int | None = None) -> tuple[bytes, np.ndarray | None]:
    """:func:`encode`, and the image the decoder will produce (when ``reconstruct``); ``tile``:
    g_a and g_s in tiles of that many pixels a side (:func:`memory_plan`)."""
    integer = model.integer_path if integer is None else integer
    device = next(model.parameters()).device
    encoded = model.compress(image_tensor(pixels).to(device), reconstruct=reconstruct, integer=integer, tile=tile)
    streams = tuple(strings[0] for strings in encoded["strings"])
    height, width = pixels.shape[:2]
    path = PATH_ID if integer else FLOAT_PATH
    data = pack(Container(digest or fingerprint(model), height, width, mode, streams, encoded["latent_crc"][0], path))
    return data, to_pixels(encoded["x_hat"]) if reconstruct else None


@dataclass(frozen=True)
class Profile:
    """What one forward pass of the model says of an image: the bits its likelihoods estimate,
    the part of them spent on the padding to its stride, and the seconds of the analysis
    transform g_a and of the synthesis g_s (the network's share of an encode and of a decode)."""

    est_bits: float
    pad_bits: float
    g_a_s: float
    g_s_s: float


def profile(model: WeConvene, pixels: np.ndarray) -> Profile:
    """One forward pass, g_a and g_s timed by hooks. The padding's share weights each latent
    position's bits by the part of its footprint (padded size / latent size, per axis) that lies
    outside the image."""
    height, width = pixels.shape[:2]
    padded = (math.ceil(height / model.stride) * model.stride, math.ceil(width / model.stride) * model.stride)
    device = next(model.parameters()).device
    seconds: dict[str, float] = {}

    def timer(name: str):
        def start(module, inputs):
            _synchronize(device)
            seconds[name] = -time.perf_counter()

        def stop(module, inputs, output):
            _synchronize(device)
            seconds[name] += time.perf_counter()
        return start, stop

    hooks = []
    for name in ("g_a", "g_s"):
        start, stop = timer(name)
        hooks += [getattr(model, name).register_forward_pre_hook(start),
                  getattr(model, name).register_forward_hook(stop)]
    try:
        with torch.inference_mode():
            likelihoods = model(to_tensor(pixels).to(device))["likelihoods"]
    finally:
        for hook in hooks:
            hook.remove()
    total = padding = 0.0
    for tensor in likelihoods.values():
        bits = -torch.log2(tensor.float()).sum(dim=(0, 1)).cpu()  # per latent position
        inside = [((size - torch.arange(count) * (full / count)).clamp(0, full / count) / (full / count))
                  for size, full, count in zip((height, width), padded, bits.shape)]
        total += float(bits.sum())
        padding += float((bits * (1 - inside[0][:, None] * inside[1][None, :])).sum())
    return Profile(total, padding, seconds["g_a"], seconds["g_s"])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(device)


def decode(model: WeConvene, data: bytes, name: str = "bitstream", digest: str | None = None,
           max_pixels: int = MAX_PIXELS, tile: int | None = None) -> np.ndarray:
    """H x W x 3 uint8 image from container bytes written by the same model (at most ``max_pixels``;
    ``tile``: g_s in tiles of that many pixels a side)."""
    return decode_checked(model, checked(model, data, name, digest, max_pixels), name, tile)


def decode_checked(model: WeConvene, container: Container, name: str = "bitstream",
                   tile: int | None = None) -> np.ndarray:
    """:func:`decode` of a container :func:`checked` has passed."""
    size = (container.height, container.width)
    shape = (math.ceil(container.height / model.stride), math.ceil(container.width / model.stride))
    try:
        decoded = model.decompress([[s] for s in container.streams], shape, size, integer=container.integer_path,
                                   tile=tile)
    except StreamError as error:
        raise HarnessError(f"{name}: {error}: {ALTERED}") from None
    if decoded["latent_crc"][0] != container.latent_crc:
        raise HarnessError(f"{name}: decoded latent differs from the encoder's: {_latent_cause(container)}")
    return to_pixels(decoded["x_hat"])


def checked(model: WeConvene, data: bytes, name: str = "bitstream", digest: str | None = None,
            max_pixels: int = MAX_PIXELS) -> Container:
    """The container of ``data``, refused in one line unless ``model`` can decode it: the model that
    wrote it, its stream count and entropy path, at most ``max_pixels``, streams long enough for its size."""
    container = unpack(data, name)
    expected = digest or fingerprint(model)
    if container.fingerprint != expected:
        raise HarnessError(
            f"{name} was encoded by model {container.fingerprint[:16]}, "
            f"but the checkpoint given is model {expected[:16]}"
        )
    if len(container.streams) != model.stream_count:
        raise HarnessError(f"{name} has {len(container.streams)} entropy-coded streams, "
                           f"the model codes {model.stream_count}")
    if container.integer_path and not model.integer_path:
        raise HarnessError(f"{name} was coded on entropy path {container.entropy_path!r}, which this model "
                           f"({model.config.variant}) does not have")
    check_pixels(container.width, container.height, max_pixels, name)
    size = (container.height, container.width)
    for stream, least in zip(container.streams, model.min_stream_bytes(size)):
        if len(stream) < least:
            raise HarnessError(f"{name}: an entropy-coded stream of {len(stream)} bytes, but a {container.width}x"
                               f"{container.height} image's needs at least {least} with this model: {ALTERED}")
    return container


def _latent_cause(container: Container) -> str:
    if container.integer_path:  # the same symbols on every machine: the file or the model changed
        return ALTERED
    return ("a file coded with float entropy networks: decoded under other thread "
            f"counts, CPU kernels or device than the encoder's, or {ALTERED}")


def run_compress(config: CompressConfig) -> dict:
    check_output(config.out, {"input image": config.image, "model": config.checkpoint})
    width, height = image_size(config.image)  # sizes from the header, before any pixel or the model
    check_pixels(width, height, config.max_pixels, f"cannot code image {config.image}")
    model, digest = load_fingerprinted(config.checkpoint, float_prior=False)  # it codes on the integer path only
    precision = set_precision(model, config.precision)
    plan = memory_plan(model, height, width, str(config.image), config.max_memory, "g_a")
    _notice("compress", plan.notice)
    image = load_rgb(config.image, config.max_pixels)
    _notice("compress", image.notice and f"{config.image}: {image.notice}")
    data = encode(model, image.pixels, image.source_mode, digest, tile=plan.tile)
    write_atomic(config.out, lambda p: p.write_bytes(data), make_parents=False)
    bpp = 8 * len(data) / (image.height * image.width)
    tiles = f", tiles of {plan.tile} px" if plan.tile else ""
    print(f"{config.out}: {len(data)} bytes, {bpp:.4f} bpp ({image.width}x{image.height}, {precision}{tiles})")
    return {"bytes": len(data), "bpp": bpp, "precision": precision, "tile": plan.tile}


def run_decompress(config: DecompressConfig) -> None:
    check_output(config.out, {"input bitstream": config.bitstream, "model": config.checkpoint})
    try:
        data = config.bitstream.read_bytes()
    except OSError as error:
        raise HarnessError(f"cannot read {config.bitstream}: {error.strerror or error}") from None
    name = str(config.bitstream)
    container = unpack(data, name)  # reject damaged files before loading the model
    check_pixels(container.width, container.height, config.max_pixels, name)
    # a file coded on the integer path decodes without the float entropy networks
    model, digest = load_fingerprinted(config.checkpoint, float_prior=not container.integer_path)
    precision = set_precision(model, config.precision)
    container = checked(model, data, name, digest, config.max_pixels)  # before any tiling notice
    plan = memory_plan(model, container.height, container.width, name, config.max_memory, "g_s")
    _notice("decompress", plan.notice)
    pixels = decode_checked(model, container, name, plan.tile)
    write_atomic(config.out, lambda p: save_png(pixels, p), make_parents=False)
    tiles = f", tiles of {plan.tile} px" if plan.tile else ""
    print(f"{config.out}: {pixels.shape[1]}x{pixels.shape[0]} ({precision}{tiles})")


def _notice(command: str, notice: str | None) -> None:
    if notice:
        print(f"harness {command}: notice: {notice}", file=sys.stderr)
