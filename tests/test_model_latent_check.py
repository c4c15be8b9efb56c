"""The container's latent check: a decoder whose entropy model decodes other symbols than the
encoder coded gets a one-line error and writes no image, never a silently wrong one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.artefacts.bitstream import unpack
from harness.artefacts.checkpoint import load_checkpoint, save_checkpoint
from harness.artefacts.coding import decode, encode, to_pixels, to_tensor
from harness.artefacts.decode_check import SETTINGS, write_case
from harness.cli import main
from harness.model import exact
from harness.model.entropy import NearestScaleGaussian

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REPO = Path(__file__).resolve().parents[1]
# Either the latent check or the rANS reader (a table that does not fit the stream can read an
# escape no encoder writes, or run out of stream) names the cause.
MESSAGE = ("altered after encoding (CRC recomputed), or decoded by a different entropy model "
           "(harness or checkpoint version)")


@pytest.fixture(scope="module")
def pixels(kodak_dir) -> np.ndarray:
    return np.asarray(Image.open(kodak_dir / "kodim03.png").convert("RGB"))[:96, :160].copy()


def test_a_shifted_scale_index_in_the_decoder_is_an_error_and_no_file(tiny_checkpoint, pixels, tmp_path, capsys,
                                                                     monkeypatch):
    stream, out = tmp_path / "k.3dmw", tmp_path / "k.png"
    stream.write_bytes(encode(load_checkpoint(tiny_checkpoint), pixels))
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
    assert main(["decompress", str(stream), "-m", str(tiny_checkpoint), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and MESSAGE in err, err
    assert not out.exists() and calls


def test_the_entropy_path_field_decides_the_decoders_path(tiny_checkpoint, pixels, monkeypatch):
    """A file names the path its entropy parameters were predicted on, and decodes on that one:
    a float-path file on the float networks, an integer-path file on the integer path."""
    model = load_checkpoint(tiny_checkpoint)
    original, seen = model.decompress, []

    def spy(*args, integer, **kwargs):
        seen.append(integer)
        return original(*args, integer=integer, **kwargs)

    monkeypatch.setattr(model, "decompress", spy)
    for integer, path in ((False, "float"), (True, exact.PATH_ID)):
        data = encode(model, pixels, integer=integer)
        assert unpack(data).entropy_path == path
        own = to_pixels(model.compress(to_tensor(pixels), reconstruct=True, integer=integer)["x_hat"])
        assert np.array_equal(decode(model, data), own)
    assert seen == [False, True]


def _decode_elsewhere(pairs: list[str], setting: dict[str, str]) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "harness.artefacts.decode_check", *pairs], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **setting})
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bitstreams_decode_identically_under_other_threads_and_cpu_kernels(tiny_checkpoint, trained_tiny, kodak_dir,
                                                                           tmp_path):
    """Issue #16: Kodak images coded in this process (one thread) by a fresh and a briefly trained tiny decode in
    subprocesses with 1 and 2 threads, with oneDNN limited to AVX2, AVX512_CORE and SSE41 and with the numba
    kernels compiled for a baseline x86-64: on the integer path every latent matches (the container's
    check passes) and every image equals the encoder's reconstruction within g_s's rounding (±2), bit for
    bit under the encoder's own setting.
    The same run on the float path (files naming it) fails at least once, so the check can fail."""
    trained = tmp_path / "trained.pt"
    save_checkpoint(trained_tiny, trained)
    pairs = []
    for label, path, names in (("fresh", tiny_checkpoint, ["kodim03"]), ("trained", trained, ["kodim05"])):
        folder = tmp_path / label
        folder.mkdir()
        model = load_checkpoint(path)
        for name in names:
            pixels = np.asarray(Image.open(kodak_dir / f"{name}.png").convert("RGB"))
            for integer in (True, False):
                write_case(model, pixels, folder / f"{name}-{'integer' if integer else 'float'}", integer)
        pairs += [str(path), str(folder)]
    encoders_setting = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    float_failures = []
    # Two decoders at a time: most settings decode on one thread, and much of a decoder's wall
    # time is its single-threaded start-up.
    with ThreadPoolExecutor(2) as pool:
        decoded = list(pool.map(lambda setting: _decode_elsewhere(pairs, setting), SETTINGS))
    for setting, results in zip(SETTINGS, decoded):
        assert len(results) == 4
        for result in results:
            where = (setting, result["dir"], result["file"])
            if result["file"].endswith("-integer.3dmw"):
                assert result["status"] == "ok", (where, result["error"])
                assert result["identical"] or setting != encoders_setting, where
            elif result["status"] == "error":
                float_failures.append(where)
    assert float_failures, "the float path decoded everywhere: this test could not tell the paths apart"
