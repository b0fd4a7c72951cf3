"""The cohort embedding job: a streaming Ray Data pipeline over gene work units, resumable after any crash.

    pending genes -> [CPU task] read the gene's unique haplotypes, plan its distinct windows
                  -> [actor pool, GPU or CPU] EmbedWindows: pooled (sum, length) per distinct window
                  -> [CPU task] haplotype and subject embeddings, shard written and committed by rename
                  -> the driver receives one small stats row per gene (never an embedding)

Why genes as units: a unit is read, embedded and written independently, so a re-run after a crash (actor,
worker or driver killed, spot preemption) skips the committed shards and redoes only the rest; the rows of a
unit do not depend on which run wrote it, so the union equals an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from neuro_caduceus.cohort.config import CohortConfig, load_config
from neuro_caduceus.cohort.embed import KILL_AFTER_ENV, KILL_MARKER_ENV, EmbedWindows
from neuro_caduceus.cohort.plan import GeneUnit, open_reference, plan_gene
from neuro_caduceus.cohort.rc_check import rc_check_for_job
from neuro_caduceus.cohort.shards import unit_name, write_unit
from neuro_caduceus.variants.genotype_counts import apply_genotype_summary

JOB_FILE = "_job.json"


def build_units(cfg: CohortConfig) -> list[GeneUnit]:
    """Gene set -> regions -> windows, on the driver (genes only: small)."""
    from neuro_caduceus.genome.annotation import read_genes
    from neuro_caduceus.genome.genesets import load_gene_set, resolve_gene_set
    from neuro_caduceus.genome.regions import RegionSpec, build_regions, tile_windows

    genes = resolve_gene_set(load_gene_set(cfg.inputs.gene_set), read_genes(cfg.inputs.gtf))
    spec = RegionSpec(mode=cfg.regions.mode, flank=cfg.regions.flank, orient=cfg.regions.orient)
    stride = cfg.model.stride or cfg.model.window
    return [
        GeneUnit(r.region_id, r.gene_name, r, list(tile_windows(r, cfg.model.window, stride)))
        for r in build_regions(genes, spec)
    ]


def _resolve(subjects: Any) -> list[str]:
    """The subject list arrives as an object-store reference (one copy per node, not one per task)."""
    import ray

    return ray.get(subjects) if isinstance(subjects, ray.ObjectRef) else subjects


def _plan_batch(batch: dict[str, Any], cfg: CohortConfig, subjects: Any) -> dict[str, Any]:
    """CPU stage: gene units -> pickled GenePlans (distinct windows to embed + how to reassemble)."""
    from neuro_caduceus.cohort.source import read_gene_haplotypes

    subjects = _resolve(subjects)
    plans = []
    for blob in batch["unit"]:
        unit: GeneUnit = pickle.loads(blob)
        counts: list = []  # hook (variants/genotype_counts.py): per subject-gene missing/unphased het calls
        haplotypes = read_gene_haplotypes(cfg, unit.region, subjects, counts)
        plan = plan_gene(open_reference(cfg.inputs.reference_fasta), unit, haplotypes)
        plan.genotype_counts = pa.concat_tables(counts) if counts else None
        plans.append(pickle.dumps(plan))
    return {"gene_id": batch["gene_id"], "plan": np.array(plans, dtype=object)}


def _write_batch(
    batch: dict[str, Any], cfg: CohortConfig, subjects: Any, recipe: dict, n_haps: int
) -> dict[str, Any]:
    """CPU stage: embedded plans -> committed shards; naive = every subject haplotype embedded whole."""
    subjects = _resolve(subjects)
    rows, stats_out = [], []
    for blob in batch["plan"]:
        plan = pickle.loads(blob)
        stats = dict(plan.counts, gene_id=plan.unit.gene_id, gene_name=plan.unit.gene_name)
        stats["subjects"] = len(subjects)
        stats["naive_windows"] = len(subjects) * n_haps * stats["windows_per_reference"]
        ref_haps = len(subjects) * n_haps - stats.pop("carrier_subject_haplotypes")
        stats["naive_tokens"] = stats.pop("carrier_haplotype_tokens") + ref_haps * stats["reference_tokens"]
        rows.append(write_unit(plan, subjects, cfg.haplotype_strategy, cfg.output.dir, recipe, stats,
                               cfg.qc.max_missing))
        stats_out.append(json.dumps(stats))
    return {"gene_id": batch["gene_id"], "rows": np.array(rows), "stats": np.array(stats_out, dtype=object)}


def _gpus_per_actor(cfg: CohortConfig) -> float:
    import ray

    if cfg.compute.gpus_per_actor is not None:
        return cfg.compute.gpus_per_actor
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _prepare_output(cfg: CohortConfig, checkpoint_sha: str, overwrite: bool) -> tuple[Any, str]:
    """Create or validate the output folder; refuse to mix results of another config or checkpoint."""
    fs, root = fsspec.core.url_to_fs(cfg.output.dir)
    ident = {"config_hash": cfg.result_hash(), "checkpoint_sha256": checkpoint_sha}
    job_file = f"{root}/{JOB_FILE}"
    if fs.exists(job_file):
        with fs.open(job_file, "r") as f:
            old = json.load(f)
        same = {k: old.get(k) for k in ident} == ident
        if not same and not overwrite:
            raise FileExistsError(
                f"{cfg.output.dir} holds output of another config or checkpoint "
                f"(stored {old.get('config_hash')}/{str(old.get('checkpoint_sha256'))[:12]}, now "
                f"{ident['config_hash']}/{checkpoint_sha[:12]}); use a new output.dir or --overwrite"
            )
    elif fs.exists(root) and fs.ls(root) and not overwrite:
        raise FileExistsError(f"{cfg.output.dir} exists and is not a cohort job output; use --overwrite")
    if overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    for sub in ("", "/shards", "/units"):
        fs.makedirs(f"{root}{sub}", exist_ok=True)
    if not fs.exists(job_file):
        tmp = f"{job_file}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open(tmp, "w") as f:
            json.dump({**ident, "config": cfg.model_dump(mode="json")}, f, indent=1)
        fs.mv(tmp, job_file)
    return fs, root


def _cohort(fs: Any, root: str, cfg: CohortConfig, units: list[GeneUnit]) -> tuple[list[str], dict]:
    """Subjects and QC summary, computed once per output folder (a resumed run reuses them verbatim)."""
    from neuro_caduceus.cohort.source import cohort_subjects_and_qc

    path = f"{root}/_cohort.json"
    if fs.exists(path):
        with fs.open(path, "r") as f:
            saved = json.load(f)
        return saved["subjects"], saved["qc"]
    subjects, qc = cohort_subjects_and_qc(cfg, [u.region for u in units])
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "w") as f:
        json.dump({"subjects": subjects, "qc": qc}, f)
    fs.mv(tmp, path)
    return subjects, qc


def _debug_kill() -> tuple[int, str] | None:
    after, marker = os.environ.get(KILL_AFTER_ENV), os.environ.get(KILL_MARKER_ENV)
    return (int(after), marker) if after and marker else None


def run_embed_cohort(config: CohortConfig | str | Path, overwrite: bool = False, quiet: bool = False) -> dict:
    """Run (or resume) the job; returns the manifest (also written to <output.dir>/manifest.json)."""
    import ray

    from neuro_caduceus.cohort.manifest import build_manifest, format_summary, write_manifest
    from neuro_caduceus.model import from_pretrained
    from neuro_caduceus.model.embedder import Embedder

    cfg = config if isinstance(config, CohortConfig) else load_config(config)
    t0 = time.time()
    embedder = Embedder(from_pretrained(cfg.model.checkpoint), device="cpu", dtype=cfg.model.dtype,
                        window=cfg.model.window, stride=cfg.model.stride or cfg.model.window)
    model_recipe = embedder.recipe()
    fs, root = _prepare_output(cfg, model_recipe["checkpoint_sha256"], overwrite)
    for stale in fs.glob(f"{root}/shards/.*.tmp-*"):  # a crashed run's uncommitted shard
        fs.rm(stale)
    units = build_units(cfg)
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    subjects, qc = _cohort(fs, root, cfg, units)
    # hook (cohort/rc_check.py): the RC check stage, once per output folder, before scale-out
    rc_check = rc_check_for_job(cfg, fs, root, [u.gene_id for u in units], _gpus_per_actor(cfg))
    recipe = _recipe(cfg, model_recipe, units, qc, rc_check)
    done = {p.rsplit("/", 1)[-1][: -len(".parquet")] for p in fs.glob(f"{root}/shards/*.parquet")}
    pending = [u for u in units if unit_name(u.gene_id) not in done]
    n_haps = 2 if cfg.haplotype_strategy == "diploid" else 1
    new_stats: list[dict] = []
    if pending:
        ds = _pipeline(cfg, pending, subjects, recipe, n_haps, embedder.dim)
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
            new_stats.extend(json.loads(s) for s in batch["stats"])
    manifest = build_manifest(fs, root, cfg, recipe, units, subjects, qc, len(units) - len(pending),
                              new_stats, time.time() - t0)
    manifest["rc_check"] = rc_check  # hook (cohort/rc_check.py)
    apply_genotype_summary(manifest, cfg.haplotype_strategy, cfg.qc.max_missing)  # hook (genotype_counts.py)
    write_manifest(fs, root, manifest)
    if not quiet:
        print(format_summary(manifest), file=sys.stdout, flush=True)
    return manifest


def _pipeline(cfg: CohortConfig, pending: list[GeneUnit], subjects: list[str], recipe: dict, n_haps: int,
              dim: int):
    import ray

    compute = cfg.compute
    items = [{"gene_id": u.gene_id, "unit": pickle.dumps(u)} for u in pending]
    subjects_ref = ray.put(subjects)  # shipped once to the object store, not once per task
    gpus = _gpus_per_actor(cfg)
    device = cfg.model.device if cfg.model.device != "auto" else ("cuda" if gpus > 0 else "cpu")
    actor_resources: dict[str, Any] = {"num_gpus": gpus} if gpus > 0 else {"num_cpus": compute.cpus_per_actor}
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        _plan_batch, batch_size=1, fn_kwargs={"cfg": cfg, "subjects": subjects_ref},
        num_cpus=compute.cpus_per_task, batch_format="numpy",
    )
    ds = ds.map_batches(
        EmbedWindows,
        fn_constructor_kwargs={
            "checkpoint": cfg.model.checkpoint, "device": device, "dtype": cfg.model.dtype,
            "window_batch_size": compute.window_batch_size, "threads": int(max(1, compute.cpus_per_actor)),
            "debug_kill": _debug_kill(),
        },
        compute=ray.data.ActorPoolStrategy(min_size=compute.actors_min, max_size=compute.actors_max),
        batch_size=compute.genes_per_batch, batch_format="numpy", **actor_resources,
    )  # Ray Data restarts a dead actor (max_restarts=-1) and retries its batch on another by default
    return ds.map_batches(
        _write_batch, batch_size=1, num_cpus=compute.cpus_per_task, batch_format="numpy",
        fn_kwargs={"cfg": cfg, "subjects": subjects_ref, "recipe": recipe, "n_haps": n_haps},
    )


def _recipe(cfg: CohortConfig, model_recipe: dict, units: list[GeneUnit], qc: dict, rc_check: dict) -> dict:
    from neuro_caduceus.provenance import cohort_recipe

    return cohort_recipe(cfg, model_recipe, units, qc, rc_check)
