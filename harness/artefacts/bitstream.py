"""The ``.3dmw`` container of one compressed image (all integers big-endian).

    offset      size  field
    0           4     magic b"3DMW"
    4           1     format version (6)
    5           32    model fingerprint: SHA-256 of config + weights (checkpoint.fingerprint)
    37          4     original image height (>= 1)
    41          4     original image width (>= 1)
    45          4     latent check: CRC-32 of every quantised symbol (z, then each slice, as
                      int32) as the encoder coded them
    49          1     length P of the entropy path's name
    50          P     entropy path (ASCII): which networks predicted every mean and scale.
                      "integer-2" (harness.model.exact.PATH_ID): the integer path, the same
                      bits on every machine; "float": the float networks (CompressAI's
                      baselines, and coding.encode(integer=False) to compare the paths)
    50+P        1     length L of the source Pillow mode name (ASCII, e.g. "RGB", "I;16", "CMYK")
    51+P        L     source mode name (informational: the codec always codes 8-bit RGB)
    51+P+L      1     number S of entropy-coded streams (3DM-WeConvene writes one: z, then
                      every slice in coding order, in a single rANS stream; a CompressAI
                      baseline writes its model's own compress() strings)
    52+P+L      4*S   byte length of each stream
    52+P+L+4S   4     CRC-32 of every byte before it and of the payload
    56+P+L+4S   ...   payload: the S streams back to back

A file coded on the float path decodes right only where the encoder's kernels run (same
thread count, CPU kernels, device): the latent check then tells a wrong decode from an image.
Versions 1 to 5 were earlier layouts of this harness before 1.0; their files are refused in
one line naming their version (re-encode the image).

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
from harness.model.exact import PATH_ID

MAGIC = b"3DMW"
VERSION = 6
FLOAT_PATH = "float"  # the float networks predicted the entropy parameters
ENTROPY_PATHS = (PATH_ID, FLOAT_PATH)
MAX_SIDE = 1 << 16  # larger than any image images.load_rgb accepts along one side
_FIXED = struct.Struct(">4sB32sIII")  # magic, version, fingerprint, height, width, latent check


@dataclass(frozen=True)
class Container:
    fingerprint: str  # 64 hex digits
    height: int
    width: int
    mode: str
    streams: tuple[bytes, ...]
    latent_crc: int  # the encoder's symbol CRC-32
    entropy_path: str  # one of ENTROPY_PATHS

    @property
    def integer_path(self) -> bool:
        """Whether the encoder predicted the entropy parameters on the integer path."""
        return self.entropy_path == PATH_ID


def pack(container: Container) -> bytes:
    mode, path = container.mode.encode("ascii"), container.entropy_path.encode("ascii")
    if len(mode) > 255 or not container.streams or len(container.streams) > 255:
        raise HarnessError("cannot pack container: mode name or stream count out of range")
    if container.entropy_path not in ENTROPY_PATHS:
        raise HarnessError(f"cannot pack container: entropy path {container.entropy_path!r} is none of "
                           f"{', '.join(ENTROPY_PATHS)}")
    header = _FIXED.pack(MAGIC, VERSION, bytes.fromhex(container.fingerprint), container.height, container.width,
                         container.latent_crc)
    header += bytes([len(path)]) + path + bytes([len(mode)]) + mode
    header += struct.pack(f">B{len(container.streams)}I", len(container.streams), *(len(s) for s in container.streams))
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
    # Integrity before version: a version byte is believed only when the file is not a sound
    # current one with that byte alone changed (then the byte is the damage), and, for a version
    # no harness wrote, when its CRC holds under the current layout.
    if 1 <= version < VERSION:
        if _parse(data[:4] + bytes([VERSION]) + data[5:])[1] is None:
            raise HarnessError(f"{name} is corrupt (CRC-32 mismatch)")
        raise HarnessError(f"{name} has format version {version}, written by an earlier harness; "
                           f"this harness reads version {VERSION} (re-encode the image)")
    fields, problem = _parse(data)
    if problem is not None:
        raise HarnessError(f"{name} {problem}")
    if version != VERSION:
        raise HarnessError(f"{name} has format version {version}, unknown to this harness, which reads "
                           f"version {VERSION}")
    digest, height, width, latent_crc, path_bytes, mode_bytes, lengths, payload = fields
    # Checked after the CRC: a well-formed header with these values was written by a bad encoder.
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or not lengths:
        raise HarnessError(f"{name} declares an invalid image size {height}x{width} or no streams")
    try:
        path, mode = path_bytes.decode("ascii"), mode_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise HarnessError(f"{name} has a non-ASCII entropy path or mode name") from None
    if path not in ENTROPY_PATHS:
        raise HarnessError(f"{name} was coded on entropy path {path!r}; this harness decodes "
                           f"{' or '.join(map(repr, ENTROPY_PATHS))}")
    streams, start = [], 0
    for length in lengths:
        streams.append(payload[start : start + length])
        start += length
    return Container(digest.hex(), height, width, mode, tuple(streams), latent_crc, path)


def _parse(data: bytes) -> tuple[tuple | None, str | None]:
    """The header fields and payload of ``data`` read with the current layout, or None and what
    is wrong with it (truncated, padded, or its CRC fails), as the end of a sentence."""
    if len(data) < _FIXED.size + 1:
        return None, f"is truncated ({len(data)} bytes, header needs {_FIXED.size + 1})"
    _, _, digest, height, width, latent_crc = _FIXED.unpack_from(data)
    offset = _FIXED.size
    texts = []
    for _ in range(2):  # the entropy path's name, then the mode's: a length byte and its ASCII
        if len(data) < offset + 1 + data[offset] + 1:
            return None, "is truncated inside its header"
        texts.append(data[offset + 1 : offset + 1 + data[offset]])
        offset += 1 + data[offset]
    count = data[offset]
    offset += 1
    if len(data) < offset + 4 * count + 4:
        return None, "is truncated inside its header"
    lengths = struct.unpack_from(f">{count}I", data, offset)
    offset += 4 * count
    (crc,) = struct.unpack_from(">I", data, offset)
    payload = data[offset + 4 :]
    if len(payload) != sum(lengths):
        return None, f"is truncated or padded: payload has {len(payload)} bytes, header says {sum(lengths)}"
    if zlib.crc32(payload, zlib.crc32(data[:offset])) != crc:
        return None, "is corrupt (CRC-32 mismatch)"
    return (digest, height, width, latent_crc, *texts, lengths, payload), None
