"""Session-wide fixtures: one local Ray and one local Hail per test run (Hail's stop alone costs ~10 s)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers: this environment

DATA_DIR = Path(__file__).parent / "data"
GOLDEN_DIR = DATA_DIR / "golden"


def write_job_config(d: Path, out: str, inputs: dict, actors: int, **sections: dict) -> Path:
    """A small CPU cohort-job config in `d` (checkpoint d/ckpt, window 512, `actors` one-CPU actors, output
    d/out); `sections` adds config sections (e.g. regions). Returns the YAML's path."""
    body = {
        "inputs": inputs, **sections,
        "model": {"checkpoint": str(d / "ckpt"), "device": "cpu", "window": 512},
        "compute": {"actors_min": actors, "actors_max": actors, "cpus_per_actor": 1, "cpus_per_task": 0.5},
        "output": {"dir": str(d / out)},
    }
    path = d / f"{out}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=tempfile.mkdtemp(prefix="ray_"),
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def hail_session(tmp_path_factory):
    """A local Hail (Spark local[2]) shared by every test that needs one."""
    from neuro_caduceus.variants.hail_session import init_hail

    hl = init_hail(tmp_dir=str(tmp_path_factory.mktemp("hail")))
    yield hl


AGENT_PORT_FLAGS = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                    "--runtime-env-agent-port", "--ray-client-server-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_ports() -> list[str]:
    """Free ports for a node's agents: the session's local Ray (other tests) holds the defaults."""
    return [arg for flag in AGENT_PORT_FLAGS for arg in (flag, str(free_port()))]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) from /proc."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(entry.name)] = (ppid, cmd)
    return procs


def kill_cluster(temp: str) -> None:
    """SIGKILL the processes of one cluster (their command lines name its temp dir) and their descendants.

    Not `ray stop`: that stops every Ray on the machine, the in-process `ray_session` included.
    """
    procs = processes()
    mine = {pid for pid, (_, cmd) in procs.items() if temp in cmd} - {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    for pid in mine:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


HEAD_TOKEN_COMMAND = "ray get-auth-token --generate > /dev/null"
HEAD_START_COMMAND = "ray start --head --dashboard-host 127.0.0.1"


@pytest.fixture(scope="session")
def ray_head():
    """A real `ray start --head` on 127.0.0.1 with token authentication, its own ports, temp dir and HOME.

    The commands are docs/cluster.md's (HEAD_TOKEN_COMMAND, HEAD_START_COMMAND) plus own ports. `env` is the
    shell they ran in: RAY_AUTH_MODE=token, HOME holding .ray/auth_token, PATH starting with this
    environment's bin/ (so a job entrypoint's `python` is the project's environment, as after
    `source .venv/bin/activate`).
    """
    try:
        import aiohttp_cors  # noqa: F401  (the dashboard's job API needs ray[default])
    except ImportError:
        pytest.fail("`ray job submit` needs the Ray dashboard: pip install 'ray[default]' (ray's version)")
    port, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="nc_head_", dir="/tmp")  # short: Ray's socket paths have a length limit
    home = Path(temp) / "home"
    home.mkdir()
    bindir = str(Path(sys.executable).parent)
    drop = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(RAY_AUTH_MODE="token", HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{bindir}:{env.get('PATH', '')}")
    start = [HEAD_START_COMMAND, "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
             "--dashboard-port", str(dash), "--temp-dir", temp, "--disable-usage-stats", *own_ports()]
    for command in (HEAD_TOKEN_COMMAND, " ".join(start)):
        subprocess.run(["bash", "-c", command], check=True, env=env, capture_output=True, timeout=120)
    try:
        yield SimpleNamespace(gcs=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dash}", env=env,
                              temp=temp)
    finally:
        kill_cluster(temp)
