"""A worker node dies while prepare-data runs on a real multi-node Ray cluster."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest

from harness.data.recipe import PatchRecipe
from harness.data.shards import PrepareConfig, run

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(loopback_cluster):
    """Head (no CPUs) + two 1-CPU worker nodes, all on 127.0.0.1."""
    cluster = loopback_cluster(head_cpus=0, workers=(1, 1))
    return cluster, cluster.workers


def _keys(out: Path, names: list[str]) -> list[str]:
    keys = []
    for name in names:
        with tarfile.open(out / name) as tar:
            keys += [member.name.rsplit(".", 1)[0] for member in tar.getmembers() if member.name.endswith(".png")]
    return keys


def test_killed_worker_node_mid_run_loses_and_duplicates_nothing(cluster, photos_dir, tmp_path):
    cluster, workers = cluster
    source = tmp_path / "photos"
    source.mkdir()
    for photo in sorted(photos_dir.glob("*.png"))[:8]:
        (source / photo.name).symlink_to(photo)

    def config(out: Path) -> PrepareConfig:
        recipe = PatchRecipe(patch=96, resize=None, patches_per_image=3)
        return PrepareConfig(sources=(f"folder:{source}",), out=out, recipe=recipe, shard_patches=3,
                             val_fraction=0.0, progress=False)

    reference = run(config(tmp_path / "reference"))
    killed = []

    def kill_a_worker_node(record) -> None:
        if killed:
            return
        # Wait until both nodes are writing a shard (two temporaries), so the
        # node killed certainly takes a half-written shard with it. The count kept is the
        # one that ended the wait: counted again, a shard finished since reads 1.
        deadline = time.monotonic() + 30
        writing = 0
        while writing < 2 and time.monotonic() < deadline:
            writing = len(list((tmp_path / "disturbed").glob(".train-*.tmp")))
            if writing < 2:
                time.sleep(0.01)
        cluster.remove_node(workers[0], allow_graceful=False)
        killed.append(writing)

    disturbed = run(config(tmp_path / "disturbed"), on_shard_done=kill_a_worker_node)
    assert killed == [2] and disturbed.complete
    names = [r.name for r in disturbed.shards]
    assert len(names) == 8
    assert {r.name: r.sha256 for r in disturbed.shards} == {r.name: r.sha256 for r in reference.shards}
    keys = _keys(tmp_path / "disturbed", names)
    assert len(keys) == len(set(keys)) == 24 == disturbed.totals["train_patches"]
    assert sorted(keys) == sorted(_keys(tmp_path / "reference", names))
    assert not list((tmp_path / "disturbed").glob(".*.tmp"))
