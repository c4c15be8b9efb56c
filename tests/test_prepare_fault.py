"""A worker node dies while prepare-data runs on a real multi-node Ray cluster."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest

from harness.data.recipe import PatchRecipe
from harness.data.shards import PrepareConfig, run


@pytest.fixture
def cluster(monkeypatch):
    """Head (no CPUs) + two 1-CPU worker nodes, all on 127.0.0.1, instead of the
    session's local instance (the next ``ray_local`` starts a fresh one)."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # ray.init(address=...) swaps a loopback host for this machine's outward IP,
    # where nothing listens; Ray's single-machine mode keeps 127.0.0.1.
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            # Notice a dead node within ~2 s instead of the default ~30 s.
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


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

    def kill_a_worker_node(record: dict) -> None:
        if killed:
            return
        # Wait until both nodes are writing a shard (two temporaries), so the
        # node killed certainly takes a half-written shard with it.
        deadline = time.monotonic() + 30
        while len(list((tmp_path / "disturbed").glob(".train-*.tmp"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        killed.append(len(list((tmp_path / "disturbed").glob(".train-*.tmp"))))
        cluster.remove_node(workers[0], allow_graceful=False)

    disturbed = run(config(tmp_path / "disturbed"), on_shard_done=kill_a_worker_node)
    assert killed == [2] and disturbed["status"] == "complete"
    names = [r["name"] for r in disturbed["shards"]]
    assert len(names) == 8
    assert {r["name"]: r["sha256"] for r in disturbed["shards"]} == {r["name"]: r["sha256"] for r in reference["shards"]}
    keys = _keys(tmp_path / "disturbed", names)
    assert len(keys) == len(set(keys)) == 24 == disturbed["totals"]["train_patches"]
    assert sorted(keys) == sorted(_keys(tmp_path / "reference", names))
    assert not list((tmp_path / "disturbed").glob(".*.tmp"))
