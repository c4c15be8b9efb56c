"""Shared fixtures: paths to the data beside the checkout and one local Ray instance."""

from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def ray_local():
    """One Ray instance on 127.0.0.1 for the whole session (tests with their own
    ``ray.cluster_utils.Cluster`` must shut this one down first and not use it)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a private instance: never attach to another Ray running on this host
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()
