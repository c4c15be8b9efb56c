"""`harness model-info`, `harness init-model` and checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.errors import HarnessError
from harness.model.checkpoint import fingerprint, load_checkpoint


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


def test_init_model_error_reaches_the_cli(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["init-model", "--variant", "tiny", "--out", str(blocker / "sub" / "m.pt")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
