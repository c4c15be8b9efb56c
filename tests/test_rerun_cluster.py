"""harness rerun as a Ray Job on a real two-node cluster on 127.0.0.1: the whole pipeline
(photos -> shards -> tiny λ sweep -> leaderboard with jpeg + the trained models), a worker
node killed during the first run, then an incremental rerun with one codec more (the rerun
of an unchanged plan is test_rerun.py's, on the local Ray)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


REPO = Path(__file__).resolve().parents[1]

PLAN = """
name = "cluster"
reports_dir = "reports"
work_dir = "work"

[data]
sources = ["folder:photos"]
patch = 64
resize = 256
patches_per_image = 2
val_fraction = 0.2
shard_patches = 4

[[sweep]]
variant = "tiny"
lambdas = [0.0067, 0.05]
stage1_steps = 6
stage2_steps = 2
batch_size = 2
patch = 64
checkpoint_every = 2
log_every = 2
val_batches = 1

[leaderboard]
datasets = ["kodak"]
max_images = 2
codecs = [{codecs}]
anchor = "jpeg"
"""


@pytest.fixture
def cluster(loopback_cluster):
    """Head (1 CPU, dashboard + job agent) and one 2-CPU worker node; the rerun's job driver joins it."""
    return loopback_cluster(head_cpus=1, workers=(2,), dashboard=True, connect=False)


def _rerun(plan: Path, address: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "rerun", "--plan", str(plan), "--address", address],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def test_rerun_job_survives_a_killed_node_and_reruns_incrementally(tmp_path, photos_dir, cluster):
    (tmp_path / "photos").mkdir()
    for photo in sorted(photos_dir.glob("*.png"))[:6]:
        shutil.copy(photo, tmp_path / "photos" / photo.name)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(codecs='"jpeg"'))
    report = tmp_path / "reports" / "cluster"

    first = _rerun(plan, cluster.jobs_address)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "work").glob("sweep-*/sweep-*/*/checkpoint_000000")):
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-4000:]
        time.sleep(0.2)
    cluster.remove_node(cluster.workers[0], allow_graceful=False)
    cluster.add_worker(2)
    _finish(first)

    results = pd.read_parquet(report / "results.parquet")
    assert (results["status"] == "ok").all()
    assert set(results["codec"]) == {"jpeg", "tiny"}
    assert set(results.loc[results["codec"] == "tiny", "quality"]) == {0.0067, 0.05}
    assert not results.duplicated(["image", "codec", "config", "quality"]).any()
    cells = len(results)

    # One codec more: nothing is trained again and only its cells are computed.
    plan.write_text(PLAN.format(codecs='"jpeg", "webp"'))
    more = _finish(_rerun(plan, cluster.jobs_address))
    history = pd.read_parquet(report / "runs.parquet")
    webp_cells = len(pd.read_parquet(report / "results.parquet").query("codec == 'webp'"))
    assert list(history["cells_computed"]) == [cells, webp_cells] and webp_cells > 0, more[-2000:]
    assert list(history["cells_reused"]) == [0, cells] and f"{webp_cells} cells computed" in more
    assert list(history["steps_trained"]) == [2 * 8, 0] and "0 training steps" in more
    assert (report / "bdrate.md").is_file() and (report / "changes.md").is_file()
    # The report opens with what the models are; their cards say how long and where they trained.
    cards = [json.loads(path.read_text()) for path in (tmp_path / "work" / "sweep-tiny-mse" / "models").glob("*.json")]
    assert len(cards) == 2 and all(card["train_s"] > 0 and card["device"].startswith("cpu: ") for card in cards)
    readme = (report / "README.md").read_text()
    assert readme.index("## Learned models") < readme.index("## This run")
    assert "at most 8 steps" in readme and "| kodak | tiny | " in readme
