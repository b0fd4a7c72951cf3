"""The cohort job's worker stages: planning (gene -> window-job batches) and assembly (plan -> shard).

Why apart from the driver (cohort.job): these run in Ray workers, one call per batch of genes, and each takes
a small frozen stage object with the fields it uses, built once on the driver, instead of the whole config.
The subject list arrives as an object-store reference (one copy per node, not one per task).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.plan import GeneUnit, open_reference, plan_gene, read_plan, write_plan
from neuro_caduceus.cohort.shards import check_unit, unit_name, write_unit
from neuro_caduceus.cohort.source import HaplotypeSource
from neuro_caduceus.cohort.store import WindowStore, key_index
from neuro_caduceus.cohort.window_jobs import BatchPacker
from neuro_caduceus.genome.regions import Region, tile_windows


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
    special_tokens: int = 0  # the encoder's per window: the batch bound counts model tokens

    def unit_of(self, region_json: str) -> GeneUnit:
        """A GeneUnit from the JSON of its Region (what travels to the planning tasks)."""
        body = json.loads(region_json)
        region = Region(**{**body, "segments": tuple(tuple(s) for s in body["segments"])})
        return GeneUnit(region.region_id, region.gene_name, region,
                        list(tile_windows(region, self.window, self.stride)))


@dataclass(frozen=True)
class AssemblyStage:
    """What an assembly task needs: the job folder, the window store, the strategy (and its haplotypes per
    subject), the missing-call limit, the recipe every shard carries and how a missing call counts."""

    folder: JobFolder
    store_url: str
    strategy: str
    n_haps: int
    max_missing: int | None
    recipe: dict
    missing: str = "reference"


def _subjects(shared: Any) -> list[str]:
    return ray.get(shared) if isinstance(shared, ray.ObjectRef) else shared


def plan_genes(batch: dict[str, Any], stage: PlanningStage, subjects: Any,
               store_snapshot: str) -> Iterator[pa.Table]:
    """CPU stage: genes -> window-job batches (stored keys skipped); each gene's plan goes to plans/."""
    subjects = _subjects(subjects)
    stored = key_index(stage.store_url, store_snapshot)
    packer = BatchPacker(stage.tokens_per_batch, stage.special_tokens)
    reference = open_reference(stage.reference_fasta)
    for region_json in batch["region"]:
        unit = stage.unit_of(region_json)
        genotypes = stage.source.gene_genotypes(unit.region, stage.strategy, subjects)
        planned = plan_gene(reference, unit, genotypes.haplotypes, stage.strategy == "additive",
                            genotypes.counts)
        write_plan(stage.folder, unit_name(unit.gene_id), planned.plan)
        yield from packer.add_gene(unit.gene_id, planned.jobs, stored)
    yield from packer.flush()


def assemble_genes(batch: dict[str, Any], stage: AssemblyStage, subjects: Any,
                   store_snapshot: str) -> dict[str, Any]:
    """CPU stage: plan + window store -> committed shard; naive = every subject haplotype embedded whole."""
    subjects = _subjects(subjects)
    store = WindowStore(stage.store_url, {})
    index = key_index(stage.store_url, store_snapshot)
    stats_out = []
    for name in batch["unit"]:
        plan = read_plan(stage.folder, name)
        plan.sums, plan.lengths = store.lookup(plan.keys, index)
        stats = dict(plan.counts, gene_id=plan.unit.gene_id, gene_name=plan.unit.gene_name)
        stats["subjects"] = len(subjects)
        stats["naive_windows"] = len(subjects) * stage.n_haps * stats["windows_per_reference"]
        ref_haps = len(subjects) * stage.n_haps - stats.pop("carrier_subject_haplotypes")
        stats["naive_tokens"] = stats.pop("carrier_haplotype_tokens") + ref_haps * stats["reference_tokens"]
        write_unit(plan, subjects, stage.strategy, stage.folder, stage.recipe, stats, stage.max_missing,
                   stage.missing)
        stats_out.append(json.dumps(stats))
    return {"unit": batch["unit"], "stats": np.array(stats_out, dtype=object)}


def check_shards(folder: JobFolder, names: list[str]) -> list[str | None]:
    """Verification task: why each committed shard is damaged (None: intact)."""
    return [check_unit(folder, n) for n in names]


def check_batches(store_url: str, paths: list[str]) -> list[str | None]:
    """Verification task: why each committed window-store batch is damaged (None: intact)."""
    store = WindowStore(store_url, {})
    return [store.check(p) for p in paths]
