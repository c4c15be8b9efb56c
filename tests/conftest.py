"""Shared fixtures: paths to the data beside the checkout and one local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray's documented switch for single-machine clusters: every node, driver and
# worker (subprocesses inherit it) uses 127.0.0.1. Without it, joining a test
# cluster by address swaps loopback for this machine's outward IP.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# Starting Ray costs ~10 s on 2 cores: every test that needs an instance belongs to the slow tier.
RAY_FIXTURES = frozenset({"ray_local", "loopback_cluster"})


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests need ../shared beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def kodak_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "kodak"


@pytest.fixture(scope="session")
def photos_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "photos"


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory, photos_dir):
    """Factory of prepare-data outputs (written by prepare-data itself, on a Ray instance of its
    own) from the first ``photos`` photos: ``make(photos, recipe, val_fraction)``."""
    import shutil

    from harness.data.shards import PrepareConfig
    from harness.data.shards import run as prepare

    def make(photos: int, recipe, val_fraction: float) -> Path:
        sources = tmp_path_factory.mktemp("photos")
        for photo in sorted(photos_dir.glob("*.png"))[:photos]:
            shutil.copy(photo, sources / photo.name)
        out = tmp_path_factory.mktemp("shards")
        prepare(PrepareConfig(sources=(f"folder:{sources}",), out=out, val_fraction=val_fraction, progress=False,
                              recipe=recipe))
        return out

    return make


@pytest.fixture
def ray_local():
    """A local Ray instance on 127.0.0.1, started on first use and kept for later tests.

    ``address="local"`` so that a stale cluster of an earlier test (or another
    program on this machine) is never joined. Tests that build their own
    ``ray.cluster_utils.Cluster`` call ``ray.shutdown()`` first; the next test
    asking for this fixture gets a fresh instance.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    return ray


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def torch_one_thread():
    """Tiny tensors: one intra-op thread is ~10x faster than two fighting over shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def loopback_cluster():
    """Factory of real multi-node Ray clusters on 127.0.0.1 (``ray.cluster_utils.Cluster``).

    ``make(head_cpus, workers, dashboard, connect)`` shuts the session's local
    instance down, starts a head and one worker node per entry of ``workers``
    (its CPU count), and joins it unless ``connect=False`` (a subprocess driver
    joins instead). Dead nodes are noticed within ~2 s. Every node gets its own
    dashboard-agent port, which the Ray Jobs API (``dashboard=True``) needs on a
    shared host. ``cluster.add_worker(cpus)`` adds a node, ``cluster.workers``
    lists the first ones, ``cluster.jobs_address`` is the Jobs API URL.
    """
    import ray
    from ray.cluster_utils import Cluster

    made = []

    def make(head_cpus: int = 0, workers: tuple[int, ...] = (1, 1), dashboard: bool = False, connect: bool = True):
        ray.shutdown()
        head = {"num_cpus": head_cpus, "node_ip_address": "127.0.0.1", "include_dashboard": dashboard,
                "dashboard_agent_listen_port": free_port(),
                "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}}
        if dashboard:
            head.update(dashboard_host="127.0.0.1", dashboard_port=free_port())
        cluster = Cluster(initialize_head=True, head_node_args=head)
        made.append(cluster)
        cluster.jobs_address = f"http://127.0.0.1:{head['dashboard_port']}" if dashboard else None
        cluster.add_worker = lambda cpus: cluster.add_node(num_cpus=cpus, node_ip_address="127.0.0.1",
                                                           dashboard_agent_listen_port=free_port())
        cluster.workers = [cluster.add_worker(cpus) for cpus in workers]
        cluster.wait_for_nodes()
        if connect:
            ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        return cluster

    yield make
    ray.shutdown()
    for cluster in made:
        cluster.shutdown()
