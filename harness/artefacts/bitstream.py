"""The ``.3dmw`` container of one compressed image (all integers big-endian).

    offset  size  field
    0       4     magic b"3DMW"
    4       1     format version (5)
    5       32    model fingerprint: SHA-256 of config + weights (checkpoint.fingerprint)
    37      4     original image height (>= 1)
    41      4     original image width (>= 1)
    45      4     latent check: CRC-32 of every quantised symbol (z, then each slice, as
                  int32) as the encoder coded them
    49      1     length L of the source Pillow mode name (ASCII, e.g. "RGB", "I;16", "CMYK")
    50      L     source mode name (informational: the codec always codes 8-bit RGB)
    50+L    1     number S of entropy-coded streams (3DM-WeConvene writes one: z, then
                  every slice in coding order, in a single rANS stream; a CompressAI
                  baseline writes its model's own compress() strings)
    51+L    4*S   byte length of each stream
    51+L+4S 4     CRC-32 of every byte before it and of the payload
    55+L+4S ...   payload: the S streams back to back

Version 5 is version 3's layout with the integer entropy path: the encoder
predicted every mean and scale on :mod:`harness.model.exact`, so any machine
decodes the same symbols. Version 4 was the same on that path's first recipe
(``integer-1``, 12-bit weights): its files are refused with the harness they need,
since this one computes other means and scales. Version 3 files were coded with the float networks
(3DM-WeConvene before the integer path, CompressAI's baselines always) and decode
(on that path, checked by their latent CRC) where the encoder's kernels run; version 2 (no latent check: the mode length follows the width at
offset 45) decodes unchecked, on the float path too.

The last CRC covers header and payload, so any truncation or bit flip is caught
before the rANS decoder sees a byte. The latent check catches what no damage to
the file explains: a decoder whose entropy model computed other scales than the
encoder's (other threads, CPU kernels or device) reads the stream with other
CDFs and decodes other symbols (see :mod:`harness.artefacts.coding`).

Errors raise HarnessError with one line.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from harness.errors import HarnessError

MAGIC = b"3DMW"
VERSION = 5  # 1: a stream per slice; 2: no latent check; 3: float entropy networks; 4: integer-1
READABLE = (2, 3, VERSION)
RETIRED = {4: "integer-1"}  # version -> the integer path it needs (harness.model.exact.EARLIER_PATHS)
INTEGER_PATH_SINCE = 4  # the first version whose means and scales come from harness.model.exact
FLOAT_PATH = 3  # written only on request (harness.artefacts.coding.encode(integer=False)), to compare the paths
WRITABLE = (FLOAT_PATH, VERSION)
MAX_SIDE = 1 << 16  # larger than any image images.load_rgb accepts along one side
_FIXED = {2: struct.Struct(">4sB32sIIB"), 3: struct.Struct(">4sB32sIIIB"), VERSION: struct.Struct(">4sB32sIIIB")}


@dataclass(frozen=True)
class Container:
    fingerprint: str  # 64 hex digits
    height: int
    width: int
    mode: str
    streams: tuple[bytes, ...]
    latent_crc: int | None  # the encoder's symbol CRC-32; None in a version-2 file
    version: int = VERSION

    @property
    def integer_path(self) -> bool:
        """Whether the encoder predicted the entropy parameters on the integer path."""
        return self.version >= INTEGER_PATH_SINCE


def pack(container: Container) -> bytes:
    mode = container.mode.encode("ascii")
    if len(mode) > 255 or not container.streams or len(container.streams) > 255:
        raise HarnessError("cannot pack container: mode name or stream count out of range")
    if container.version not in WRITABLE or container.latent_crc is None:
        raise HarnessError(f"cannot pack container: this harness writes versions {WRITABLE}, with the latent check")
    header = _FIXED[container.version].pack(MAGIC, container.version, bytes.fromhex(container.fingerprint), container.height,
                                  container.width, container.latent_crc, len(mode))
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
    if len(data) < 5:
        raise HarnessError(f"{name} is truncated ({len(data)} bytes, no format version)")
    version = data[4]
    # Integrity before version: a version byte this harness cannot read is believed only when the
    # file's CRC holds under the current layout (version 4's too); otherwise the byte itself is
    # the likeliest damage, and the file is merely corrupt.
    layout = version if version in READABLE else VERSION
    fields, consistent = _parse(data, layout, name)
    if not consistent:
        raise HarnessError(f"{name} is corrupt (CRC-32 mismatch)")
    if version in RETIRED:
        raise HarnessError(f"{name} has format version {version}, coded on the integer entropy path "
                           f"{RETIRED[version]!r}, which this harness replaced: decode it with a harness from "
                           f"before format version {VERSION}")
    if version not in READABLE:
        raise HarnessError(f"{name} has format version {version}; this harness reads versions "
                           f"{', '.join(map(str, READABLE))}")
    digest, height, width, latent_crc, mode_bytes, lengths, payload = fields
    count = len(lengths)
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
    return Container(digest.hex(), height, width, mode, tuple(streams), latent_crc, version)


def _parse(data: bytes, layout: int, name: str) -> tuple[tuple, bool]:
    """The header fields and payload of ``data`` read with ``layout``'s header, and whether its
    CRC holds. Truncation is an error naming ``name``."""
    fixed = _FIXED[layout]
    if len(data) < fixed.size:
        raise HarnessError(f"{name} is truncated ({len(data)} bytes, header needs {fixed.size})")
    if layout == 2:
        _, _, digest, height, width, mode_len = fixed.unpack_from(data)
        latent_crc = None
    else:
        _, _, digest, height, width, latent_crc, mode_len = fixed.unpack_from(data)
    offset = fixed.size
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
    consistent = zlib.crc32(payload, zlib.crc32(data[:offset])) == crc
    return (digest, height, width, latent_crc, mode_bytes, lengths, payload), consistent
