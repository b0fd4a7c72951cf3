"""Start or join Ray the same way everywhere (the CLI commands, the jobs, the library's parallel steps).

`ray.init()` with no address already joins the cluster named by RAY_ADDRESS (set by `ray job submit`), else
a cluster started with `ray start` on this machine, else it starts a local one. Ray that is already
initialised in this process (a test fixture, an earlier stage of the demo) is reused as it is. Workers'
logs are not forwarded to the driver: the commands print their own one-screen summaries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray


def ensure_ray(address: str | None = None, **local: Any) -> bool:
    """Join or start Ray unless this process already has it; True when this call connected it.

    `local`: ray.init's options for a Ray started here (num_cpus, num_gpus, include_dashboard: benchmarks).
    """
    if ray.is_initialized():
        return False
    ray.init(address=address, log_to_driver=False, **local)
    return True


@contextmanager
def ray_session(address: str | None = None, **local: Any) -> Iterator[None]:
    """Ray for the duration of the block (see `ensure_ray`); disconnects only a session it connected."""
    started = ensure_ray(address, **local)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
