"""Codec wrappers for the leaderboard: one class per codec id, one module per family."""

from __future__ import annotations

from harness.codecs.base import Codec, CodecError, CodecUnavailable
from harness.codecs.bpg import BPG
from harness.codecs.ffmpeg import AV1, HEVC, JPEGXL, VVC
from harness.codecs.learned import Learned
from harness.codecs.pillow import JPEG, JPEG2000, WebP
from harness.codecs.vtm import VTM
from harness.errors import HarnessError

CODECS: dict[str, type[Codec]] = {cls.id: cls for cls in (VTM, VVC, BPG, HEVC, AV1, JPEGXL, JPEG2000, WebP, JPEG)}


def codec_class(codec_id: str) -> type[Codec]:
    """The class of a classical codec id, or :class:`Learned` for a network variant name."""
    if codec_id in CODECS:
        return CODECS[codec_id]
    if Learned.serves(codec_id):
        return Learned
    known = ", ".join(sorted(CODECS))
    raise HarnessError(f"unknown codec {codec_id!r}; known codecs: {known} (learned models: --models DIR)")


__all__ = ["CODECS", "Codec", "CodecError", "CodecUnavailable", "codec_class"]
