"""The Ray actors that run a leaderboard's learned cells. A module of its own, so that the
workers of classical cells (:func:`harness.leaderboard.cells.evaluate_cell` as a Ray task)
import neither the learned codec nor, through it, torch's models and compressai."""

from __future__ import annotations

from typing import Any

from harness.codecs import learned
from harness.codecs.config import CodecConfig
from harness.leaderboard.cells import evaluate_cell


class CellWorker:
    """Ray actor for learned-codec cells: the models it loads (``harness.codecs.learned``'s
    per-process cache) stay loaded for every later cell it gets."""

    def evaluate(self, image_bytes: bytes, name: str, codec: CodecConfig, quality: float,
                 metrics: tuple[str, ...], bitstream: bytes | None, crop: bool) -> dict[str, Any]:
        return evaluate_cell(image_bytes, name, codec, quality, metrics, bitstream, crop, learned.instance)
