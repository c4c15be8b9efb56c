"""Image files the harness must read but Pillow cannot write, built byte by byte for the tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def png16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit RGB (3 channels) or RGBA (4) PNG, written chunk by chunk: Pillow cannot write one."""
    height, width, channels = samples.shape
    rows = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path
