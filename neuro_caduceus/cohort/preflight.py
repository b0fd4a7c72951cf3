"""Checks made before the cohort job does any work: where the cluster sees the config's paths, whether the
compute settings fit the cluster's resources, and the `--dry-run` report.

Why up front: a job meant to run for hours on a GPU cluster must fail in seconds, naming the key and the
numbers, not after its first gene (or never: CPU actors that take every CPU leave the planning and writing
tasks none, and the job waits forever without a word).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from neuro_caduceus.cohort.config import CohortConfig, Inputs
from neuro_caduceus.cohort.plan import open_reference
from neuro_caduceus.cohort.source import HaplotypeSource, open_source, url_exists
from neuro_caduceus.genome.haplotypes import build_sequence
from neuro_caduceus.genome.strategies import n_haps
from neuro_caduceus.variants.qc import QCConfig

PATH_KEYS = (
    ("inputs", "matrix_table"), ("inputs", "haplotypes_parquet"), ("inputs", "vcf"),
    ("inputs", "reference_fasta"), ("inputs", "gtf"), ("inputs", "gene_set"),
    ("qc", "include_samples"), ("qc", "exclude_samples"), ("model", "checkpoint"), ("output", "dir"),
)
HALF_DTYPES = ("bfloat16", "float16")
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


def _with_path(cfg: CohortConfig, dotted: str, value: str) -> CohortConfig:
    section, key = dotted.split(".")
    part = getattr(cfg, section).model_copy(update={key: value})
    return cfg.model_copy(update={section: part})


# ------------------------------------------------------------------------------------ paths on the cluster
def ray_package_dir(cwd: Path | None = None) -> Path | None:
    """The folder `ray job submit --working-dir` unpacked the upload into (the job's cwd), if any."""
    cwd = (cwd or Path.cwd()).resolve()
    return next((p for p in (cwd, *cwd.parents) if p.name.startswith("_ray_pkg_")), None)


def relocate_for_cluster(cfg: CohortConfig, package: Path | None, client_dir: str | None) -> CohortConfig:
    """Move relative paths that resolved into Ray's temporary package folder to where they really are.

    Inputs that were uploaded with the working directory stay; the others (ignored by .gitignore, or
    outside the upload) and output.dir are taken relative to `client_dir` (the submitting machine's folder,
    passed by scripts/submit.sh); without it they are an error. Output never lands in the package folder:
    Ray deletes it when the job ends.
    """
    if package is None:
        return cfg
    for dotted, value in local_paths(cfg).items():
        path = Path(value)
        if not path.is_relative_to(package):
            continue
        if dotted != "output.dir" and path.exists():
            continue  # shipped with --working-dir: every node unpacks the same upload
        rel = path.relative_to(package)
        if client_dir is None:
            why = ("would be written into Ray's temporary package folder and lost when the job ends"
                   if dotted == "output.dir" else "was not uploaded with --working-dir (ignored by "
                   ".gitignore or outside the working directory)")
            raise PreflightError(f"{dotted}: {rel} {why}; {SEE_ADVICE}, or submit with scripts/submit.sh")
        cfg = _with_path(cfg, dotted, str(Path(client_dir) / rel))
    return cfg


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


# ---------------------------------------------------------------------------------------------- resources
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


def actor_gpus(cfg: CohortConfig, alive_gpus: float) -> float:
    """GPUs per embedding actor, as the job decides it (unset: 1 if the cluster has a GPU now)."""
    if cfg.compute.gpus_per_actor is not None:
        return cfg.compute.gpus_per_actor
    return 1.0 if alive_gpus > 0 else 0.0


def resource_problems(cfg: CohortConfig, shape: ClusterShape, alive_gpus: float) -> list[str]:
    """Compute settings the cluster cannot run, each with its arithmetic."""
    c, m = cfg.compute, cfg.model
    gpus = actor_gpus(cfg, alive_gpus)
    where = "; ".join(shape.described) or "no nodes"
    problems = []
    if gpus > 0:
        if m.device == "cpu":
            problems.append(f"model.device is cpu but compute.gpus_per_actor = {gpus:g}: set one of them")
        if shape.largest("GPU") < gpus:
            problems.append(
                f"compute.gpus_per_actor = {gpus:g} but the largest node has {shape.largest('GPU'):g} GPU(s) "
                f"({where}); lower gpus_per_actor, or add GPU nodes")
        need = c.cpus_per_task
        if shape.largest("CPU") < need:
            problems.append(f"compute.cpus_per_task = {need:g} but the largest node has "
                            f"{shape.largest('CPU'):g} CPU(s) ({where})")
    else:
        if m.device == "cuda":
            problems.append("model.device is cuda but the actors get no GPU (compute.gpus_per_actor is 0, or "
                            f"unset and the cluster has no GPU now: {where}); set compute.gpus_per_actor: 1")
        if m.dtype in HALF_DTYPES:
            problems.append(f"model.dtype {m.dtype} needs CUDA GPUs but the actors would run on CPU "
                            f"({where}); use float32 on CPU, or gpus_per_actor: 1 on GPUs")
        actors = c.actors_min * c.cpus_per_actor
        total, largest = shape.total("CPU"), shape.largest("CPU")
        if largest < c.cpus_per_actor:
            problems.append(f"compute.cpus_per_actor = {c.cpus_per_actor:g} but the largest node has "
                            f"{largest:g} CPU(s) ({where})")
        if actors + c.cpus_per_task > total:
            problems.append(
                f"CPU actors leave the planning/writing stages no CPU: actors_min {c.actors_min} x "
                f"cpus_per_actor {c.cpus_per_actor:g} = {actors:g} CPU + cpus_per_task {c.cpus_per_task:g} = "
                f"{actors + c.cpus_per_task:g} > {total:g} CPU in the cluster ({where}); lower "
                "compute.actors_min, cpus_per_actor or cpus_per_task")
    return problems


def check_resources(cfg: CohortConfig) -> None:
    import ray

    problems = resource_problems(cfg, cluster_shape(), ray.cluster_resources().get("GPU", 0.0))
    if problems:
        raise PreflightError("compute settings cannot run on this cluster:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------- dry run
def checkpoint_summary(url: str) -> dict[str, Any]:
    """config.json + the weights' tensor metadata (safetensors header); no model is built, no weights read."""
    from neuro_caduceus.model.families import WEIGHT_FILES, describe_checkpoint  # loads torch

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/config.json"):
        raise FileNotFoundError(f"{url}: no config.json in this checkpoint folder")
    with fs.open(f"{root}/config.json", "rb") as f:
        described = describe_checkpoint(json.loads(f.read()))
    weights = next((n for n in WEIGHT_FILES if fs.exists(f"{root}/{n}")), None)
    if weights is None:
        raise FileNotFoundError(f"{url}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    out: dict[str, Any] = {**described, "weights": weights, "bytes": fs.size(f"{root}/{weights}")}
    if weights.endswith(".safetensors"):
        with fs.open(f"{root}/{weights}", "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        out["tensors"] = len(tensors)
        out["parameters"] = sum(_prod(v["shape"]) for v in tensors.values())
        out["stored_dtypes"] = sorted({v["dtype"] for v in tensors.values()})
    return out


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def input_problems(inputs: Inputs, qc: QCConfig, source: HaplotypeSource) -> list[str]:
    """Inputs that are missing or incomplete (an index, the MatrixTable's metadata, the export's parts)."""
    need = {"inputs.reference_fasta": [inputs.reference_fasta, inputs.reference_fasta + ".fai"],
            "inputs.gtf": [inputs.gtf], "inputs.gene_set": [inputs.gene_set]}
    for key in ("include_samples", "exclude_samples"):
        if getattr(qc, key):
            need[f"qc.{key}"] = [str(getattr(qc, key))]
    problems = [f"{dotted}: {path} not found" for dotted, files in need.items() for path in files
                if not url_exists(path)]
    return problems + source.problems()


def dry_run(cfg: CohortConfig) -> dict[str, Any]:
    """Every check the job makes before working, and what it would do; `errors` empty = it can start."""
    import ray

    from neuro_caduceus.cohort.embed import check_window
    from neuro_caduceus.cohort.job import build_units  # loads torch: only when a dry run is asked for
    from neuro_caduceus.ray_session import ensure_ray

    source = open_source(cfg.inputs, cfg.qc)
    report: dict[str, Any] = {"errors": [], "config_hash": cfg.result_hash(), "source": source.kind}
    errors = report["errors"]
    errors += input_problems(cfg.inputs, cfg.qc, source)
    try:
        report["checkpoint"] = checkpoint_summary(cfg.model.checkpoint)
    except (OSError, ValueError, KeyError) as err:
        errors.append(f"model.checkpoint: {err}")
    else:
        try:
            check_window(cfg)
        except ValueError as err:
            errors.append(str(err))
    ensure_ray()
    if errors:
        return report  # units and subjects need readable inputs
    shape, alive_gpus = cluster_shape(), ray.cluster_resources().get("GPU", 0.0)
    report["cluster"] = shape.described
    report["gpus_per_actor"] = actor_gpus(cfg, alive_gpus)
    errors += resource_problems(cfg, shape, alive_gpus)
    try:
        units = build_units(cfg)
    except (OSError, ValueError) as err:
        errors.append(f"inputs.gene_set: {err}")
        return report
    windows = [w for u in units for w in u.windows]
    subjects, qc = source.subjects_and_qc([u.region for u in units])
    haps = n_haps(cfg.haplotype_strategy)
    ref_bases = sum(w.length for w in windows)
    ref_tokens = reference_tokens(cfg, windows)
    report.update(
        genes=len(units), subjects=len(subjects), samples=qc.get("samples"), reference_windows=len(windows),
        reference_bases=ref_bases, reference_tokens=ref_tokens,
        naive_tokens=ref_tokens * len(subjects) * haps,
    )
    return report


def reference_tokens(cfg: CohortConfig, windows: list) -> int:
    """The encoder's model tokens over the reference windows (its tokenizer on their sequences)."""
    from neuro_caduceus.model.families import token_counter

    count = token_counter(cfg.model.checkpoint)
    reference = open_reference(cfg.inputs.reference_fasta)
    return sum(count(build_sequence(reference, w, []).sequence) for w in windows)


def format_report(report: dict[str, Any]) -> str:
    lines = [f"dry run: source {report['source']}, config hash {report['config_hash']}"]
    ck = report.get("checkpoint")
    if ck:
        params = f", {ck['parameters']:,} parameters" if "parameters" in ck else ""
        lines.append(f"  checkpoint: {ck['label']}, {ck['weights']} {ck['bytes']:,} bytes{params}")
    lines += [f"  cluster: {c}" for c in report.get("cluster", [])]
    if "gpus_per_actor" in report:
        lines.append(f"  embedding actors: {report['gpus_per_actor']:g} GPU each"
                     + (" (CPU actors)" if report["gpus_per_actor"] == 0 else ""))
    if "genes" in report:
        lines.append(f"  genes {report['genes']}, subjects {report['subjects']}, reference windows "
                     f"{report['reference_windows']}")
        lines.append(f"  model tokens: {report['reference_tokens']:,} reference "
                     f"({report['reference_bases']:,} bases, embedded once) .. "
                     f"{report['naive_tokens']:,} if every subject haplotype were embedded; the job embeds "
                     "the reference plus the windows that carry variants")
    lines += [f"  ERROR {e}" for e in report["errors"]]
    lines.append("dry run: OK, the job can start" if not report["errors"]
                 else f"dry run: {len(report['errors'])} problem(s); nothing was run")
    return "\n".join(lines)


def run_on_cluster(cfg: CohortConfig, dry: bool, overwrite: bool) -> int:
    """Inside a submitted job (Ray already joined): paths visible on every node, then either the dry-run
    report (exit code 2 when it found errors) or the resource check and the job itself."""
    from neuro_caduceus.cohort.job import run_embed_cohort

    check_paths_on_nodes(cfg)
    if dry:
        report = dry_run(cfg)
        print(format_report(report), flush=True)
        return 2 if report["errors"] else 0
    check_resources(cfg)
    run_embed_cohort(cfg, overwrite=overwrite)
    return 0
