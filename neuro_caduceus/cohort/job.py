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
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from neuro_caduceus.cohort.config import CohortConfig, load_config
from neuro_caduceus.cohort.embed import embed_window_batches, gpus_per_actor, model_recipe
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.manifest import build_manifest, format_summary, new_run, write_manifest
from neuro_caduceus.cohort.plan import GeneUnit, open_reference, plan_gene, read_plan, write_plan
from neuro_caduceus.cohort.progress import Progress
from neuro_caduceus.cohort.rc_check import rc_check_for_job
from neuro_caduceus.cohort.shards import check_unit, unit_name, write_unit
from neuro_caduceus.cohort.source import HaplotypeSource, open_source
from neuro_caduceus.cohort.store import WindowStore, key_index, store_identity
from neuro_caduceus.cohort.window_jobs import BatchPacker
from neuro_caduceus.genome import strategies
from neuro_caduceus.genome.annotation import read_genes
from neuro_caduceus.genome.genesets import load_gene_set, resolve_gene_set
from neuro_caduceus.genome.genotype_counts import apply_genotype_summary
from neuro_caduceus.genome.regions import Region, RegionSpec, build_regions, tile_windows
from neuro_caduceus.io import write_atomic
from neuro_caduceus.provenance import cohort_recipe
from neuro_caduceus.ray_session import ray_session


def build_units(cfg: CohortConfig) -> list[GeneUnit]:
    """Gene set -> regions -> windows, on the driver (genes only: small)."""
    genes = resolve_gene_set(load_gene_set(cfg.inputs.gene_set), read_genes(cfg.inputs.gtf))
    spec = RegionSpec(mode=cfg.regions.mode, flank=cfg.regions.flank, orient=cfg.regions.orient)
    stride = cfg.model.effective_stride
    return [
        GeneUnit(r.region_id, r.gene_name, r, list(tile_windows(r, cfg.model.window, stride)))
        for r in build_regions(genes, spec)
    ]


@dataclass(frozen=True)
class PlanningStage:
    """What a planning task needs, and nothing more: the genotype source (chosen once, on the driver), the
    haplotype strategy, the reference, the windowing, the window store and the job folder (plans go there)."""

    source: HaplotypeSource
    strategy: str
    reference_fasta: str
    window: int
    stride: int
    store_url: str
    tokens_per_batch: int
    folder: JobFolder

    def unit_of(self, region_json: str) -> GeneUnit:
        """A GeneUnit from the JSON of its Region (what travels to the planning tasks)."""
        body = json.loads(region_json)
        region = Region(**{**body, "segments": tuple(tuple(s) for s in body["segments"])})
        return GeneUnit(region.region_id, region.gene_name, region,
                        list(tile_windows(region, self.window, self.stride)))


def _resolve(subjects: Any) -> list[str]:
    """The subject list arrives as an object-store reference (one copy per node, not one per task)."""
    return ray.get(subjects) if isinstance(subjects, ray.ObjectRef) else subjects


def gene_batches(reference: Any, unit: GeneUnit, haplotypes: pa.Table, stored: Any, packer: Any,
                 note: dict, additive: bool = False) -> Generator[pa.Table, None, Any]:
    """One gene's window jobs not in `stored`, packed into batches (yielded as they fill); counts go to
    `note`; returns the gene's plan."""
    jobs = plan_gene(reference, unit, haplotypes, additive)
    while True:
        try:
            one = next(jobs)
        except StopIteration as done:
            return done.value
        note["windows"] += 1
        if one["key"] in stored:
            note["stored"] += 1
            continue
        note["new"] += 1
        note["tokens_new"] += one["length"]
        yield from packer.add(one)


def plan_genes(batch: dict[str, Any], stage: PlanningStage, subjects: Any,
               snapshot: str) -> Iterator[pa.Table]:
    """CPU stage: genes -> window-job batches (stored keys skipped); each gene's plan goes to plans/."""
    subjects = _resolve(subjects)
    stored = key_index(stage.store_url, snapshot)
    packer = BatchPacker(stage.tokens_per_batch)
    reference = open_reference(stage.reference_fasta)
    for region_json in batch["region"]:
        unit = stage.unit_of(region_json)
        note = {"gene_id": unit.gene_id, "windows": 0, "new": 0, "stored": 0, "tokens_new": 0}
        counts: list = []  # per subject-gene missing and unphased het calls (genome/genotype_counts.py)
        haplotypes = stage.source.gene_haplotypes(unit.region, stage.strategy, subjects, counts)
        plan = yield from gene_batches(reference, unit, haplotypes, stored, packer, note,
                                       stage.strategy == "additive")
        plan.genotype_counts = pa.concat_tables(counts) if counts else None
        write_plan(stage.folder, unit_name(unit.gene_id), plan)
        packer.gene_planned(note)
    yield from packer.flush()


def assemble_genes(batch: dict[str, Any], cfg: CohortConfig, subjects: Any, snapshot: str, recipe: dict,
                   n_haps: int) -> dict[str, Any]:
    """CPU stage: plan + window store -> committed shard; naive = every subject haplotype embedded whole."""
    subjects = _resolve(subjects)
    store = WindowStore(cfg.window_store, {})
    index = key_index(cfg.window_store, snapshot)
    folder = JobFolder(cfg.output.dir)
    stats_out = []
    for name in batch["unit"]:
        plan = read_plan(folder, name)
        plan.sums, plan.lengths = store.lookup(plan.keys, index)
        stats = dict(plan.counts, gene_id=plan.unit.gene_id, gene_name=plan.unit.gene_name)
        stats["subjects"] = len(subjects)
        stats["naive_windows"] = len(subjects) * n_haps * stats["windows_per_reference"]
        ref_haps = len(subjects) * n_haps - stats.pop("carrier_subject_haplotypes")
        stats["naive_tokens"] = stats.pop("carrier_haplotype_tokens") + ref_haps * stats["reference_tokens"]
        write_unit(plan, subjects, cfg.haplotype_strategy, folder, recipe, stats, cfg.qc.max_missing)
        stats_out.append(json.dumps(stats))
    return {"unit": batch["unit"], "stats": np.array(stats_out, dtype=object)}


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


def _check_shards(folder: JobFolder, names: list[str]) -> list[str | None]:
    return [check_unit(folder, n) for n in names]


def _check_batches(store_url: str, paths: list[str]) -> list[str | None]:
    store = WindowStore(store_url, {})
    return [store.check(p) for p in paths]


def _verify(cfg: CohortConfig, folder: JobFolder, store: WindowStore, done: list[str]) -> dict:
    """Committed output is verified, not trusted by name: damaged shards and store batches are deleted (and
    counted) so that this run redoes them. Runs as parallel CPU tasks, 64 files each."""
    check_shards = ray.remote(num_cpus=cfg.compute.cpus_per_task)(_check_shards)
    check_batches = ray.remote(num_cpus=cfg.compute.cpus_per_task)(_check_batches)
    partial = store.remove_partial()
    batches = store.batch_files()
    chunks = [(done[i:i + 64], batches[i:i + 64]) for i in range(0, max(len(done), len(batches)), 64)]
    refs = [(s, b, check_shards.remote(folder, s), check_batches.remote(store.url, b))
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
    rc_check = rc_check_for_job(cfg, folder, [u.gene_id for u in units], gpus_per_actor(cfg))
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
            _embed_phase(cfg, source, pending, subjects_ref, run, progress, store.identity)
            new_stats = _assemble_phase(cfg, pending, subjects_ref, recipe, run["run_id"], progress)
    finally:
        progress.close()
    manifest = build_manifest(folder, cfg, recipe, units, subjects, qc, len(units) - len(pending),
                              new_stats, time.time() - t0, run)
    manifest["rc_check"] = rc_check
    apply_genotype_summary(manifest, cfg.haplotype_strategy, cfg.qc.max_missing)
    write_manifest(folder, manifest)
    if not quiet:
        print(format_summary(manifest), file=sys.stdout, flush=True)
    return manifest


def _embed_phase(cfg: CohortConfig, source: HaplotypeSource, pending: list[GeneUnit], subjects_ref: Any,
                 run: dict, progress: Any, identity: dict) -> None:
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
                        fn_kwargs={"stage": _planning_stage(cfg, source), "subjects": subjects_ref,
                                   "snapshot": f"{run['run_id']}:plan"})
    ds = embed_window_batches(ds, cfg, cfg.window_store, identity)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            genes = json.loads(row["genes_planned"])
            run_add(run, row, genes)
            progress.step(genes=len(genes), windows=row["windows"], tokens=row["tokens"])


def _planning_stage(cfg: CohortConfig, source: HaplotypeSource) -> PlanningStage:
    return PlanningStage(source, cfg.haplotype_strategy, cfg.inputs.reference_fasta, cfg.model.window,
                         cfg.model.effective_stride, cfg.window_store, cfg.compute.tokens_per_batch,
                         JobFolder(cfg.output.dir))


def run_add(run: dict, row: dict, genes: list[dict]) -> None:
    """Fold one actor stats row into this run's counts (per actor and in total)."""
    actor = run["per_actor"].setdefault(row["actor"], {"batches": 0, "windows": 0, "tokens": 0})
    actor["batches"] += 1
    actor["windows"] += row["windows"]
    actor["tokens"] += row["tokens"]
    run["batches"] += 1
    run["windows_embedded"] += row["windows"]
    run["tokens_embedded"] += row["tokens"]
    for g in genes:
        run["genes_planned"] += 1
        run["store_hits"] += g["stored"]
        run["windows_new"] += g["new"]


def _assemble_phase(cfg: CohortConfig, pending: list[GeneUnit], subjects_ref: Any, recipe: dict, run_id: str,
                    progress: Any) -> list[dict]:

    progress.start_phase("writing shards", len(pending))
    n_haps = strategies.n_haps(cfg.haplotype_strategy)
    items = [{"unit": unit_name(u.gene_id)} for u in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(assemble_genes, batch_size=1, batch_format="numpy",
                        num_cpus=cfg.compute.cpus_per_task,
                        fn_kwargs={"cfg": cfg, "subjects": subjects_ref, "snapshot": f"{run_id}:assemble",
                                   "recipe": recipe, "n_haps": n_haps})
    out = []
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        out.extend(json.loads(s) for s in batch["stats"])
        progress.step(genes=len(batch["stats"]))
    return out


def _waiting_for(cfg: CohortConfig, phase: str) -> str:
    """What a stalled job waits for: the stage, what it needs, and what the cluster has free now."""
    c = cfg.compute
    gpus = gpus_per_actor(cfg)
    actor = f"{gpus:g} GPU" if gpus > 0 else f"{c.cpus_per_actor:g} CPU"
    free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
    need = (f"{c.actors_min}-{c.actors_max} embedding actors of {actor} each and planning tasks of "
            f"{c.cpus_per_task:g} CPU" if phase.startswith("embedding") else
            f"assembly tasks of {c.cpus_per_task:g} CPU")
    return f"needs {need}; free on the cluster now: {free or 'nothing'}"
