"""Real bitstreams: round trips, the container's defences, input conversions."""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from harness.artefacts.bitstream import unpack
from harness.artefacts.checkpoint import fingerprint, load_checkpoint
from harness.artefacts.coding import decode, encode, encode_reconstruct, to_pixels, to_tensor
from harness.cli import main
from harness.errors import HarnessError
from harness.model import rans
from harness.model.precision import set_precision
from harness.model.rans import RansWriter
from harness.pixels.images import load_rgb


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(path), "--seed", "0"]) == 0
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    """The checkpoint as `harness compress`/`decompress` run it: transforms in the default precision."""
    model = load_checkpoint(checkpoint)
    set_precision(model, "auto")
    return model


@pytest.fixture(scope="module")
def kodim(kodak_dir):
    return load_rgb(kodak_dir / "kodim23.png").pixels


def _image(kodim: np.ndarray, height: int, width: int) -> np.ndarray:
    tiled = np.tile(kodim, (height // kodim.shape[0] + 1, width // kodim.shape[1] + 1, 1))
    return np.ascontiguousarray(tiled[:height, :width])


def test_the_rans_writer_writes_compressais_bytes(monkeypatch):
    """The harness's rANS writer (2 bytes a symbol buffered, against compressai's ~15 at its
    peak) writes the stream compressai's BufferedRansEncoder writes: two runs with their own
    tables, escapes of both signs up to 7 chunks (compressai's limit), flushed a few words a call."""
    from compressai.ans import BufferedRansEncoder

    rng = np.random.default_rng(0)
    z_tables = (np.array([[0, 20000, 60000, 65535, 65536], [0, 30000, 65535, 65536, 65536]], dtype=np.int32),
                np.array([5, 4], dtype=np.int32), np.array([-1, 0], dtype=np.int32))
    y_tables = (np.array([[0, 1, 65535, 65536]], dtype=np.int32), np.array([4], dtype=np.int32),
                np.array([3], dtype=np.int32))
    runs = []
    for tables, count in ((z_tables, 3000), (y_tables, 2000)):
        symbols = rng.integers(-2, 6, count).astype(np.int32)
        symbols[::97] = rng.integers(-(2**27), 2**27, len(symbols[::97]))
        runs.append((symbols, rng.integers(0, len(tables[0]), count).astype(np.int32), tables))
    reference = BufferedRansEncoder()
    writer = RansWriter()
    for symbols, indexes, tables in runs:
        reference.encode_with_indexes(symbols.tolist(), indexes.tolist(), *(t.tolist() for t in tables))
        writer.add(symbols, indexes, *tables)
    monkeypatch.setattr(rans, "_WORDS", 16)  # many output pieces
    assert writer.flush() == reference.flush()
    assert RansWriter().flush() == struct.pack("<II", 1 << 31, 0)  # the initial state (compressai's crashes)


def test_the_rans_writer_holds_two_bytes_a_symbol_of_a_latent_until_flushed():
    """Symbols within a byte, table indexes of 256 scales: each held in one byte until the flush
    (an 8K image's 166 M latent symbols: 0.33 GB)."""
    rng = np.random.default_rng(1)
    count = 1 << 20
    cdfs = np.tile(np.array([0, 1000, 64535, 65535, 65536], dtype=np.int32), (256, 1))
    tables = (cdfs, np.full(256, 5, dtype=np.int32), np.full(256, -1, dtype=np.int32))
    symbols, indexes = rng.integers(-40, 40, count).astype(np.int32), rng.integers(0, 256, count).astype(np.int32)
    writer = RansWriter()
    tracemalloc.start()
    try:
        writer.add(symbols, indexes, *tables)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held <= 2 * count + 4096


def test_a_symbol_the_reader_could_not_take_back_is_refused_when_written():
    writer = RansWriter()
    tables = (np.array([[0, 65535, 65536]], dtype=np.int32), np.array([3], dtype=np.int32),
              np.array([0], dtype=np.int32))
    with pytest.raises(HarnessError, match="a latent symbol of 1073741824 is beyond what rANS codes"):
        writer.add(np.array([0, 2**30]), np.array([0, 0]), *tables)
    with pytest.raises(HarnessError, match="table index out of range"):
        writer.add(np.array([0]), np.array([1]), *tables)


def test_a_coding_process_drops_the_float_entropy_networks(checkpoint, model, kodim):
    """compress and decompress keep only the integer path of the entropy networks (the CLI drops
    the float ones once it has the fingerprint): the same file and image; the float path refuses."""
    pixels = _image(kodim, 64, 96)
    data, digest = encode(model, pixels), fingerprint(model)
    coder = load_checkpoint(checkpoint)
    set_precision(coder, "auto")
    held = sum(p.numel() for p in coder.parameters())
    coder.drop_float_prior()
    assert sum(p.numel() for p in coder.parameters()) < held / 2
    assert encode(coder, pixels, digest=digest) == data
    assert np.array_equal(decode(coder, data, digest=digest), decode(model, data))
    with pytest.raises(HarnessError, match="float entropy networks were dropped"):
        encode(coder, pixels, digest=digest, integer=False)


def test_a_loaded_model_holds_nothing_of_its_file_and_codes_alike_once_it_is_overwritten_in_place(
        checkpoint, kodim, tmp_path):
    """The load maps the file, but what the model keeps is its own memory: a checkpoint overwritten
    in place (``cp`` over it, not a rename) under a running process changes nothing it codes."""
    from harness.artefacts.checkpoint import load_fingerprinted
    from harness.process_memory import FilePages

    path = tmp_path / "in-use.pt"
    path.write_bytes(checkpoint.read_bytes())
    coder, digest = load_fingerprinted(path, float_prior=False)
    pixels = _image(kodim, 64, 96)
    data = encode(coder, pixels, digest=digest)
    pages = FilePages()
    assert not any(pages.holds(t.untyped_storage().data_ptr()) for t in coder.state_dict().values())
    with open(path, "r+b") as file:  # the same inode, other bytes
        file.write(bytes(path.stat().st_size))
    assert encode(coder, pixels, digest=digest) == data
    assert np.array_equal(decode(coder, data, digest=digest), decode(load_checkpoint(checkpoint), data))


def test_handing_back_pages_touches_no_memory_outside_a_file_mapping():
    """``FilePages.release`` drops pages only within a private file mapping, whose bytes a later
    read gets again from the file: a tensor of the process's own memory keeps its values."""
    from harness.process_memory import FilePages

    own = torch.arange(1 << 20, dtype=torch.float32)
    FilePages().release(own.data_ptr(), own.nbytes)
    assert torch.equal(own, torch.arange(1 << 20, dtype=torch.float32))


def test_a_loaded_model_that_writes_its_weights_writes_its_own_pages_never_the_checkpoint(checkpoint):
    """A loaded model's weights are its own memory: training or editing it leaves the file, and
    every other process that loads it, as they were."""
    before = checkpoint.read_bytes()
    loaded = load_checkpoint(checkpoint)
    with torch.no_grad():
        for weight in loaded.parameters():
            weight.add_(1)
    assert checkpoint.read_bytes() == before
    again = load_checkpoint(checkpoint)
    assert torch.equal(again.g_a[0].conv1.weight + 1, loaded.g_a[0].conv1.weight)


@pytest.mark.parametrize("size", [(1, 1), (17, 33), *(pytest.param(s, marks=pytest.mark.slow) for s in [(768, 512), (512, 768), (1365, 2048)])])
def test_round_trip_equals_encoder_reconstruction(model, kodim, size):
    pixels = _image(kodim, *size)
    data, own = encode_reconstruct(model, pixels)
    decoded = decode(model, data)
    assert decoded.shape == (*size, 3)
    assert np.array_equal(decoded, own)


def test_cli_round_trip_writes_png(checkpoint, model, kodak_dir, tmp_path, capsys):
    source, stream, out = kodak_dir / "kodim01.png", tmp_path / "k.3dmw", tmp_path / "k.png"
    assert main(["compress", str(source), "-m", str(checkpoint), "-o", str(stream)]) == 0
    assert main(["decompress", str(stream), "-m", str(checkpoint), "-o", str(out)]) == 0
    decoded = np.asarray(Image.open(out))
    assert decoded.shape == (512, 768, 3)
    container = unpack(stream.read_bytes())
    assert (container.height, container.width, container.mode) == (512, 768, "RGB")
    assert container.fingerprint == fingerprint(model)
    assert len(container.streams) == 1


def _decompress_fails(data: bytes, checkpoint, tmp_path, capsys, match: str) -> None:
    stream, out = tmp_path / "bad.3dmw", tmp_path / "bad.png"
    stream.write_bytes(data)
    start = time.monotonic()
    assert main(["decompress", str(stream), "-m", str(checkpoint), "-o", str(out)]) == 1
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def good_stream(model, kodim):
    return encode(model, _image(kodim, 40, 70))


def test_truncation_at_every_offset_is_rejected(good_stream, checkpoint, tmp_path, capsys):
    for cut in range(len(good_stream)):
        _decompress_fails(good_stream[:cut], checkpoint, tmp_path, capsys, "error:")


@pytest.mark.slow
def test_every_single_bit_flip_is_rejected(good_stream, checkpoint, tmp_path, capsys):
    for position in range(len(good_stream)):
        for bit in (0, 3, 7):
            flipped = bytearray(good_stream)
            flipped[position] ^= 1 << bit
            _decompress_fails(bytes(flipped), checkpoint, tmp_path, capsys, "error:")


def test_magic_version_empty_and_other_model(good_stream, checkpoint, tmp_path, capsys):
    _decompress_fails(b"", checkpoint, tmp_path, capsys, "is empty")
    _decompress_fails(b"PNG!" + good_stream[4:], checkpoint, tmp_path, capsys, "bad magic bytes")
    _decompress_fails(_with_crc(good_stream[:4] + bytes([7]) + good_stream[5:]), checkpoint, tmp_path, capsys,
                      "format version 7, unknown to this harness, which reads version 6")
    other = tmp_path / "other.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(other), "--seed", "1"]) == 0
    stream, out = tmp_path / "x.3dmw", tmp_path / "x.png"
    stream.write_bytes(good_stream)
    assert main(["decompress", str(stream), "-m", str(other), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert unpack(good_stream).fingerprint[:16] in err and fingerprint(load_checkpoint(other))[:16] in err
    assert not out.exists()


EARLIER = "written by an earlier harness; this harness reads version 6 (re-encode the image)"


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_every_earlier_version_gets_one_line_naming_it(version, good_stream, checkpoint, tmp_path, capsys):
    """Both a file of the current layout carrying the version (its CRC recomputed) and one of the
    layout versions 3 to 5 wrote (no entropy path field) are refused naming their version."""
    crafted = _with_crc(good_stream[:4] + bytes([version]) + good_stream[5:])
    _decompress_fails(crafted, checkpoint, tmp_path, capsys, f"has format version {version}, {EARLIER}")
    path_end = 50 + good_stream[49]
    header = good_stream[:4] + bytes([version]) + good_stream[5:49] + good_stream[path_end : path_end + 5 + 4]
    payload = good_stream[path_end + 5 + 4 + 4 :]
    old = header + struct.pack(">I", zlib.crc32(payload, zlib.crc32(header))) + payload
    _decompress_fails(old, checkpoint, tmp_path, capsys, f"has format version {version}, {EARLIER}")


def test_an_unknown_entropy_path_is_one_line(good_stream, checkpoint, tmp_path, capsys):
    for path in (b"integer-1", b"", b"\xff"):
        forged = good_stream[:49] + bytes([len(path)]) + path + good_stream[50 + good_stream[49] :]
        _decompress_fails(_with_crc(forged), checkpoint, tmp_path, capsys,
                          "non-ASCII" if path == b"\xff" else f"was coded on entropy path {path.decode()!r}; "
                          "this harness decodes 'integer-2' or 'float'")


def _with_crc(data: bytes) -> bytes:
    """``data`` (one stream) with its CRC recomputed, as a forger would."""
    mode_at = 50 + data[49]
    header_end = mode_at + 1 + data[mode_at] + 1 + 4 * data[mode_at + 1 + data[mode_at]]
    payload = data[header_end + 4 :]
    return data[:header_end] + struct.pack(">I", zlib.crc32(payload, zlib.crc32(data[:header_end]))) + payload


def test_header_layout_is_as_documented(good_stream, model, kodim):
    assert good_stream[:5] == b"3DMW\x06"
    assert struct.unpack(">II", good_stream[37:45]) == (40, 70)
    (latent_crc,) = struct.unpack(">I", good_stream[45:49])
    assert latent_crc == model.compress(to_tensor(_image(kodim, 40, 70)))["latent_crc"][0]
    assert good_stream[49:59] == b"\x09integer-2"  # the entropy path, by name
    assert good_stream[59:63] == b"\x03RGB" and good_stream[63] == 1  # mode, then one stream
    float_path = encode(model, _image(kodim, 40, 70), integer=False)
    assert float_path[49:55] == b"\x05float" and unpack(float_path).entropy_path == "float"


def _palette_lookup(image: Image.Image) -> np.ndarray:
    palette = np.asarray(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    return palette[np.asarray(image)]


# Each mode, how to make it from RGB pixels, and the RGB it must become (computed here, not by the harness).
MODES = [
    ("L", lambda a: Image.fromarray(a[..., 0], "L"), lambda a, _: np.repeat(a[..., :1], 3, axis=2)),
    ("RGBA", lambda a: Image.fromarray(np.dstack([a, a[..., :1]]), "RGBA"), lambda a, _: a),
    ("P", lambda a: Image.fromarray(a, "RGB").convert("P"), lambda _, made: _palette_lookup(made)),
    ("I;16", lambda a: Image.fromarray(a[..., 0].astype("<u2") * 257), lambda a, _: np.repeat(a[..., :1], 3, axis=2)),
    ("CMYK", lambda a: Image.fromarray(a, "RGB").convert("CMYK"), lambda a, _: a),  # K = 0: exact inverse
]


@pytest.mark.parametrize("mode, make, expected", MODES, ids=[m[0] for m in MODES])
def test_other_modes_are_converted_with_a_notice(mode, make, expected, checkpoint, model, kodim, tmp_path, capsys):
    pixels = np.ascontiguousarray(kodim[:24, :40])
    made = make(pixels)
    assert made.mode == mode
    source = tmp_path / ("in.tif" if mode == "CMYK" else "in.png")
    made.save(source)
    stream, out = tmp_path / "m.3dmw", tmp_path / "m.png"
    assert main(["compress", str(source), "-m", str(checkpoint), "-o", str(stream)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notice" in err
    assert main(["decompress", str(stream), "-m", str(checkpoint), "-o", str(out)]) == 0
    # The stream codes the converted pixels: what decodes is the model's reconstruction of them.
    rgb = np.ascontiguousarray(expected(pixels, made), dtype=np.uint8)
    own = to_pixels(model.compress(to_tensor(rgb), reconstruct=True)["x_hat"])
    assert np.array_equal(np.asarray(Image.open(out)), own)


def test_unreadable_image_and_checkpoint_errors(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["compress", str(broken), "-m", str(checkpoint), "-o", str(tmp_path / "o.3dmw")]) == 1
    assert "cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "o.3dmw").exists()
    with pytest.raises(HarnessError, match="not a model checkpoint"):
        load_checkpoint(broken)


def _fails_with_one_line(argv: list[str], capsys, *fragments: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(f in err for f in fragments), err


def test_missing_inputs_give_one_line_errors(checkpoint, good_stream, kodak_dir, tmp_path, capsys):
    image, stream, out = kodak_dir / "kodim23.png", tmp_path / "s.3dmw", tmp_path / "o.png"
    stream.write_bytes(good_stream)
    missing = tmp_path / "nowhere"
    _fails_with_one_line(["compress", str(missing / "a.png"), "-m", str(checkpoint), "-o", str(stream)], capsys,
                         "a.png")
    _fails_with_one_line(["compress", str(image), "-m", str(missing / "m.pt"), "-o", str(tmp_path / "x.3dmw")],
                         capsys, "m.pt", "does not exist")
    _fails_with_one_line(["compress", str(image), "-m", str(tmp_path), "-o", str(tmp_path / "x.3dmw")],
                         capsys, "is a directory")
    _fails_with_one_line(["decompress", str(missing / "b.3dmw"), "-m", str(checkpoint), "-o", str(out)], capsys,
                         "b.3dmw")
    _fails_with_one_line(["decompress", str(stream), "-m", str(missing / "m.pt"), "-o", str(out)], capsys,
                         "m.pt", "does not exist")
    _fails_with_one_line(["decompress", str(stream), "-m", str(checkpoint), "-o", str(missing / "o.png")], capsys,
                         "cannot write")
    assert not (tmp_path / "x.3dmw").exists() and not out.exists() and not missing.exists()


def test_unreadable_image_gives_one_line_error(checkpoint, tmp_path, capsys):
    for name, data in [("empty.png", b""), ("text.jpg", b"not an image at all\n"), ("cut.png", None)]:
        source = tmp_path / name
        if data is None:
            Image.new("RGB", (64, 64), "red").save(source)
            data = source.read_bytes()[:60]
        source.write_bytes(data)
        _fails_with_one_line(["compress", str(source), "-m", str(checkpoint), "-o", str(tmp_path / "o.3dmw")],
                             capsys, "cannot read image", name)
    unreadable = tmp_path / "locked.png"
    Image.new("RGB", (8, 8)).save(unreadable)
    unreadable.chmod(0)
    try:
        if not os.access(unreadable, os.R_OK):  # root reads anything
            _fails_with_one_line(["compress", str(unreadable), "-m", str(checkpoint), "-o", str(tmp_path / "o.3dmw")],
                                 capsys, "locked.png")
    finally:
        unreadable.chmod(0o644)
    assert not (tmp_path / "o.3dmw").exists()
