"""Connecting a stage's driver to Ray: a given cluster, or a private local instance.

Every stage runs the same code locally and on a cluster. With an address
(``HOST:PORT``, ``auto``, ``ray://…``) the driver joins that cluster; inside a
Ray Job (``RAY_ADDRESS`` set by Ray) it joins the job's cluster; otherwise it
starts a private instance on 127.0.0.1 — ``address="local"``, so it never
attaches to some other Ray that happens to run on the same host.
"""

from __future__ import annotations

import os

from harness.errors import HarnessError


def connect(address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = False) -> bool:
    """Initialise Ray unless it already is; returns True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=log_to_driver)
        except (ConnectionError, RuntimeError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise HarnessError(f"cannot join the Ray cluster at {address}: {reason}") from None
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=log_to_driver, configure_logging=True, logging_level="warning")
    return True
