"""Codec wrappers for the leaderboard: one class per codec id, one module per family."""

from __future__ import annotations

from harness.codecs.base import Codec, CodecError, CodecUnavailable
from harness.codecs.bpg import BPG
from harness.codecs.ffmpeg import AV1, HEVC, VVC
from harness.codecs.pillow import JPEG, JPEG2000, WebP
from harness.codecs.vtm import VTM
from harness.errors import HarnessError

CODECS: dict[str, type[Codec]] = {cls.id: cls for cls in (VTM, VVC, BPG, HEVC, AV1, JPEG2000, WebP, JPEG)}


def codec_class(codec_id: str) -> type[Codec]:
    try:
        return CODECS[codec_id]
    except KeyError:
        raise HarnessError(f"unknown codec {codec_id!r}; known codecs: {', '.join(sorted(CODECS))}") from None


__all__ = ["CODECS", "Codec", "CodecError", "CodecUnavailable", "codec_class"]
