"""bf16 transforms (harness.model.precision): coding in either precision, cross-precision decodes,
the weights and fingerprint untouched, mixed-precision training, the layout fp32 runs in on the CPU,
and how ``auto`` resolves."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.artefacts.checkpoint import fingerprint, save_checkpoint
from harness.artefacts.coding import decode, encode_reconstruct, to_tensor
from harness.cli import main
from harness.errors import HarnessError
from harness.leaderboard.quality import psnr_rgb
from harness.model.loss import LossConfig, RateDistortionLoss
from harness.model.network import WeConvene
from harness.model.precision import Mixed, bf16_is_fast, precision_of, resolve, set_precision
from harness.pixels.images import load_rgb, save_png
from harness.train.loop import TrialConfig
from harness.train.recipe import TrainingRecipe
from harness.zoo.variants import get_config

REPO = Path(__file__).resolve().parents[1]
AMX = pytest.mark.skipif(not bf16_is_fast("cpu"), reason="this CPU has no AMX (or oneDNN may not use it)")


@pytest.fixture(scope="module")
def crops(kodak_dir) -> list[np.ndarray]:
    return [np.ascontiguousarray(load_rgb(kodak_dir / name).pixels[:128, :192]) for name in ("kodim05.png", "kodim23.png")]


@pytest.fixture
def model(trained_tiny):
    """A copy of the session's trained tiny; the tests that take it are in the slow tier (training
    it takes ~45 s on one thread, most of the unit tier's budget)."""
    return copy.deepcopy(trained_tiny)  # the session's model stays fp32 for other tests


@pytest.mark.slow
def test_bf16_changes_neither_weights_nor_fingerprint_and_fp32_comes_back_the_same(model, crops, torch_one_thread):
    before, state = fingerprint(model), {k: v.clone() for k, v in model.state_dict().items()}
    set_precision(model, "fp32")  # on the CPU, channels-last: not the layout the model was built in
    fp32 = [encode_reconstruct(model, pixels) for pixels in crops]
    assert set_precision(model, "bf16") == "bf16" == precision_of(model)
    assert isinstance(model.g_a, Mixed) and isinstance(model.latent_codec.h_a, Mixed)
    assert fingerprint(model) == before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()) and state.keys() == model.state_dict().keys()
    bf16 = [encode_reconstruct(model, pixels) for pixels in crops]
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(fp32, bf16))
    y = model.g_a(to_tensor(crops[0]))  # computed in bfloat16: every value is a bfloat16 one
    assert y.dtype == torch.float32 and torch.equal(y, y.bfloat16().float())
    set_precision(model, "fp32")
    y = model.g_a(to_tensor(crops[0]))
    assert not torch.equal(y, y.bfloat16().float())
    for (data, pixels), (again, again_pixels) in zip(fp32, (encode_reconstruct(model, p) for p in crops)):
        assert data == again and np.array_equal(pixels, again_pixels)


@pytest.mark.slow
def test_each_precision_decodes_its_own_files_exactly_and_the_others_files(model, crops, torch_one_thread):
    files = {}
    for precision in ("fp32", "bf16"):
        set_precision(model, precision)
        files[precision] = [encode_reconstruct(model, pixels) for pixels in crops]
        for data, reconstruction in files[precision]:
            assert np.array_equal(decode(model, data), reconstruction)
    for writer, reader in (("bf16", "fp32"), ("fp32", "bf16")):
        set_precision(model, reader)
        for original, (data, reconstruction) in zip(crops, files[writer]):
            decoded = decode(model, data)  # the latent check passes: only g_s's rounding differs
            assert np.abs(decoded.astype(int) - reconstruction).max() <= 8
            assert abs(psnr_rgb(original, decoded) - psnr_rgb(original, reconstruction)) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_h_a_reads_the_latent_assembled_in_the_precision_it_runs_in(precision, torch_one_thread):
    """h_a's input, the latent's subbands side by side, is assembled in the dtype and layout h_a
    takes on the CPU (channels-last; bf16: half the bytes; its wrapper then copies nothing): the
    same values and layout as the float32 concatenation cast, so the same hyper-latent."""
    torch.manual_seed(0)
    model = WeConvene(get_config("tiny")).eval()
    set_precision(model, precision)
    codec = model.latent_codec
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    layout = torch.channels_last
    with torch.no_grad():
        subbands = codec.analysis(torch.randn(1, codec.config.M, 16, 24))
        concatenated = torch.cat([subbands[name] for name in codec.config.subbands], dim=1)
        expected = codec.h_a(concatenated)
        inputs = []
        codec.h_a.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
        _, z = codec.split_subbands(dict(subbands))
    assert inputs[0].dtype == dtype and inputs[0].is_contiguous(memory_format=layout)
    assert torch.equal(inputs[0], concatenated.to(dtype=dtype, memory_format=layout))
    assert torch.equal(z, expected)


def test_fp32_on_the_cpu_convolves_channels_last_and_hands_on_contiguous_float32(torch_one_thread):
    """oneDNN reads and writes channels-last tensors as they are, and reorders contiguous ones into
    its blocked layout and back at every convolution: fp32 on the CPU runs every convolution of
    the transforms with the channels innermost (a channel group of a band is a view of it, its
    pixels further apart), and what reads a transform's output gets the layout it always did."""
    torch.manual_seed(0)
    model = WeConvene(get_config("tiny")).eval()
    assert set_precision(model, "fp32") == "fp32"
    layouts = []
    for module in model.g_s.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(
                lambda _, args: layouts.append(args[0].stride(1) == 1))
    with torch.no_grad():
        x_hat = model.g_s(torch.randn(1, model.latent_codec.config.M, 8, 12))
    assert layouts and all(layouts)
    assert x_hat.dtype == torch.float32 and x_hat.is_contiguous()


def test_mixed_precision_training_keeps_float32_weights_grads_and_likelihoods(model, crops, torch_one_thread):
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    loss = RateDistortionLoss(LossConfig(0.013))
    model.train()
    outputs = {}
    for precision in ("fp32", "bf16"):
        set_precision(model, precision)
        model.zero_grad()
        out = model(x)
        loss(out, x)["loss"].backward()
        outputs[precision] = out
        assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
                   for p in model.parameters())
        assert out["x_hat"].dtype == torch.float32
        in_bf16 = torch.equal(out["x_hat"], out["x_hat"].bfloat16().float())
        assert in_bf16 == (precision == "bf16")  # g_s's output: bfloat16 values only under bf16
        assert all(t.dtype == torch.float32 for t in out["likelihoods"].values())
    assert not torch.equal(outputs["fp32"]["x_hat"], outputs["bf16"]["x_hat"])
    # bf16 moves a few latents across a rounding step, so compare the images on average
    assert float((outputs["fp32"]["x_hat"] - outputs["bf16"]["x_hat"]).detach().abs().mean()) < 0.01


def test_auto_and_bad_names(tmp_path):
    assert resolve("fp32") == "fp32" and resolve("bf16", "cuda") == "bf16"
    with pytest.raises(HarnessError, match="unknown precision 'fp16': choose one of fp32, bf16, auto"):
        resolve("fp16")
    if not torch.cuda.is_available():  # planned here for GPU workers: assumes bf16 tensor cores
        assert resolve("auto", "cuda") == "bf16"
    # oneDNN held to AVX2 cannot use AMX: auto falls back to fp32.
    probe = "from harness.model.precision import resolve; print(resolve('auto'))"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "fp32"


@AMX
def test_auto_is_bf16_on_an_amx_cpu():
    assert resolve("auto") == "bf16"


def test_every_trial_hashes_its_precision_and_not_where_it_runs(tmp_path):
    recipe = TrainingRecipe(stage1_steps=4, stage2_steps=2, batch_size=2, patch=64, lr=1e-3, milestones=(),
                            checkpoint_every=2, log_every=2, val_batches=1)
    trial = TrialConfig(data="d", data_sha256="s", out="o", variant="tiny", metric="mse", lmbda=0.01, recipe=recipe,
                        threads=1)
    placement = ("out", "data", "checkpoint_every", "log_every", "threads", "workers", "gpus_per_worker", "init")
    # The recipe's fields beside the trial's own, fp32 included like any other precision.
    flat = {**{k: v for k, v in asdict(trial).items() if k != "recipe"}, **asdict(recipe)}
    inputs = {k: v for k, v in flat.items() if k not in placement}
    assert inputs["precision"] == "fp32"
    assert trial.inputs_hash() == hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    assert replace(trial, recipe=replace(recipe, precision="bf16")).inputs_hash() != trial.inputs_hash()
    assert replace(trial, out="elsewhere", threads=4).inputs_hash() == trial.inputs_hash()


@pytest.mark.slow
def test_cli_compresses_in_one_precision_and_decompresses_in_the_other(model, crops, tmp_path, capsys):
    checkpoint, source = tmp_path / "tiny.pt", tmp_path / "crop.png"
    save_checkpoint(model, checkpoint)
    save_png(crops[0], source)
    stream, out = tmp_path / "crop.3dmw", tmp_path / "decoded.png"
    assert main(["compress", str(source), "-m", str(checkpoint), "-o", str(stream), "--precision", "bf16"]) == 0
    assert "bf16)" in capsys.readouterr().out
    assert main(["decompress", str(stream), "-m", str(checkpoint), "-o", str(out), "--precision", "fp32"]) == 0
    assert "(fp32)" in capsys.readouterr().out
    assert load_rgb(out).pixels.shape == crops[0].shape
    with pytest.raises(SystemExit) as exit_:
        main(["compress", str(source), "-m", str(checkpoint), "-o", str(stream), "--precision", "fp16"])
    assert exit_.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path, photos_dir):
    """benchmarks/gpu_check.py end to end at toy sizes: every step runs and reports."""
    out, photos = tmp_path / "gpu-check", tmp_path / "photos"
    photos.mkdir()
    for photo in sorted(photos_dir.glob("*.png"))[:4]:  # enough shards for a toy training curve
        shutil.copy(photo, photos / photo.name)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--dry-run",
                           "--photos", str(photos), "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["coding"]) == {"fp32", "bf16"} and all(r["encode_s"] > 0 for r in report["coding"].values())
    assert all(r["images_per_s"] > 0 for r in report["training_speed"].values())
    curve = (out / "train_curve.csv").read_text().splitlines()
    assert curve[0] == "step,seconds,loss,psnr,bpp" and len(curve) >= 2 and (out / "train_curve.png").stat().st_size
    assert report["cross_device"] and all(r["mismatches"] == 0 and r["decoded"] == r["images"]
                                          for r in report["cross_device"].values())
    assert "Kodak bf16: encode" in done.stdout and "mismatches of 2" in done.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_bf16_encode_decodes_on_the_cpu(model, crops):
    model.cuda()
    set_precision(model, "bf16")
    data, _ = encode_reconstruct(model, crops[0])
    cpu = copy.deepcopy(model).cpu()
    set_precision(cpu, "fp32")
    assert decode(cpu, data).shape == crops[0].shape  # the latent check passed
