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
