"""Codec wrappers for the leaderboard: one class per codec id, one module per family."""

from __future__ import annotations

from harness.codecs.base import Codec, CodecError, CodecUnavailable
from harness.codecs.bpg import BPG
from harness.codecs.ffmpeg import AV1, HEVC, JPEGXL, VVC
from harness.codecs.pillow import JPEG, JPEG2000, WebP
from harness.codecs.vtm import VTM
from harness.errors import HarnessError

CODECS: dict[str, type[Codec]] = {cls.id: cls for cls in (VTM, VVC, BPG, HEVC, AV1, JPEGXL, JPEG2000, WebP, JPEG)}


def codec_class(codec_id: str) -> type[Codec]:
    """The class of a classical codec id (learned codecs come from models folders:
    :mod:`harness.codecs.learned`, which this package does not import, so that a classical
    codec's cell does not load torch's models and compressai)."""
    if codec_id in CODECS:
        return CODECS[codec_id]
    known = ", ".join(sorted(CODECS))
    raise HarnessError(f"unknown codec {codec_id!r}; known codecs: {known} (learned models: --models DIR)")


__all__ = ["CODECS", "Codec", "CodecError", "CodecUnavailable", "codec_class"]
