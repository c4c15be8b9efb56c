"""Shared fixtures: paths to the data beside the checkout and one local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray's documented switch for single-machine clusters: every node, driver and
# worker (subprocesses inherit it) uses 127.0.0.1. Without it, joining a test
# cluster by address swaps loopback for this machine's outward IP.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# pytest-xdist's workers share the machine's cores: each worker's torch, and every process it starts,
# gets its share of them (set before torch is imported). Two workers of two OpenMP threads on two
# cores spin-wait in each other's way: the unit tier took 72 s, 64 s so. Tests about thread counts
# set their own.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# Starting Ray costs ~10 s on 2 cores: every test that needs an instance belongs to the slow tier.
RAY_FIXTURES = frozenset({"ray_local", "loopback_cluster"})
# The test files that take longest on 2 cores (1-5 minutes each, the sum of their tests' --durations),
# longest first. pytest-xdist hands them out in this order only with --no-loadscope-reorder (Makefile).
LONGEST_FILES = ("test_train_sweep.py", "test_leaderboard_learned.py", "test_model_baselines.py",
                 "test_rerun_cluster.py", "test_model_precision.py", "test_model_latent_check.py",
                 "test_lock.py", "test_tiling.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session):
    # Collecting imports torch, compressai and Ray: as a harness command imports its stage
    # (harness.process_memory.imports_frozen).
    from harness.process_memory import imports_frozen

    with imports_frozen():
        yield


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # Tests that own a cluster shut the session's local instance down: run them last, so that
    # instance starts once per run instead of once after each of them.
    items.sort(key=lambda item: "loopback_cluster" in getattr(item, "fixturenames", ()))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `make test`'s workers take a file each as they free up, in this order: the longest
        # files first, so that neither worker is left with one of them at the end.
        items.sort(key=lambda item: LONGEST_FILES.index(item.path.name) if item.path.name in LONGEST_FILES
                   else len(LONGEST_FILES))


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
    """Factory of prepare-data outputs (written by prepare-data itself, on the session's local
    Ray) from the first ``photos`` photos: ``make(photos, recipe, val_fraction)``. Each set of
    arguments is prepared once per run; modules asking for the same shards share them."""
    import shutil

    from harness.data.shards import PrepareConfig
    from harness.data.shards import run as prepare

    made: dict[tuple, Path] = {}

    def make(photos: int, recipe, val_fraction: float) -> Path:
        key = (photos, recipe, val_fraction)
        if key not in made:
            sources = tmp_path_factory.mktemp("photos")
            for photo in sorted(photos_dir.glob("*.png"))[:photos]:
                shutil.copy(photo, sources / photo.name)
            out = tmp_path_factory.mktemp("shards")
            start_local_ray()
            prepare(PrepareConfig(sources=(f"folder:{sources}",), out=out, val_fraction=val_fraction,
                                  progress=False, recipe=recipe))
            made[key] = out
        return made[key]

    return make


def start_local_ray():
    """The session's local Ray instance on 127.0.0.1, started on first use and kept for later tests.

    ``address="local"`` so that a stale cluster of an earlier test (or another
    program on this machine) is never joined. Tests that build their own
    ``ray.cluster_utils.Cluster`` call ``ray.shutdown()`` first (they run last,
    see :func:`pytest_collection_modifyitems`); a later caller gets a fresh instance.
    """
    import ray

    from harness.raycluster import runtime_env

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            runtime_env=runtime_env(),  # what harness's own drivers give their workers
        )
    return ray


@pytest.fixture
def ray_local():
    """The session's local Ray instance (:func:`start_local_ray`)."""
    return start_local_ray()


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """``harness init-model --variant tiny --seed 0``: untrained, but a real model that codes."""
    from harness.cli import main

    path = tmp_path_factory.mktemp("tiny-checkpoint") / "tiny.pt"
    assert main(["init-model", "--variant", "tiny", "--out", str(path), "--seed", "0"]) == 0
    return path


@pytest.fixture
def null_device(tmp_path) -> Path:
    """A /dev/null made in tmp_path (never the machine's own), for outputs that must be written
    in place; skips where character devices cannot be made or opened."""
    import stat

    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        null.write_bytes(b"probe")
    except OSError as error:  # not root, or tmp_path mounted nodev
        pytest.skip(reason=f"cannot make or open a character device here: {error.strerror}")
    return null


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

    from harness.raycluster import runtime_env

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
            ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False,
                     runtime_env=runtime_env())
        return cluster

    yield make
    ray.shutdown()
    for cluster in made:
        cluster.shutdown()


TINY_STEPS, TINY_BATCH, TINY_CROP = 150, 4, 64


def train_tiny(photos: list, steps: int, seed: int = 0):
    """``tiny`` trained on random crops (stage-1 loss, lambda 0.013, lr 1e-3, CompressAI's
    auxiliary quantile loss), entropy tables and integer path updated. A model at
    initialisation predicts nearly empty latents; 150 steps of batch 4 x 64^2 crops of
    ../shared/data/photos make it code real content (~45 s on one core)."""
    import numpy as np
    import torch

    from harness.model.network import WeConvene
    from harness.zoo.variants import get_config
    from harness.model.loss import LossConfig, RateDistortionLoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = WeConvene(get_config("tiny"))
    criterion = RateDistortionLoss(LossConfig(lmbda=0.013))
    main = [p for name, p in model.named_parameters() if not name.endswith(".quantiles")]
    aux = [p for name, p in model.named_parameters() if name.endswith(".quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, lr=1e-3), torch.optim.Adam(aux, lr=1e-3)
    for _ in range(steps):
        crops = []
        for _ in range(TINY_BATCH):
            photo = photos[rng.integers(len(photos))]
            top, left = rng.integers(photo.shape[0] - TINY_CROP), rng.integers(photo.shape[1] - TINY_CROP)
            crops.append(photo[top : top + TINY_CROP, left : left + TINY_CROP])
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        criterion(model(x), x)["loss"].backward()
        optimizer.step()
        model.aux_loss().backward()
        aux_optimizer.step()
    model.update(force=True)
    return model.eval()


def train_tiny_on_photos(photos_dir: Path):
    """:func:`train_tiny` on the first 16 photos of ``photos_dir``, on one thread (the suite's
    trained model; benchmarks/rate_honesty.py and integer_path.py build theirs with it)."""
    import torch

    from harness.pixels.images import load_rgb

    photos = [load_rgb(path).pixels for path in sorted(photos_dir.glob("*.png"))[:16]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny(photos, TINY_STEPS)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_tiny(photos_dir, tmp_path_factory):
    """One briefly trained ``tiny`` per run (session fixtures start before the function-scoped
    one_thread, so :func:`train_tiny_on_photos` sets its own thread count). Under pytest-xdist the
    first worker to ask trains it and saves a checkpoint in the run's shared temporary folder;
    the others load that file, so every worker tests the same model and it trains once."""
    from filelock import FileLock

    from harness.artefacts.checkpoint import load_checkpoint, save_checkpoint

    base = tmp_path_factory.getbasetemp()  # a worker's is a folder in the run's
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = shared / "trained-tiny.pt"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            save_checkpoint(train_tiny_on_photos(photos_dir), path)
    return load_checkpoint(path).eval()