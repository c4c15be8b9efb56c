"""The container's latent check: a decoder whose entropy model decodes other symbols than the
encoder coded gets a one-line error and writes no image, never a silently wrong one."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.model.bitstream import unpack
from harness.model.checkpoint import load_checkpoint
from harness.model.coding import decode, encode, to_pixels, to_tensor
from harness.model.entropy import NearestScaleGaussian

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "decoded latent differs from the encoder's: the entropy model ran differently on this machine"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(path), "--seed", "0"]) == 0
    return path


@pytest.fixture(scope="module")
def pixels(kodak_dir) -> np.ndarray:
    return np.asarray(Image.open(kodak_dir / "kodim03.png").convert("RGB"))[:96, :160].copy()


def test_a_shifted_scale_index_in_the_decoder_is_an_error_and_no_file(checkpoint, pixels, tmp_path, capsys,
                                                                     monkeypatch):
    stream, out = tmp_path / "k.3dmw", tmp_path / "k.png"
    stream.write_bytes(encode(load_checkpoint(checkpoint), pixels))
    original = NearestScaleGaussian.build_indexes
    calls = []

    def shifted(self, scales):
        indexes = original(self, scales)
        if not calls:  # one index of the first slice: the decoder reads one symbol with another table's CDF
            flat, last = indexes.view(-1), len(self.scale_table) - 1
            flat[0] = 0 if flat[0] > last // 2 else last
        calls.append(len(calls))
        return indexes

    monkeypatch.setattr(NearestScaleGaussian, "build_indexes", shifted)
    assert main(["decompress", str(stream), "-m", str(checkpoint), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and MESSAGE in err, err
    assert not out.exists() and calls


def test_version_2_files_still_decode_unchecked(checkpoint, pixels):
    """A version-2 container (the layout before the latent check) decodes to the same image."""
    model = load_checkpoint(checkpoint)
    current = unpack(encode(model, pixels, integer=False))
    mode = current.mode.encode("ascii")
    header = struct.pack(">4sB32sIIB", b"3DMW", 2, bytes.fromhex(current.fingerprint), current.height,
                         current.width, len(mode)) + mode + struct.pack(">BI", 1, len(current.streams[0]))
    old = header + struct.pack(">I", zlib.crc32(current.streams[0], zlib.crc32(header))) + current.streams[0]
    assert unpack(old).latent_crc is None and unpack(old).version == 2
    own = to_pixels(model.compress(to_tensor(pixels), reconstruct=True, integer=False)["x_hat"])
    assert np.array_equal(decode(model, old), own)


def _harness(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env})


@pytest.mark.slow
def test_other_threads_or_kernels_never_give_a_silently_wrong_image(checkpoint, kodak_dir, tmp_path):
    """Issue #16's measurement: kodim03 coded by a fresh tiny model in the default environment
    decoded wrongly (9 % of the pixels, exit 0) with OMP_NUM_THREADS=1 on the development
    machine. Every decode under another setting now either equals the encoder's reconstruction
    (±2: g_s's float rounding) or fails with the latent error and writes nothing."""
    for name in ("kodim03",):
        stream, reference = tmp_path / f"{name}.3dmw", tmp_path / f"{name}.png"
        assert _harness("compress", str(kodak_dir / f"{name}.png"), "-m", str(checkpoint), "-o", str(stream)).returncode == 0
        assert _harness("decompress", str(stream), "-m", str(checkpoint), "-o", str(reference)).returncode == 0
        expected = np.asarray(Image.open(reference)).astype(int)
        for setting in ({"OMP_NUM_THREADS": "1"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}):
            out = tmp_path / f"{name}-{'-'.join(setting.values())}.png"
            done = _harness("decompress", str(stream), "-m", str(checkpoint), "-o", str(out), **setting)
            if done.returncode == 0:
                assert np.abs(np.asarray(Image.open(out)).astype(int) - expected).max() <= 2, (name, setting)
            else:
                assert done.returncode == 1 and MESSAGE in done.stderr and done.stderr.count("\n") == 1, done.stderr
                assert not out.exists()
