"""What the cluster has and sees: its nodes (alive, and those its autoscaler may add), and whether every node
can use the config's local paths.

Why before any work: reads and shard writes run on any node, and the job's resource fit is judged against
the largest node the cluster may have, not only the one the driver runs on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from neuro_caduceus.cohort.config import CohortConfig

PATH_KEYS = (
    ("inputs", "matrix_table"), ("inputs", "haplotypes_parquet"), ("inputs", "vcf"),
    ("inputs", "reference_fasta"), ("inputs", "gtf"), ("inputs", "gene_set"),
    ("qc", "include_samples"), ("qc", "exclude_samples"), ("model", "checkpoint"), ("output", "dir"),
)
SEE_ADVICE = "use a URL (gs://, s3://, https://) or a path on storage every node mounts"


class PreflightError(ValueError):
    """A config that cannot run where it was submitted; the message says what to change."""


def is_url(path: str) -> bool:
    return "://" in path


def local_paths(cfg: CohortConfig) -> dict[str, str]:
    """`section.key` -> value for every path in the config that is a local path (not a URL)."""
    found = {}
    for section, key in PATH_KEYS:
        value = getattr(getattr(cfg, section), key)
        if value is not None and not is_url(str(value)):
            found[f"{section}.{key}"] = str(value)
    return found


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def path_problems(paths: dict[str, str]) -> list[str]:
    """Local paths this process cannot use: inputs missing, or an output whose folder is not writable."""
    problems = []
    for dotted, value in paths.items():
        path = Path(value)
        if dotted == "output.dir":
            base = _nearest_existing(path)
            if not (base.is_dir() and os.access(base, os.W_OK)):
                problems.append(f"{dotted}: {value} cannot be created here ({base} is not a writable folder)")
        elif not path.exists():
            problems.append(f"{dotted}: {value} does not exist here")
    return problems


def check_paths_on_nodes(cfg: CohortConfig) -> None:
    """Every local path must be usable on every alive node: reads and shard writes run on any of them."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = local_paths(cfg)
    if not paths:
        return
    probe = ray.remote(num_cpus=0)(path_problems)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(paths) for n in nodes]
    problems = []
    for node, found in zip(nodes, ray.get(refs), strict=True):
        problems += [f"{p} (node {node['NodeManagerAddress']} {node['NodeID'][:8]})" for p in found]
    if problems:
        raise PreflightError(
            "paths the cluster cannot see:\n  " + "\n  ".join(problems) + f"\n{SEE_ADVICE} (local paths must "
            "exist on every node; outputs are written by tasks on any node)"
        )


# ------------------------------------------------------------------------------------------------- nodes
@dataclass
class ClusterShape:
    """The nodes the job may use: alive ones plus those an autoscaler may still add (max count each)."""

    nodes: list[dict[str, float]] = field(default_factory=list)
    described: list[str] = field(default_factory=list)

    def total(self, key: str) -> float:
        return sum(n.get(key, 0.0) for n in self.nodes)

    def largest(self, key: str) -> float:
        return max((n.get(key, 0.0) for n in self.nodes), default=0.0)


def _autoscaler_config() -> dict | None:
    """The autoscaling config of this cluster's monitor (on the head: the driver runs there)."""
    import ray

    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[-1]  # the host part may be another alias
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        gcs = next((a for a in argv if a.startswith("--gcs-address=")), "")
        if not any(a.endswith("monitor.py") for a in argv) or gcs.rsplit(":", 1)[-1] != port:
            continue
        conf = next((a.split("=", 1)[1] for a in argv if a.startswith("--autoscaling-config=")), None)
        if conf and Path(conf).expanduser().is_file():
            import yaml

            return yaml.safe_load(Path(conf).expanduser().read_text())
    return None


def cluster_shape() -> ClusterShape:
    """Alive nodes, plus the worker types of the autoscaler's config at their max_workers."""
    import ray

    shape = ClusterShape()
    for n in ray.nodes():
        if n["Alive"]:
            res = n["Resources"]
            shape.nodes.append({k: float(res.get(k, 0.0)) for k in ("CPU", "GPU")})
            shape.described.append(f"node {n['NodeManagerAddress']}: {_fmt(shape.nodes[-1])}")
    conf = _autoscaler_config() or {}
    head = conf.get("head_node_type")
    for name, spec in (conf.get("available_node_types") or {}).items():
        res = spec.get("resources") or {}
        count = int(spec.get("max_workers", 0))
        if name == head or count <= 0 or "CPU" not in res:
            continue
        node = {k: float(res.get(k, 0.0)) for k in ("CPU", "GPU")}
        shape.nodes += [node] * count
        shape.described.append(f"autoscaler type {name}: up to {count} x {_fmt(node)}")
    return shape


def _fmt(node: dict[str, float]) -> str:
    return f"{node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU"
