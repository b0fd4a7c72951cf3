"""Session-wide fixtures: one local Ray and one local Hail per test run (Hail's stop alone costs ~10 s)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
