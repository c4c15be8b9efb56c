"""A trial's training state: saved and restored with tensors and plain types only (weights_only), and
the layout its transforms train in on its device."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.model.precision import ChannelsLast, precision_of
from harness.train import loop
from harness.train.loop import STATE_FILE, TrialConfig, _State, read_state
from harness.train.recipe import TrainingRecipe


def _trial(tmp_path: Path) -> TrialConfig:
    return TrialConfig(data=str(tmp_path), data_sha256="0" * 64, out=str(tmp_path), variant="tiny", metric="mse",
                       lmbda=0.01, recipe=TrainingRecipe(stage1_steps=10, stage2_steps=2, batch_size=2, patch=64,
                                                         milestones=(0.5,), checkpoint_every=5, log_every=5,
                                                         val_batches=1), threads=1)


def test_state_round_trips_through_a_weights_only_load(tmp_path, torch_one_thread):
    config = _trial(tmp_path)
    state = _State(config)
    x = torch.rand(1, 3, 64, 64)
    state.model(x)["x_hat"].mean().backward()
    state.optimizer.step()
    state.scheduler.step()
    state.step = 7
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    state.save(tmp_path)
    draws = (random.random(), np.random.rand(), torch.rand(1).item())

    restored = _State(config)
    restored.load(tmp_path)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws  # every generator where it was
    assert restored.step == 7 and restored.restored_from == [7]
    assert restored.scheduler.state_dict() == state.scheduler.state_dict()
    moments = restored.optimizer.state_dict()["state"]
    assert moments and all(torch.equal(moments[k]["exp_avg"], v["exp_avg"])
                           for k, v in state.optimizer.state_dict()["state"].items())
    weights = restored.model.state_dict()
    for name, tensor in state.model.state_dict().items():
        assert torch.equal(weights[name], tensor), name


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_trial_applies_its_precision_on_the_device_it_trains_on(device, tmp_path, monkeypatch):
    """fp32 trains channels-last on the CPU only: the precision is applied once the model is on
    the trial's device (``meta`` stands in for a GPU here), not while it is still on the CPU
    where it is built."""
    monkeypatch.setattr(loop, "_device", lambda session: torch.device(device))
    state = _State(_trial(tmp_path))
    net, where = loop._prepare(state.model, loop._Session(distributed=False), "fp32")
    assert where == torch.device(device) and precision_of(net) == "fp32"
    assert isinstance(net.__dict__.get("g_a"), ChannelsLast) == (device == "cpu")
    weight = next(net.g_s.parameters())
    assert weight.is_contiguous(memory_format=torch.channels_last) == (device == "cpu")
    assert weight.is_contiguous() == (device == "meta")


class _Payload:
    """Unpickling this object touches a file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_state_file_holding_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"model": {}, "optimizer": {}, "step": 1, "rng": {}, "extra": _Payload(marker)}, tmp_path / STATE_FILE)
    with pytest.raises(HarnessError) as caught:
        read_state(tmp_path / STATE_FILE)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("is not a training state of this harness (a pickle of other "
                                                     "types than tensors and plain values): delete the trial's "
                                                     "checkpoints to restart it")
    assert not marker.exists()


def test_damaged_or_foreign_state_files_are_one_line_errors(tmp_path):
    path = tmp_path / STATE_FILE
    path.write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.raises(HarnessError, match="is not a training state of this harness"):
        read_state(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(HarnessError, match=r"is not a training state of this harness \(keys missing\)"):
        read_state(path)
