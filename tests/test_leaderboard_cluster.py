"""A worker node killed mid-run (ray.cluster_utils.Cluster on 127.0.0.1): Ray
retries its cells elsewhere and every cell ends up in the table exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from harness.leaderboard import results
from harness.leaderboard.config import LeaderboardConfig
from harness.leaderboard.plan import plan
from harness.leaderboard.run import execute
from harness.pixels.images import load_rgb, save_png

pytestmark = pytest.mark.slow


@pytest.fixture()
def cluster(loopback_cluster):
    cluster = loopback_cluster(head_cpus=0, workers=(1, 1))
    return cluster, cluster.workers


def test_killed_worker_node_leaves_every_cell_once(cluster, kodak_dir: Path, tmp_path: Path) -> None:
    cluster_, nodes = cluster
    images = tmp_path / "images"
    images.mkdir()
    for name in ("kodim05.png", "kodim21.png", "kodim24.png"):
        save_png(np.ascontiguousarray(load_rgb(kodak_dir / name).pixels[:128, :192]), images / name)
    config = LeaderboardConfig(datasets=(f"folder:{images}",), codecs=("hevc", "av1", "jpeg"), run_name="c",
                               reports_dir=tmp_path, progress=False, checkpoint_s=0.0)
    plan_ = plan(config)
    path = tmp_path / "c" / "results.parquet"
    errors: list[BaseException] = []

    def work() -> None:
        try:
            execute(plan_, config)
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not path.exists() or len(results.read(path)) < 3):
        time.sleep(0.2)
    assert path.exists(), "no cell finished before the deadline"
    cluster_.remove_node(nodes[0], allow_graceful=False)
    assert len(results.read(path)) < len(plan_.cells), "the node was killed after the run, not during it"
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors
    frame = results.read(path)
    assert len(frame) == len(plan_.cells) == 3 * 3 * 4
    assert not frame.duplicated(list(results.CELL)).any()
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", "error"].tolist()
