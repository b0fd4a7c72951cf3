"""The cohort embedding job: window jobs streamed through one actor pool into a window store, then assembled.

    pending genes -> [CPU task] read a gene's unique haplotypes, plan its distinct windows: window jobs
                     (content key + recipe), minus the keys already in the window store; reassembly plan
                     written to plans/<gene>.parquet
                  -> token-bounded batches of jobs from any gene -> [actor pool, GPU or CPU] EmbedWindows:
                     rebuild, embed, commit the batch to the window store; a stats row to the driver
    then          -> [CPU task] per gene: plan + window store -> haplotype and subject embeddings -> shard
                     committed by rename (row count, size and sha256 recorded in units/<gene>.json)

Why windows as the unit of embedding: a gene's windows spread over every actor, a batch is bounded by tokens
whatever the cohort size, and a crash loses at most the batches in flight (committed batches are store hits
on the re-run). Why genes as the unit of output: a shard is written independently, so a re-run skips the
committed (and verified) shards and the union equals an uninterrupted run.

This module is the driver; the worker stages are `cohort.stages`, the job folder's paths `cohort.layout`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import ray

from neuro_caduceus.cohort.config import CohortConfig, load_config
from neuro_caduceus.cohort.embed import actor_placement, embed_window_batches, model_recipe
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.manifest import (
    build_manifest,
    count_batch,
    format_summary,
    new_run,
    write_manifest,
)
from neuro_caduceus.cohort.plan import GeneUnit
from neuro_caduceus.cohort.progress import Progress
from neuro_caduceus.cohort.rc_check import rc_check_for_job
from neuro_caduceus.cohort.shards import read_unit_stats, reference_table, unit_name
from neuro_caduceus.cohort.source import HaplotypeSource, open_source
from neuro_caduceus.cohort.stages import (
    AssemblyStage,
    PlanningStage,
    assemble_genes,
    check_batches,
    check_shards,
    plan_genes,
)
from neuro_caduceus.cohort.store import WindowStore, store_identity
from neuro_caduceus.genome import strategies
from neuro_caduceus.genome.annotation import read_genes
from neuro_caduceus.genome.genesets import load_gene_set, resolve_gene_set
from neuro_caduceus.genome.genotype_counts import apply_genotype_summary
from neuro_caduceus.genome.regions import RegionSpec, build_regions, tile_windows
from neuro_caduceus.io import write_atomic, write_parquet
from neuro_caduceus.model import encoder_class
from neuro_caduceus.provenance import cohort_recipe
from neuro_caduceus.ray_session import dataset_batches, ray_session


def build_units(cfg: CohortConfig) -> list[GeneUnit]:
    """Gene set -> regions -> windows, on the driver (genes only: small)."""
    genes = resolve_gene_set(load_gene_set(cfg.inputs.gene_set), read_genes(cfg.inputs.gtf))
    spec = RegionSpec(mode=cfg.regions.mode, flank=cfg.regions.flank, orient=cfg.regions.orient)
    stride = cfg.model.effective_stride
    return [
        GeneUnit(r.region_id, r.gene_name, r, list(tile_windows(r, cfg.model.window, stride)))
        for r in build_regions(genes, spec)
    ]


def _prepare_output(cfg: CohortConfig, checkpoint_sha: str, overwrite: bool, units: list[GeneUnit],
                    store: WindowStore) -> JobFolder:
    """Create or validate the job folder; refuse to mix results of another config or checkpoint.

    --overwrite deletes only what an earlier job wrote (the units its _job.json lists, its own files and a
    window store of another model at the default location), never files the job did not write.
    """
    folder = JobFolder(cfg.output.dir)
    fs = folder.fs
    ident = {"config_hash": cfg.result_hash(), "checkpoint_sha256": checkpoint_sha}
    default_store = cfg.output.window_store is None
    if fs.exists(folder.job_file):
        with fs.open(folder.job_file, "r") as f:
            old = json.load(f)
        if {k: old.get(k) for k in ident} != ident:
            if not overwrite:
                raise FileExistsError(
                    f"{cfg.output.dir} holds output of another config or checkpoint "
                    f"(stored {old.get('config_hash')}/{str(old.get('checkpoint_sha256'))[:12]}, now "
                    f"{ident['config_hash']}/{checkpoint_sha[:12]}); use a new output.dir or --overwrite "
                    "(deletes only that job's files)"
                )
            folder.remove(old.get("units", []))
    elif foreign := folder.foreign(default_store):
        listed = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise FileExistsError(
            f"{cfg.output.dir} holds files that are not a cohort job's output ({listed}); "
            "choose a new or empty output.dir "
            "(--overwrite deletes only files a cohort job wrote)"
        )
    if default_store and overwrite:
        store.clear_if_other()
    store.open()
    folder.make()
    if not fs.exists(folder.job_file):
        names = [unit_name(u.gene_id) for u in units]
        body = {**ident, "config": cfg.model_dump(mode="json"), "units": names}
        write_atomic(fs, folder.job_file, json.dumps(body, indent=1))
    return folder


def _cohort(folder: JobFolder, source: HaplotypeSource, units: list[GeneUnit]) -> tuple[list[str], dict]:
    """Subjects and QC summary, computed once per output folder (a resumed run reuses them verbatim)."""
    if folder.fs.exists(folder.cohort_file):
        with folder.fs.open(folder.cohort_file, "r") as f:
            saved = json.load(f)
        return saved["subjects"], saved["qc"]
    subjects, qc = source.subjects_and_qc([u.region for u in units])
    write_atomic(folder.fs, folder.cohort_file, json.dumps({"subjects": subjects, "qc": qc}))
    return subjects, qc


def _verify(cfg: CohortConfig, folder: JobFolder, store: WindowStore, done: list[str]) -> dict:
    """Committed output is verified, not trusted by name: damaged shards and store batches are deleted (and
    counted) so that this run redoes them. Runs as parallel CPU tasks, 64 files each."""
    shards_task = ray.remote(num_cpus=cfg.compute.cpus_per_task)(check_shards)
    batches_task = ray.remote(num_cpus=cfg.compute.cpus_per_task)(check_batches)
    partial = store.remove_partial()
    batches = store.batch_files()
    chunks = [(done[i:i + 64], batches[i:i + 64]) for i in range(0, max(len(done), len(batches)), 64)]
    refs = [(s, b, shards_task.remote(folder, s), batches_task.remote(store.url, b))
            for s, b in chunks]
    damaged = {"shards": [], "store_batches": [], "partial_store_batches_removed": partial}
    for names, paths, shard_ref, batch_ref in refs:
        for name, why in zip(names, ray.get(shard_ref), strict=True):
            if why:
                damaged["shards"].append({"gene": name, "why": why})
                for path in folder.unit_files(name):
                    if folder.fs.exists(path):
                        folder.fs.rm(path)
        for path, why in zip(paths, ray.get(batch_ref), strict=True):
            if why:
                damaged["store_batches"].append({"batch": path.rsplit("/", 1)[-1], "why": why})
                store.fs.rm(path)
    for kind, label in (("shards", "shard of gene"), ("store_batches", "window store batch")):
        for item in damaged[kind]:
            print(f"warning: damaged {label} {next(iter(item.values()))} ({item['why']}): redone",
                  file=sys.stderr)
    return damaged


def run_embed_cohort(config: CohortConfig | str | Path, overwrite: bool = False, quiet: bool = False) -> dict:
    """Run (or resume) the job; returns the manifest (also written to <output.dir>/manifest.json)."""
    cfg = config if isinstance(config, CohortConfig) else load_config(config)
    t0 = time.time()
    units = build_units(cfg)  # every check that can fail on input runs before anything is written
    model = model_recipe(cfg)
    problems = open_source(cfg.inputs, cfg.qc).problems()  # before _job.json: a refused run writes nothing
    if problems:
        raise ValueError("; ".join(problems))
    store = WindowStore(cfg.window_store, store_identity(model))
    if not overwrite or cfg.output.window_store is not None:
        store.open(create=False)
    folder = _prepare_output(cfg, model["checkpoint_sha256"], overwrite, units, store)
    with ray_session():
        try:
            return _run(cfg, folder, store, units, model, quiet, t0)
        except KeyboardInterrupt:
            done = len(folder.committed())
            print(f"\ninterrupted: {done} of {len(units)} genes committed in {cfg.output.dir}/shards, "
                  f"{len(store.batch_files())} window batches in {cfg.window_store}; run the same command "
                  "again to resume (committed work is kept)", file=sys.stderr, flush=True)
            raise


def _run(cfg: CohortConfig, folder: JobFolder, store: WindowStore, units: list[GeneUnit], model: dict,
         quiet: bool, t0: float) -> dict:
    for stale in folder.temp_shards():  # a crashed run's uncommitted shards
        folder.fs.rm(stale)
    source = open_source(cfg.inputs, cfg.qc)  # the one choice of genotype reader for this run
    subjects, qc = _cohort(folder, source, units)
    rc_check = rc_check_for_job(cfg, folder, [u.gene_id for u in units], actor_placement(cfg))
    recipe = cohort_recipe(cfg, model, units, qc, rc_check, source=source.path)
    names = {unit_name(u.gene_id) for u in units}
    run = new_run(_verify(cfg, folder, store, sorted(folder.committed() & names)))
    done = folder.committed()
    pending = [u for u in units if unit_name(u.gene_id) not in done]
    stall = cfg.compute.stall_warning_s
    progress = Progress(len(pending), quiet, stall, lambda phase: _waiting_for(cfg, phase))
    new_stats: list[dict] = []
    try:
        if pending:
            subjects_ref = ray.put(subjects)  # shipped once to the object store, not once per task
            _embed_phase(cfg, folder, source, pending, subjects_ref, run, progress, store.identity)
            new_stats = _assemble_phase(cfg, folder, pending, subjects_ref, recipe, run["run_id"], progress)
    finally:
        progress.close()
    unit_stats = read_unit_stats(folder, units)
    references = reference_table(units, unit_stats)
    if references is None:
        print(f"warning: {folder.url} holds genes committed without a reference embedding (an older "
              "version): no reference.parquet; re-run with --overwrite to get it", file=sys.stderr)
    else:
        write_parquet(references, folder.reference, recipe, folder.fs)
    manifest = build_manifest(folder, cfg, recipe, units, unit_stats, subjects, qc, len(units) - len(pending),
                              new_stats, time.time() - t0, run)
    manifest["rc_check"] = rc_check
    apply_genotype_summary(manifest, cfg.haplotype_strategy, cfg.qc.max_missing)
    write_manifest(folder, manifest)
    if not quiet:
        print(format_summary(manifest), file=sys.stdout, flush=True)
    return manifest


def _embed_phase(cfg: CohortConfig, folder: JobFolder, source: HaplotypeSource, pending: list[GeneUnit],
                 subjects_ref: Any, run: dict, progress: Any, identity: dict) -> None:
    """Plan and embed every window of the pending genes not yet in the store; stats rows only reach here."""
    progress.start_phase("embedding windows", len(pending))
    items = [{"gene_id": u.gene_id, "region": json.dumps(dataclasses.asdict(u.region))} for u in pending]
    per_task = cfg.compute.genes_per_batch
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // per_task)))
    ds.context.target_max_block_size = 1  # every window batch its own block: it leaves the planner at once
    # max_retries also keeps Ray Data from fusing planning into the actors when their CPUs are equal
    # (a fused stage would plan and embed a whole gene in one actor)
    ds = ds.map_batches(plan_genes, batch_size=per_task, batch_format="numpy",
                        num_cpus=cfg.compute.cpus_per_task, max_retries=3,
                        fn_kwargs={"stage": _planning_stage(cfg, folder, source), "subjects": subjects_ref,
                                   "store_snapshot": f"{run['run_id']}:plan"})
    ds = embed_window_batches(ds, cfg, cfg.window_store, identity)
    with dataset_batches(ds, batch_size=None, batch_format="pyarrow") as batches:
        for batch in batches:
            for row in batch.to_pylist():
                genes = json.loads(row["genes_planned"])
                count_batch(run, row, genes)
                progress.step(genes=len(genes), windows=row["windows"], tokens=row["tokens"])


def _planning_stage(cfg: CohortConfig, folder: JobFolder, source: HaplotypeSource) -> PlanningStage:
    return PlanningStage(source, cfg.haplotype_strategy, cfg.inputs.reference_fasta, cfg.model.window,
                         cfg.model.effective_stride, cfg.window_store, cfg.compute.tokens_per_batch, folder,
                         encoder_class(cfg.model.checkpoint).special_tokens)


def _assemble_phase(cfg: CohortConfig, folder: JobFolder, pending: list[GeneUnit], subjects_ref: Any,
                    recipe: dict, run_id: str, progress: Any) -> list[dict]:
    progress.start_phase("writing shards", len(pending))
    stage = AssemblyStage(folder, cfg.window_store, cfg.haplotype_strategy,
                          strategies.n_haps(cfg.haplotype_strategy), cfg.qc.max_missing, recipe, cfg.missing)
    items = [{"unit": unit_name(u.gene_id)} for u in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(assemble_genes, batch_size=1, batch_format="numpy",
                        num_cpus=cfg.compute.cpus_per_task,
                        fn_kwargs={"stage": stage, "subjects": subjects_ref,
                                   "store_snapshot": f"{run_id}:assemble"})
    out = []
    with dataset_batches(ds, batch_size=1, batch_format="numpy") as batches:
        for batch in batches:
            out.extend(json.loads(s) for s in batch["stats"])
            progress.step(genes=len(batch["stats"]))
    return out


def _waiting_for(cfg: CohortConfig, phase: str) -> str:
    """What a stalled job waits for: the stage, what it needs, and what the cluster has free now."""
    c = cfg.compute
    gpus = actor_placement(cfg).gpus
    actor = f"{gpus:g} GPU" if gpus > 0 else f"{c.cpus_per_actor:g} CPU"
    free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
    need = (f"{c.actors_min}-{c.actors_max} embedding actors of {actor} each and planning tasks of "
            f"{c.cpus_per_task:g} CPU" if phase.startswith("embedding") else
            f"assembly tasks of {c.cpus_per_task:g} CPU")
    return f"needs {need}; free on the cluster now: {free or 'nothing'}"
