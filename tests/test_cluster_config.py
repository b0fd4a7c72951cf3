"""cluster.yaml against Ray's own cluster-config schema, and the versions and settings it promises."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import fillout_defaults, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def ray_pin() -> str:
    """The `ray[...]==X` dependency of pyproject.toml (tomllib is 3.11+; the project supports 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^\s*"ray\[[a-z,]+\]==([0-9.]+)",', text, re.M).group(1)


def test_valid_for_ray_schema(cluster):
    """Ray's schema accepts the file (validate_config raises otherwise), and Ray's defaults keep its node
    types, head type and worker bounds as written."""
    filled = fillout_defaults(copy.deepcopy(cluster))
    validate_config(filled)
    assert filled["head_node_type"] == cluster["head_node_type"] == "head"
    assert filled["available_node_types"].keys() == cluster["available_node_types"].keys()
    assert filled["max_workers"] == cluster["max_workers"] == 8
    for name, spec in cluster["available_node_types"].items():
        for key in ("min_workers", "max_workers", "resources"):
            if key in spec:
                assert filled["available_node_types"][name][key] == spec[key], (name, key)


def test_schema_check_is_real(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["max_wokers"] = 8  # misspelled key
    with pytest.raises(jsonschema.ValidationError, match="max_wokers"):
        validate_config(fillout_defaults(broken))


def test_ray_version_is_the_tested_one(cluster):
    pin = ray_pin()
    assert ray.__version__ == pin  # the version these tests ran with
    assert cluster["docker"]["image"].startswith(f"rayproject/ray:{pin}-")


def test_java_for_hail_and_token_auth_on_every_node(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert re.search(r"apt-get install .*openjdk-11-jre-headless", setup)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in cluster[key] if "ray start" in c)
        assert "export RAY_AUTH_MODE=token;" in start
    assert cluster["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "gcp" not in (ROOT / "cluster.yaml").read_text().lower()  # no GCP variant without a tested example


def test_gpu_worker_resources_match_the_job_defaults(cluster):
    ukb = yaml.safe_load((ROOT / "configs" / "ukb_wes.yaml").read_text())
    worker = cluster["available_node_types"]["gpu_worker"]
    assert worker["resources"]["GPU"] >= ukb["compute"]["gpus_per_actor"]
    assert worker["max_workers"] == cluster["max_workers"] == ukb["compute"]["actors_max"]


def test_pyproject_license_raises_no_setuptools_warning():
    """What `pip install .` / `python -m build` apply, without writing build/ into the repository."""
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), str(ROOT / "pyproject.toml"))
    assert dist.metadata.license_expression == "Apache-2.0"
    assert not [str(w.message) for w in caught if "license" in str(w.message).lower()]


def test_no_deprecated_concurrency_argument():
    """Ray Data's `concurrency=` is deprecated: actor pools are `compute=ActorPoolStrategy(...)`."""
    sources = [*(ROOT / "neuro_caduceus").rglob("*.py"), *(ROOT / "ray_jobs").glob("*.py")]
    assert sources
    offenders = [str(p.relative_to(ROOT)) for p in sources if re.search(r"\bconcurrency\s*=", p.read_text())]
    assert offenders == []
