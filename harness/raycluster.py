"""Connecting a stage's driver to Ray: a given cluster, or a private local instance.

Every stage runs the same code locally and on a cluster. With an address
(``HOST:PORT``, ``auto``, ``ray://…``) the driver joins that cluster; inside a
Ray Job (``RAY_ADDRESS`` set by Ray) it joins the job's cluster; otherwise it
starts a private instance on 127.0.0.1 — ``address="local"``, so it never
attaches to some other Ray that happens to run on the same host.

Every worker of a harness job first runs :func:`setup_worker` (Ray's
``worker_process_setup_hook``, see :func:`runtime_env`): a learned cell's or a
trial's worker imports torch and compressai, whose ~0.5 M long-lived objects
set off about eight full passes of Python's cyclic garbage collector at the
default thresholds (~0.9 s a worker). (A ``harness`` command imports its stage
with the collector off instead, :func:`harness.process_memory.imports_frozen`;
a worker's imports are Ray's to run.)

:func:`as_completed` is the one bounded task pool of the stages that fan out
(prepare-data's shards, the leaderboard's cells).
"""

from __future__ import annotations

import gc
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


# Python's default is a pass of the youngest generation every 700 allocations, and a full pass
# every 100 of those, once the objects that survived exceed a quarter of the long-lived ones.
YOUNG_COLLECTION_EVERY = 50_000


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for every worker of a harness job (before its first
    task): collect the youngest generation every :data:`YOUNG_COLLECTION_EVERY` allocations, so
    that importing torch and compressai sets off no full pass. The collector stays on: a worker
    may live for hours, and Ray's own actors run it too."""
    gc.set_threshold(YOUNG_COLLECTION_EVERY)


def runtime_env() -> dict:
    """The runtime environment of a harness job's workers (merged by Ray with a Ray Job's own)."""
    return {"worker_process_setup_hook": f"{__name__}.{setup_worker.__name__}"}


def connect(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = False) -> bool:
    """Initialise Ray unless it already is; returns True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=log_to_driver, runtime_env=runtime_env())
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise HarnessError(f"cannot join the Ray cluster at {address}: {one_line(error)}") from None
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=log_to_driver, configure_logging=True, logging_level="warning",
                 runtime_env=runtime_env())
    return True


def one_line(error: BaseException) -> str:
    """A failure in one line: a task's own exception (the last line of Ray's traceback text)
    or the first line of anything else (a lost worker or node, a refused connection)."""
    import ray

    text = str(error).strip()
    if not text:
        return type(error).__name__
    lines = text.splitlines()
    return lines[-1].strip() if isinstance(error, ray.exceptions.RayTaskError) else lines[0].strip()


@dataclass(frozen=True)
class Finished(Generic[T]):
    """One item of :func:`as_completed`: its task's return value, or the error that ended it."""

    item: T
    value: Any = None
    error: BaseException | None = None


def as_completed(submit: Callable[[T], Any], items: Iterable[T], *, limit: int | None = None,
                 batch: int = 1, poll_s: float | None = None) -> Iterator[list[Finished[T]]]:
    """Submit ``submit(item)`` (an ObjectRef) for every item, at most ``limit`` in flight, and
    yield the finished ones as they land, up to ``batch`` at a time.

    With ``poll_s`` an empty list comes every ``poll_s`` seconds in which nothing finished, so
    the caller can checkpoint. The pool is refilled before each yield: no worker idles while
    the caller does its bookkeeping. A task that raised, or whose worker or node died after
    Ray's retries, comes back with ``error`` set; it does not stop the others.
    """
    import ray

    queue = deque(items)
    pending: dict[Any, T] = {}

    def fill() -> None:
        while queue and (limit is None or len(pending) < limit):
            item = queue.popleft()
            pending[submit(item)] = item

    fill()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=min(len(pending), batch), timeout=poll_s)
        landed = [(ref, pending.pop(ref)) for ref in ready]
        fill()
        finished = []
        for ref, item in landed:
            try:
                finished.append(Finished(item, ray.get(ref)))
            except ray.exceptions.RayError as error:
                finished.append(Finished(item, error=error))
        yield finished
