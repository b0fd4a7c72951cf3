"""The `--dry-run` report: every check the cohort job makes before working (inputs, checkpoint, cluster fit),
and what it would do.

Why up front: a job meant to run for hours on a GPU cluster must fail in seconds, naming the key and the
numbers, not after its first gene.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from neuro_caduceus.cohort.cluster import cluster_shape
from neuro_caduceus.cohort.config import CohortConfig, Inputs
from neuro_caduceus.cohort.plan import open_reference
from neuro_caduceus.cohort.resources import resource_problems
from neuro_caduceus.cohort.source import HaplotypeSource, open_source, url_exists
from neuro_caduceus.genome.haplotypes import build_sequence
from neuro_caduceus.genome.strategies import n_haps
from neuro_caduceus.io import filesystem
from neuro_caduceus.variants.qc import QCConfig


def checkpoint_summary(url: str) -> dict[str, Any]:
    """config.json + the weights' tensor metadata (safetensors header); no model is built, no weights read."""
    from neuro_caduceus.model.families import WEIGHT_FILES, describe_checkpoint  # loads torch

    fs, root = filesystem(url)
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


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def input_problems(inputs: Inputs, qc: QCConfig, source: HaplotypeSource) -> list[str]:
    """Inputs that are missing or incomplete (an index, the MatrixTable's metadata, the export's parts)."""
    need = {"inputs.reference_fasta": [inputs.reference_fasta, inputs.reference_fasta + ".fai"],
            "inputs.gtf": [inputs.gtf], "inputs.gene_set": [inputs.gene_set]}
    for key in ("include_samples", "exclude_samples"):
        if getattr(qc, key):
            need[f"qc.{key}"] = [str(getattr(qc, key))]
    problems = []
    for dotted, files in need.items():
        for path in files:
            try:
                if not url_exists(path):
                    problems.append(f"{dotted}: {path} not found")
            except Exception as err:  # no filesystem package, no credentials, no network: say so, go on
                problems.append(f"{dotted}: could not check: {_one_line(err)}")
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
    except Exception as err:  # no filesystem package, no credentials, no network
        errors.append(f"model.checkpoint: could not check: {_one_line(err)}")
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
    report["gpus_per_actor"] = cfg.actor_placement(alive_gpus).gpus
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
