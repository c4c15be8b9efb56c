"""Learned codecs: a folder of ``train-sweep`` checkpoints as one RD curve.

Every ``<metric>-<λ>.pt`` in a models folder (with its JSON card) is one point
of the curve, its ladder value being λ. Cells run the real pipeline —
``harness compress`` / ``harness decompress`` and their rANS streams —
and the measured bytes are the ``.3dmw`` container's. Cells run on the
leaderboard's ``CellWorker`` actors, so the per-process cache below keeps every
checkpoint an actor has loaded, with its entropy model's GEMM weights prepared
once (``keep_gemm_weights``); loading happens before the encode timer starts,
and on a GPU actor the model runs on the GPU. The transforms run in the
precision the run was planned with (``--precision``; a setting of the curve's
config, so part of its hash, and a column of results.parquet).

The curve travels to the cells as a typed record, :class:`CurveSettings` (built
here, where the curves are planned, and carried by its ``CodecConfig``). Each cell codes
within the curve's memory budget (``--max-memory`` or the variant's
:func:`~harness.artefacts.memory.cell_budget`): whole, or g_a/g_s in tiles, or a one-line
error naming the image when even the smallest tile does not fit.

The codec id is the network variant (``3dm-weconvene``, ``tiny``, the
ablations) or ``compressai-<name>`` for a CompressAI baseline, whose curve may mix
widths (the zoo's qualities 1-5 are narrower than 6-8: the curve's ``params`` is its
largest model's); the config name is the sweep folder's name. Each row's
``codec_version`` ends with the SHA-256 prefix of that point's checkpoint, so
retraining one λ recomputes only that λ's cells and adding a λ only its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

import torch

from harness import __version__
from harness.artefacts.bitstream import VERSION, unpack
from harness.artefacts.checkpoint import load_fingerprinted
from harness.artefacts.coding import decode, encode, memory_plan, profile
from harness.artefacts.memory import cell_budget
from harness.codecs.base import Codec, CodecUnavailable
from harness.codecs.config import CodecConfig
from harness.codecs.curve import CurveSettings, SweepPoint, cards_by_curve, config_name, point_key
from harness.errors import HarnessError
from harness.hashing import sha256_file
from harness.model.precision import set_precision
from harness.zoo.registry import codec_id, serves_codec
from harness.zoo.variants import DEFAULT_VARIANT

# Per worker process: checkpoint sha256 -> (model, fingerprint), and fingerprint -> model.
_MODELS: dict[str, tuple[Any, str]] = {}
_BY_FINGERPRINT: dict[str, Any] = {}


class Learned(Codec):
    """One sweep of 3DM-WeConvene (or an ablation) checkpoints; quality = λ."""

    id: ClassVar[str] = DEFAULT_VARIANT
    description: ClassVar[str] = "3DM-WeConvene checkpoints from train-sweep (real .3dmw bitstreams)"

    def __init__(self, settings: Mapping[str, Any], curve: CurveSettings) -> None:
        super().__init__(settings)
        self.curve = curve

    @staticmethod
    def serves(codec_id: str) -> bool:
        """Whether ``codec_id`` names a network variant (the id of a learned curve)."""
        return serves_codec(codec_id)

    def probe(self) -> str:
        missing = [point.checkpoint for point in self.curve.points if not point.checkpoint.is_file()]
        if missing:
            raise CodecUnavailable(f"checkpoint {missing[0]} is missing")
        return f"harness {__version__}; torch {torch.__version__}; container v{VERSION}"

    def version_at(self, version: str, quality: float) -> str:
        return f"{version}; checkpoint {self.curve.point(quality).sha256[:12]}"

    @property
    def params(self) -> float | None:
        return float(self.curve.params)

    @property
    def precision(self) -> str | None:
        return self.curve.precision

    @property
    def device(self) -> str | None:
        return f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else None

    def prepare(self, quality: float) -> None:
        self._model(quality)

    def _model(self, quality: float) -> tuple[Any, str]:
        point = self.curve.point(quality)
        path, digest = point.checkpoint, point.sha256
        if digest not in _MODELS:
            if sha256_file(path) != digest:
                raise HarnessError(f"{path} changed since the run was planned; rerun the leaderboard")
            model, model_digest = load_fingerprinted(path)
            if codec_id(model.config.variant) != self.curve.variant:
                raise HarnessError(f"{path} holds variant {model.config.variant!r}, not one of this curve's "
                                   f"({self.curve.variant})")
            torch.set_num_threads(max(1, int(self.settings.get("threads", 1))))
            _MODELS[digest] = (model, model_digest)
            _BY_FINGERPRINT[_MODELS[digest][1]] = model
            if torch.cuda.is_available():
                model.cuda()
            elif model.integer_path:  # its entropy model codes on the CPU: its GEMMs' weights, prepared once per actor
                model.keep_gemm_weights()
            set_precision(model, self.precision)
        return _MODELS[digest]

    def encode(self, rgb: np.ndarray, quality: float, workdir: Path) -> bytes:
        model, digest = self._model(quality)
        # Tiles within the cell's memory, or a one-line cell error, not a killed worker.
        self.tile = memory_plan(model, *rgb.shape[:2], self.subject, self.curve.max_memory, "g_a").tile
        with torch.inference_mode():
            return encode(model, rgb, digest=digest, tile=self.tile)

    def estimates(self, rgb: np.ndarray, quality: float) -> dict[str, float]:
        if self.tile is not None:  # the image did not fit the cell's memory whole: no whole forward pass either
            return {}
        seen = profile(self._model(quality)[0], rgb)
        return {"est_bits": seen.est_bits, "pad_bits": seen.pad_bits, "enc_net_s": seen.g_a_s, "dec_net_s": seen.g_s_s}

    def decode(self, bitstream: bytes, height: int, width: int, workdir: Path) -> np.ndarray:
        # The container names the model that wrote it: decode with that one.
        fingerprint = unpack(bitstream).fingerprint
        if fingerprint not in _BY_FINGERPRINT:
            for point in self.curve.points:
                self._model(point.lmbda)
        if fingerprint not in _BY_FINGERPRINT:
            raise HarnessError(f"no checkpoint of this sweep is model {fingerprint[:16]}, which wrote the bitstream")
        model = _BY_FINGERPRINT[fingerprint]
        self.tile = memory_plan(model, height, width, f"{self.subject}'s bitstream", self.curve.max_memory, "g_s").tile
        with torch.inference_mode():
            return decode(model, bitstream, digest=fingerprint, tile=self.tile)


def curve_settings(models_dir: Path, precision: str, max_memory: int | None = None) -> list[tuple[str, CurveSettings]]:
    """Per (variant, metric) of the checkpoints in ``models_dir``: its config name and its
    :class:`CurveSettings` (every checkpoint with its SHA-256; transforms run in ``precision``,
    fp32 or bf16; each cell within ``max_memory`` bytes, by default the variant's
    :func:`~harness.artefacts.memory.cell_budget`). :func:`sweep_configs`
    makes them codec configs."""
    groups = cards_by_curve(models_dir)
    settings = []
    for (variant, metric), cards in sorted(groups.items()):
        by_key = {point_key(card.lmbda): SweepPoint(card.lmbda, checkpoint.resolve(), sha256_file(checkpoint))
                  for card, checkpoint in cards}
        points = tuple(sorted(by_key.values(), key=lambda point: point.lmbda))
        curve = CurveSettings(variant, metric, max(card.params for card, _ in cards), precision, points,
                              max_memory or cell_budget(variant))
        settings.append((config_name(Path(models_dir), metric, len(groups)), curve))
    return settings


def sweep_configs(models_dir: Path, precision: str, max_memory: int | None = None) -> list[CodecConfig]:
    """One :class:`~harness.codecs.config.CodecConfig` per (variant, metric) of the checkpoints in
    ``models_dir``, its :class:`~harness.codecs.curve.CurveSettings` planned here, whose transforms
    run in ``precision`` (fp32 or bf16); its ladder is the sweep's λs."""
    return [CodecConfig(curve.variant, name, curve.ladder, "{}", curve)
            for name, curve in curve_settings(models_dir, precision, max_memory)]


def instance(config: CodecConfig) -> Codec:
    """The codec ``config`` sets up: a learned curve's, or else the classical one."""
    return config.instance() if config.curve is None else Learned(config.settings, config.curve)
