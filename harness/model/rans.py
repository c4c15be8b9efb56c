"""compressai's rANS streams (``BufferedRansEncoder.flush`` output): a compact writer and a
bounds-checked reader.

compressai's ``BufferedRansEncoder`` takes Python lists (36 bytes a symbol while a call lasts)
and holds every symbol until ``flush`` as a 6-byte struct in a vector that doubles as it grows,
then flushes into a buffer of 4 bytes a symbol: ~15 bytes a symbol at its peak, 0.47 GB for a 6 MP
image's 31.5 M symbols and 2.4 GB for an 8K one's. :class:`RansWriter` writes the same bytes
(``tests/test_model_bitstream.py`` compares them) from the symbols and table indexes as numpy
arrays of the narrowest integer type that holds them (2 bytes a symbol on a normal latent),
flushing into pieces of the output as it goes.

compressai's ``RansDecoder`` reads its stream through a raw pointer with no bounds check:
a stream shorter than its symbols need (a crafted or altered file whose CRC was
recomputed) makes it read past the buffer, into other memory or out of the process's
mapping (SIGSEGV). Padding cannot make that safe: an escape symbol's bypass runs read a
number of words that the state itself decides. This reader decodes the same symbols as
``RansDecoder.decode_stream`` (compressai's 64-bit rANS, 16-bit precision, 4-bit bypass
chunks; ``tests/test_model_bitstream.py`` round-trips real streams through it) and stops
with a one-line error where the stream ends or holds what no encoder writes. It takes
numpy arrays, not the Python lists the C++ coder converts, so it is also faster and smaller.
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError
from harness.kernels import jit

PRECISION = 16  # compressai's probability precision (bits)
BYPASS_BITS = 4  # bits of one bypass chunk
MAX_BYPASS_CHUNKS = 8  # the encoder escapes a 32-bit value: at most 8 chunks of 4 bits
_OK, _ENDED, _LONG_ESCAPE, _BAD_INDEX = 0, 1, 2, 3
_REASONS = {
    _ENDED: "its entropy-coded stream ends before the symbols its header declares",
    _LONG_ESCAPE: "its entropy-coded stream holds an escape longer than any encoder writes",
    _BAD_INDEX: "a table index out of range",
}


@jit()
def _decode(words, position, state, indexes, cdfs, lengths, offsets, out):
    """Decode ``len(indexes)`` symbols from ``words[position:]``; returns (position, state, status)."""
    low = np.uint64(1) << np.uint64(31)  # RANS64_L
    mask = np.uint64((1 << PRECISION) - 1)
    chunk_mask = np.uint64((1 << BYPASS_BITS) - 1)
    count = np.int64(words.shape[0])
    for i in range(indexes.shape[0]):
        table = indexes[i]
        if table < 0 or table >= cdfs.shape[0]:
            return position, state, _BAD_INDEX
        size = lengths[table]
        cum = state & mask
        s = 0
        while s < size - 2 and np.uint64(cdfs[table, s + 1]) <= cum:
            s += 1
        start, freq = np.uint64(cdfs[table, s]), np.uint64(cdfs[table, s + 1] - cdfs[table, s])
        state = freq * (state >> np.uint64(PRECISION)) + (state & mask) - start
        if state < low:
            if position >= count:
                return position, state, _ENDED
            state = (state << np.uint64(32)) | np.uint64(words[position])
            position += 1
        value = np.int64(s)
        if s == size - 2:  # escape: the value follows in 4-bit chunks
            chunks = 0
            more = True
            raw = np.uint64(0)
            j = 0
            while more or j < chunks:
                val = state & chunk_mask
                state = state >> np.uint64(BYPASS_BITS)
                if state < low:
                    if position >= count:
                        return position, state, _ENDED
                    state = (state << np.uint64(32)) | np.uint64(words[position])
                    position += 1
                if more:
                    chunks += np.int64(val)
                    more = val == chunk_mask
                    if chunks > MAX_BYPASS_CHUNKS:
                        return position, state, _LONG_ESCAPE
                else:
                    raw |= val << np.uint64(BYPASS_BITS * j)
                    j += 1
            signed = np.int64(raw) if raw < np.uint64(1 << 31) else np.int64(raw) - (1 << 32)
            value = signed >> 1
            if signed & 1:
                value = -value - 1
            else:
                value += size - 2
        out[i] = value + offsets[table]
    return position, state, _OK


def tables_fit(cdfs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> bool:
    """Whether every CDF's declared length lies within its row and each row has a length and an
    offset: what the reader (and compressai's coder) index by without checking."""
    rows = len(cdfs)
    return len(lengths) == rows and len(offsets) == rows and bool(((lengths >= 2) & (lengths <= cdfs.shape[1])).all())


_WORDS = 1 << 18  # output words a flush writes per call (a symbol writes at most 1 + 2 + 8 of them)


@jit()
def _encode(symbols, indexes, cdfs, lengths, offsets, state, stop, out):
    """Put ``symbols[:stop]`` from the last backwards (rANS codes in reverse), as compressai's
    flush puts them; the words it emits go into ``out`` in emission order. Stops early when ``out``
    has less room than one more symbol may need; returns (symbols left, state, words written)."""
    low = np.uint64(1) << np.uint64(31)  # RANS64_L
    chunk_mask = (1 << BYPASS_BITS) - 1
    written = 0
    i = stop
    while i > 0 and written + 3 + MAX_BYPASS_CHUNKS <= out.shape[0]:
        i -= 1
        table = indexes[i]
        max_value = np.int64(lengths[table]) - 2
        value = np.int64(symbols[i]) - np.int64(offsets[table])
        if value < 0 or value >= max_value:  # escape: the raw value in 4-bit chunks, then their count
            raw = -2 * value - 1 if value < 0 else 2 * (value - max_value)
            chunks = 0
            while (raw >> (chunks * BYPASS_BITS)) != 0:
                chunks += 1
            for j in range(chunks - 1, -2, -1):  # the raw chunks, most significant first; then the count
                bits = np.uint64(chunks if j < 0 else (raw >> (j * BYPASS_BITS)) & chunk_mask)
                limit = ((low >> np.uint64(PRECISION)) << np.uint64(32)) << np.uint64(PRECISION - BYPASS_BITS)
                if state >= limit:
                    out[written] = np.uint32(state & np.uint64(0xFFFFFFFF))
                    written += 1
                    state = state >> np.uint64(32)
                state = (state << np.uint64(BYPASS_BITS)) | bits
            value = max_value
        start = np.uint64(cdfs[table, value])
        freq = np.uint64(cdfs[table, value + 1] - cdfs[table, value])
        if state >= ((low >> np.uint64(PRECISION)) << np.uint64(32)) * freq:
            out[written] = np.uint32(state & np.uint64(0xFFFFFFFF))
            written += 1
            state = state >> np.uint64(32)
        state = ((state // freq) << np.uint64(PRECISION)) + (state % freq) + start
    return i, state, written


def _range(values: np.ndarray) -> tuple[int, int]:
    """The smallest and largest of ``values`` (0, 0 when empty)."""
    return (int(values.min()), int(values.max())) if values.size else (0, 0)


def _narrow(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """``values``, all within ``low..high``, in the narrowest integer type that holds them (table
    indexes of 256 scales in one byte: unsigned)."""
    for kind in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        if np.iinfo(kind).min <= low and high <= np.iinfo(kind).max:
            return values.astype(kind)
    return values.astype(np.int64)


class RansWriter:
    """One stream written as compressai's ``BufferedRansEncoder`` writes it: runs of symbols, each
    with its table indexes and tables (:meth:`add`), coded in reverse at :meth:`flush`."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []

    def add(self, symbols: np.ndarray, indexes: np.ndarray, cdfs: np.ndarray, lengths: np.ndarray,
            offsets: np.ndarray) -> None:
        """Buffer ``symbols`` coded with the tables ``indexes`` select (compressai's table layout)."""
        symbols, indexes = np.asarray(symbols).reshape(-1), np.asarray(indexes).reshape(-1)
        if symbols.shape != indexes.shape:
            raise ValueError(f"{symbols.size} symbols with {indexes.size} table indexes")
        (first, last), (low, high) = _range(indexes), _range(symbols)
        if indexes.size and not 0 <= first <= last < len(cdfs):
            raise HarnessError(_REASONS[_BAD_INDEX])
        if max(-low, high) >= 1 << 30:  # its escape would need more than the 8 chunks a reader takes
            raise HarnessError(f"a latent symbol of {max(-low, high)} is beyond what rANS codes (2^30)")
        self._runs.append((_narrow(symbols, low, high), _narrow(indexes, first, last), (cdfs, lengths, offsets)))

    def flush(self) -> bytes:
        """The stream: the final state (two words), then the words the symbols emitted, last first."""
        state = np.uint64(1 << 31)  # RANS64_L
        pieces = []
        while self._runs:
            symbols, indexes, (cdfs, lengths, offsets) = self._runs.pop()
            left = symbols.size
            while left:
                out = np.empty(_WORDS, dtype=np.uint32)
                left, state, written = _encode(symbols, indexes, cdfs, lengths, offsets, state, left, out)
                pieces.append(out[:written])
        emitted = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.uint32)
        head = np.array([int(state) & 0xFFFFFFFF, int(state) >> 32], dtype=np.uint32)
        return np.concatenate([head, emitted[::-1]]).astype("<u4", copy=False).tobytes()


class StreamError(HarnessError):
    """The stream cannot have come from compressai's encoder with these tables (the message
    says what is wrong with it; the caller adds the file's name and the likely cause)."""


class RansReader:
    """One stream, read symbol run by symbol run (``decode`` continues where the last call stopped)."""

    def __init__(self, stream: bytes) -> None:
        whole = len(stream) // 4 * 4  # the encoder writes whole 32-bit words; a ragged tail is not read
        self.words = np.frombuffer(stream[:whole], dtype="<u4")
        if len(self.words) < 2:
            raise StreamError(_REASONS[_ENDED])
        self.state = np.uint64(int(self.words[0]) | int(self.words[1]) << 32)
        self.position = 2

    def decode(self, indexes: np.ndarray, cdfs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The symbols coded with the tables ``indexes`` select (int32, compressai's table layout)."""
        out = np.empty(indexes.shape, dtype=np.int32)
        flat = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        position, state, status = _decode(self.words, np.int64(self.position), self.state, flat, cdfs, lengths,
                                          offsets, out.reshape(-1))
        if status != _OK:
            raise StreamError(_REASONS[status])
        self.position, self.state = int(position), np.uint64(state)
        return out


class CheckedCoder:
    """compressai's entropy-coder interface (``EntropyModel.entropy_coder``) decoding through
    :class:`RansReader`. Set on a CompressAI model's entropy models, it bounds their decoding
    as the reader bounds 3DM-WeConvene's; encoding stays compressai's own."""

    def __init__(self, coder) -> None:
        self._coder = coder
        self.name = coder.name

    @property
    def _encoder(self):  # compressai's GaussianMixtureConditional calls the encoder directly
        return self._coder._encoder

    @property
    def _decoder(self) -> "CheckedCoder":  # ... and the decoder likewise
        return self

    def encode_with_indexes(self, *args, **kwargs):
        return self._coder.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, stream: bytes, indexes: list[int], cdfs: list[list[int]], lengths: list[int],
                            offsets: list[int]) -> list[int]:
        """What ``RansDecoder.decode_with_indexes`` returns for a stream compressai wrote."""
        int32 = np.int32
        return RansReader(stream).decode(np.asarray(indexes, dtype=int32), np.asarray(cdfs, dtype=int32),
                                         np.asarray(lengths, dtype=int32), np.asarray(offsets, dtype=int32)).tolist()
