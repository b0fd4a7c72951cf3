"""Session-wide fixtures: one local Ray and one local Hail per test run (Hail's stop alone costs ~10 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import HEAD_START_COMMAND, HEAD_TOKEN_COMMAND, free_port, kill_cluster, own_ports

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers: this environment

DATA_DIR = Path(__file__).parent / "data"
GOLDEN_DIR = DATA_DIR / "golden"


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
