"""`harness model-info`, `harness init-model`, checkpoint loading, and the output checks of the
commands that write files (compress, decompress, init-model, import-weights)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.artefacts import checkpoint, coding, torchfile
from harness.artefacts.checkpoint import fingerprint, load_checkpoint
from harness.artefacts.config import CompressConfig, DecompressConfig
from harness.cli import main
from harness.configs import build
from harness.errors import HarnessError
from harness.precisions import AUTO
from harness.pixels.images import MAX_PIXELS, load_rgb, save_png


def test_model_info_json_default(capsys):
    assert main(["model-info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "3dm-weconvene"
    assert info["params"] == sum(info["modules"].values())
    assert set(info["modules"]) == {"g_a", "g_s", "h_a", "h_s", "entropy_model"}
    assert abs(info["params"] / 73.95e6 - 1) <= 0.05


def test_model_info_text_and_unknown_variant(capsys):
    assert main(["model-info", "--variant", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "entropy_model" in out and "total" in out
    assert main(["model-info", "--variant", "huge"]) == 1
    assert "unknown model variant 'huge'" in capsys.readouterr().err


def test_init_model_writes_a_safe_loadable_checkpoint(tmp_path, capsys):
    path = tmp_path / "tiny.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(path), "--seed", "3"]) == 0
    assert "fingerprint" in capsys.readouterr().out
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["variant"] == "tiny"
    assert payload["state_dict"]["latent_codec.entropy_bottleneck._quantized_cdf"].numel() > 0
    assert payload["state_dict"]["latent_codec.gaussian_conditional.scale_table"].numel() > 0
    model = load_checkpoint(path, variant="tiny")
    assert not model.training
    again = tmp_path / "again.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(again), "--seed", "3"]) == 0
    assert fingerprint(load_checkpoint(again)) == fingerprint(model)
    other = tmp_path / "other.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(other), "--seed", "4"]) == 0
    assert fingerprint(load_checkpoint(other)) != fingerprint(model)


@pytest.mark.parametrize("variant", ["tiny", "compressai:bmshj2018-factorized?N=8,M=8"])
def test_a_checkpoint_loads_without_filling_weights_it_replaces(variant, tmp_path, capsys):
    """The network a checkpoint's weights go into is built without torch.nn.init's random fills
    (for the default model a second of every load): no random number is drawn, and the weights
    are the saved ones."""
    path = tmp_path / "model.pt"
    assert main(["init-model", "--variant", variant, "--out", str(path), "--seed", "3"]) == 0
    saved = torch.load(path, weights_only=True)["state_dict"]
    state = torch.get_rng_state()
    model = load_checkpoint(path)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(tensor, saved[name]) for name, tensor in model.state_dict().items())


def test_bad_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "tiny.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(path)]) == 0
    with pytest.raises(HarnessError, match="holds variant 'tiny', expected '3dm-weconvene'"):
        load_checkpoint(path, variant="3dm-weconvene")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(HarnessError, match="not a model checkpoint"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(HarnessError, match="not a model checkpoint"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(HarnessError, match="is not a harness-weconvene-checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(HarnessError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["g_a.0.conv1.weight"]
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(HarnessError, match="does not hold variant 'tiny' weights: 1 tensor\\(s\\) missing"):
        load_checkpoint(broken)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["latent_codec.entropy_bottleneck._offset"]  # a table: its size is the file's
    torch.save(payload, broken)
    with pytest.raises(HarnessError, match="weights do not match variant 'tiny' \\(1 missing, e.g. latent_codec"):
        load_checkpoint(broken)


def test_init_model_error_reaches_the_cli(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["init-model", "--variant", "tiny", "--out", str(blocker / "sub" / "m.pt")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


@pytest.fixture(scope="module")
def coded(tmp_path_factory, kodak_dir):
    """m.pt (init-model --variant tiny --seed 0), a small image and its bitstream."""
    folder = tmp_path_factory.mktemp("coded")
    model, image, stream = folder / "m.pt", folder / "a.png", folder / "a.3dmw"
    assert main(["init-model", "--variant", "tiny", "--seed", "0", "--out", str(model)]) == 0
    save_png(np.ascontiguousarray(load_rgb(kodak_dir / "kodim23.png").pixels[:24, :40]), image)
    assert main(["compress", str(image), "-m", str(model), "-o", str(stream)]) == 0
    return {"model": model, "image": image, "bitstream": stream}


def _refused(argv: list[str], capsys, *fragments: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(f in err for f in fragments), err


@pytest.mark.parametrize("command, out, alias", [
    ("compress", "image", None), ("compress", "model", None), ("compress", "image", "symlink"),
    ("compress", "image", "hard link"), ("compress", "model", "symlink"),
    ("decompress", "bitstream", None), ("decompress", "model", None), ("decompress", "bitstream", "hard link"),
])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(command, out, alias, coded, tmp_path, capsys):
    source = coded[out]
    target = source
    if alias == "symlink":
        target = tmp_path / "alias"
        target.symlink_to(source)
    elif alias == "hard link":
        target = tmp_path / "alias"
        os.link(source, target)
    before = source.read_bytes()
    given = coded["image"] if command == "compress" else coded["bitstream"]
    what = {"image": "input image", "bitstream": "input bitstream", "model": "model"}[out]
    _refused([command, str(given), "-m", str(coded["model"]), "-o", str(target)], capsys,
             f"output {target} is the same file as the {what} {source}")
    assert source.read_bytes() == before


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_an_unwritable_output_folder_is_refused_before_the_model_loads(command, coded, tmp_path, capsys,
                                                                        monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(coding, "load_fingerprinted", never)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    given = coded["image"] if command == "compress" else coded["bitstream"]
    outs = [(blocker / "x.out", f"{blocker} is a file, not a folder"), (tmp_path, "it is a folder")]
    if Path("/sys/kernel").is_dir():  # refuses new files even to root, whom os.access lets through
        outs.append((Path("/sys/kernel/x.out"), "cannot create files in /sys/kernel"))
    for out, reason in outs:
        _refused([command, str(given), "-m", str(coded["model"]), "-o", str(out)], capsys, "cannot write", reason)


def test_a_device_output_is_written_in_place(coded, null_device, capsys):
    """`-o /dev/null` with a /dev/null made in tmp_path (never the machine's own)."""
    assert main(["compress", str(coded["image"]), "-m", str(coded["model"]), "-o", str(null_device)]) == 0
    assert main(["decompress", str(coded["bitstream"]), "-m", str(coded["model"]), "-o", str(null_device)]) == 0
    assert main(["init-model", "--variant", "tiny", "--out", str(null_device)]) == 0
    assert stat.S_ISCHR(os.lstat(null_device).st_mode)


def test_init_model_checks_its_output_before_building(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was built before the output was checked")

    monkeypatch.setattr(checkpoint, "build_model", never)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(["init-model", "--variant", "tiny", "--out", str(tmp_path)], capsys, "it is a folder")
    _refused(["init-model", "--variant", "tiny", "--out", str(blocker / "sub" / "m.pt")], capsys,
             f"{blocker} is a file, not a folder")


def test_import_weights_never_writes_over_its_state_dict(tmp_path, capsys):
    """--from published/mse-0.0035.pt --out published: the checkpoint it would write is the source."""
    from compressai.models import MeanScaleHyperprior

    out = tmp_path / "published"
    out.mkdir()
    source = out / "mse-0.0035.pt"
    torch.manual_seed(0)
    torch.save(MeanScaleHyperprior(N=8, M=16).state_dict(), source)
    before = source.read_bytes()
    argv = ["import-weights", "compressai:mbt2018-mean", "--quality", "2", "--from", str(source)]
    _refused([*argv, "--out", str(out)], capsys, f"is the same file as the state dict {source}")
    assert source.read_bytes() == before and sorted(out.iterdir()) == [source]
    _refused([*argv, "--out", str(source)], capsys, f"{source} is a file, not a folder")
    assert source.read_bytes() == before


@pytest.mark.parametrize("config, inputs", [(CompressConfig, {"image": "a.png"}),
                                            (DecompressConfig, {"bitstream": "a.3dmw"})])
def test_compress_and_decompress_configs_hold_their_defaults_and_checks(config, inputs):
    """What the CLI passes through configs.build: the defaults and checks live in the frozen config."""
    given = {**inputs, "checkpoint": "m.pt", "out": "o"}
    built = build(config, given)
    assert (built.precision, built.max_pixels, built.checkpoint) == (AUTO, MAX_PIXELS, Path("m.pt"))
    with pytest.raises(HarnessError, match="unknown precision 'fp16': choose one of fp32, bf16, auto"):
        build(config, {**given, "precision": "fp16"})
    with pytest.raises(HarnessError, match="--max-pixels must be at least 1, got 0"):
        build(config, {**given, "max_pixels": 0})
    with pytest.raises(HarnessError, match="max_pixels must be an integer"):
        build(config, {**given, "max_pixels": "many"})


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_a_torch_file_is_memory_mapped_and_a_legacy_one_still_loads(tmp_path):
    """Checkpoints are read in place (their pages shared with the page cache), not copied into
    memory; torch's legacy format, which cannot be mapped, is still read."""
    zipped, legacy = tmp_path / "zipped.pt", tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(4096.0)}, zipped)
    torch.save({"w": torch.arange(4096.0)}, legacy, _use_new_zipfile_serialization=False)
    held = torchfile.load(zipped, "a test file")
    assert str(zipped) in Path("/proc/self/maps").read_text()
    assert torch.equal(held["w"], torch.arange(4096.0))
    assert torch.equal(torchfile.load(legacy, "a test file")["w"], torch.arange(4096.0))
