"""Start or join Ray the same way everywhere (the CLI commands, the jobs, the library's parallel steps).

`ray.init()` with no address already joins the cluster named by RAY_ADDRESS (set by `ray job submit`), else
a cluster started with `ray start` on this machine, else it starts a local one. Ray that is already
initialised in this process (a test fixture, an earlier stage of the demo) is reused as it is. Workers'
logs are not forwarded to the driver: the commands print their own one-screen summaries.

A local Ray started here is registered (its processes, by pid and start time) until the driver disconnects;
a driver killed outright (SIGKILL, OOM) cannot stop it, so the next command that starts Ray on this machine
ends the processes a dead driver registered, and only those (Linux: read from /proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

REGISTRY = Path(tempfile.gettempdir()) / f"neuro-caduceus-ray-{os.getuid() if hasattr(os, 'getuid') else 0}"


def ensure_ray(address: str | None = None, **local: Any) -> bool:
    """Join or start Ray unless this process already has it; True when this call connected it.

    `local`: ray.init's options for a Ray started here (num_cpus, num_gpus, include_dashboard: benchmarks).
    """
    if ray.is_initialized():
        return False
    end_orphans()
    ray.init(address=address, log_to_driver=False, **local)
    register_local_ray()
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
            unregister_local_ray()


# Ray Data's threads that read an iterator's blocks (names as Ray 2.60 gives them): a closed iteration
# leaves them finishing a Ray call for a moment
_BLOCK_READERS = ("iter_threaded", "StreamingExecutor-")


@contextmanager
def dataset_batches(ds: ray.data.Dataset, **kwargs: Any) -> Iterator[Iterator[Any]]:
    """ds.iter_batches(**kwargs) for a driver loop over small result rows (no prefetching: nothing to
    overlap), closed on the way out, also on an exception such as Ctrl-C, and the block readers it started
    waited for: a Ray call still running in one when the session's ray.shutdown() comes touches the
    shut-down core worker, and Ray then ends the process with exit code 1 (not the interrupt's 130)."""
    before = set(threading.enumerate())
    batches = iter(ds.iter_batches(prefetch_batches=0, **kwargs))
    try:
        yield batches
    finally:
        batches.close()
        deadline = time.monotonic() + 30.0  # bounded: a reader stuck in Ray must not hang the exit
        for reader in set(threading.enumerate()) - before:
            if reader.name.startswith(_BLOCK_READERS):
                reader.join(max(0.0, deadline - time.monotonic()))


def _start_time(pid: int) -> int | None:
    """The kernel's start time of process `pid` (None when it does not exist): pid + start time name one
    process, never a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def register_local_ray() -> None:
    """Record the Ray processes this driver started (none when it joined a cluster)."""
    if not Path("/proc/self/stat").exists():
        return
    own = [(p, _start_time(p)) for p in _descendants(os.getpid())]
    if own:
        REGISTRY.mkdir(exist_ok=True)
        entry = {"driver": [os.getpid(), _start_time(os.getpid())], "processes": own}
        (REGISTRY / f"{os.getpid()}.json").write_text(json.dumps(entry))


def unregister_local_ray() -> None:
    with contextlib.suppress(FileNotFoundError):
        (REGISTRY / f"{os.getpid()}.json").unlink()


def end_orphans() -> list[int]:
    """Kill the registered Ray processes of drivers that no longer run; returns their pids.

    SIGKILL: the orphaned agents catch SIGTERM and wait for a raylet that is gone.
    """
    ended = []
    for path in sorted(REGISTRY.glob("*.json")) if REGISTRY.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            driver, started = entry["driver"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _start_time(driver) == started:
            continue  # the driver still runs: its Ray is its own business
        for pid, start in entry.get("processes", []):
            if start is not None and _start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    ended.append(pid)
        path.unlink(missing_ok=True)
    return ended
