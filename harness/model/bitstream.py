"""The ``.3dmw`` container of one compressed image (all integers big-endian).

    offset  size  field
    0       4     magic b"3DMW"
    4       1     format version (2)
    5       32    model fingerprint: SHA-256 of config + weights (checkpoint.fingerprint)
    37      4     original image height (>= 1)
    41      4     original image width (>= 1)
    45      1     length L of the source Pillow mode name (ASCII, e.g. "RGB", "I;16", "CMYK")
    46      L     source mode name (informational: the codec always codes 8-bit RGB)
    46+L    1     number S of entropy-coded streams (version 2 models write one: z, then
                  every slice in coding order, in a single rANS stream)
    47+L    4*S   byte length of each stream
    47+L+4S 4     CRC-32 of every byte before it and of the payload
    51+L+4S ...   payload: the S streams back to back

The CRC covers header and payload, so any truncation or bit flip is caught
before the rANS decoder sees a byte. Errors raise HarnessError with one line.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from harness.errors import HarnessError

MAGIC = b"3DMW"
VERSION = 2  # 1: a separate rANS stream for z and for each slice
MAX_SIDE = 1 << 16  # larger than any image images.load_rgb accepts along one side
_FIXED = struct.Struct(">4sB32sIIB")


@dataclass(frozen=True)
class Container:
    fingerprint: str  # 64 hex digits
    height: int
    width: int
    mode: str
    streams: tuple[bytes, ...]


def pack(container: Container) -> bytes:
    mode = container.mode.encode("ascii")
    if len(mode) > 255 or not container.streams or len(container.streams) > 255:
        raise HarnessError("cannot pack container: mode name or stream count out of range")
    header = _FIXED.pack(MAGIC, VERSION, bytes.fromhex(container.fingerprint), container.height, container.width,
                         len(mode))
    header += mode + struct.pack(f">B{len(container.streams)}I", len(container.streams),
                                 *(len(s) for s in container.streams))
    payload = b"".join(container.streams)
    crc = zlib.crc32(payload, zlib.crc32(header))
    return header + struct.pack(">I", crc) + payload


def unpack(data: bytes, name: str = "bitstream") -> Container:
    """Parse and verify ``data``; every inconsistency is a HarnessError naming ``name``."""
    if not data:
        raise HarnessError(f"{name} is empty")
    if len(data) < 4 or data[:4] != MAGIC:
        raise HarnessError(f"{name} is not a 3DM-WeConvene bitstream (bad magic bytes)")
    if len(data) < _FIXED.size:
        raise HarnessError(f"{name} is truncated ({len(data)} bytes, header needs {_FIXED.size})")
    _, version, digest, height, width, mode_len = _FIXED.unpack_from(data)
    if version != VERSION:
        raise HarnessError(f"{name} has format version {version}; this harness reads version {VERSION}")
    offset = _FIXED.size
    if len(data) < offset + mode_len + 1:
        raise HarnessError(f"{name} is truncated inside its header")
    mode_bytes = data[offset : offset + mode_len]
    count = data[offset + mode_len]
    offset += mode_len + 1
    if len(data) < offset + 4 * count + 4:
        raise HarnessError(f"{name} is truncated inside its header")
    lengths = struct.unpack_from(f">{count}I", data, offset)
    offset += 4 * count
    (crc,) = struct.unpack_from(">I", data, offset)
    payload = data[offset + 4 :]
    if len(payload) != sum(lengths):
        raise HarnessError(f"{name} is truncated or padded: payload has {len(payload)} bytes, header says {sum(lengths)}")
    if zlib.crc32(payload, zlib.crc32(data[:offset])) != crc:
        raise HarnessError(f"{name} is corrupt (CRC-32 mismatch)")
    # Checked after the CRC: a well-formed header with these values was written by a bad encoder.
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or count == 0:
        raise HarnessError(f"{name} declares an invalid image size {height}x{width} or no streams")
    try:
        mode = mode_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise HarnessError(f"{name} has a non-ASCII mode name") from None
    streams, start = [], 0
    for length in lengths:
        streams.append(payload[start : start + length])
        start += length
    return Container(digest.hex(), height, width, mode, tuple(streams))
