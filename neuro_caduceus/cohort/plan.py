"""CPU stage: one gene's unique haplotypes -> window jobs for its distinct windows + how to reassemble it.

Why: a gene embedding is sum(window sums) / sum(window lengths) over its windows (the window rule,
cohort/pooling.py), so a haplotype differs from the reference only in the windows that hold one of its
variants. The reference windows are needed once per gene; a haplotype window is built only where a variant
falls, and
identical window contents (two haplotypes with the same variants in that window, or a variant that leaves
the sequence unchanged) share one content key. The planner builds each window once to hash it and keeps
only the key and the recipe (window + applied variants); the sequence is rebuilt by the embedding actor.
The reassembly plan (keys per slot, per-haplotype replacements, carriers) is written to plans/<gene>.parquet
for the assembly stage, so no plan ever travels through the driver.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.window_jobs import job
from neuro_caduceus.genome.fasta import Reference
from neuro_caduceus.genome.haplotypes import VARIANT_OUTCOMES, build_sequence, variants_in
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant
from neuro_caduceus.io import check_format, write_parquet


@dataclass
class GeneUnit:
    """One gene (region) and its windows, fixed on the driver (deterministic id = gene_id)."""

    gene_id: str
    gene_name: str
    region: Any  # genome.regions.Region
    windows: list[Any]  # genome.regions.Window, in order


@dataclass
class GenePlan:
    """The distinct windows of one gene (content keys by slot) and how to reassemble every haplotype."""

    unit: GeneUnit
    keys: list[str]  # distinct window content keys (slot = index)
    ref_slots: np.ndarray  # int64 [n_windows]: slot of each reference window
    hap_keys: list[str]
    hap_repl: list[list[tuple[int, int]]]  # per haplotype: (window index, slot) where it differs
    carriers: list[list[tuple[str, int]]]  # per haplotype: (subject_id, hap_index)
    counts: dict[str, int] = field(default_factory=dict)
    sums: np.ndarray | None = None  # float64 [n_slots, d], read from the window store
    lengths: np.ndarray | None = None  # int64 [n_slots]
    genotype_counts: pa.Table | None = None  # GENOTYPE_COUNTS_SCHEMA rows of the gene (missing, unphased het)
    # additive strategy only: distinct variants (chrom, pos, ref, alt) sorted as `additive.dosages` returns
    # them, per variant the (window index, slot) pairs it changes when applied alone, per haplotype the
    # indices of its variants
    variants: list[tuple] = field(default_factory=list)
    variant_repl: list[list[tuple[int, int]]] = field(default_factory=list)
    hap_variants: list[list[int]] = field(default_factory=list)


def content_key(seq: str) -> str:
    """Window content key: identical sequences share one model call and one store entry."""
    return hashlib.sha1(seq.encode()).hexdigest()


@lru_cache(maxsize=4)
def open_reference(path: str):
    """One open FASTA per worker process (tasks reuse their process)."""
    return Reference(path)


class KeyedWindows:
    """Content-key slots of one gene and the window job of each (`jobs[slot]`)."""

    def __init__(self, gene_id: str):
        self.gene_id, self.slot_of, self.keys, self.jobs, self.tokens = gene_id, {}, [], [], 0

    def slot(self, window: Any, seq: str, applied: list[Variant]) -> tuple[int, bool]:
        """(slot of the built window, whether it is new to the gene)."""
        key = content_key(seq)
        if key in self.slot_of:
            return self.slot_of[key], False
        self.slot_of[key] = len(self.keys)
        self.keys.append(key)
        self.jobs.append(job(key, self.gene_id, window, len(seq), applied))
        self.tokens += len(seq)
        return self.slot_of[key], True


@dataclass(frozen=True)
class PlannedGene:
    """A planning call's whole answer: the gene's plan and the window job of each of its distinct windows."""

    plan: GenePlan
    jobs: list[dict]  # jobs[slot], slot order (window_jobs.job rows)


def single_variant_windows(reference: Any, unit: GeneUnit, slots: KeyedWindows, ref_keys: list[str],
                           variant: Variant) -> list[tuple[int, int]]:
    """The (window index, slot) replacements of the reference with `variant` alone applied (only the windows
    it touches; windows left equal to the reference omitted)."""
    repl = []
    for i, window in enumerate(unit.windows):
        if not variants_in(window, [variant]):
            continue
        seq = build_sequence(reference, window, [variant])
        if content_key(seq.sequence) == ref_keys[i]:
            continue
        slot, _ = slots.slot(window, seq.sequence, seq.applied)
        repl.append((i, slot))
    return repl


def plan_gene(reference: Any, unit: GeneUnit, haplotypes: pa.Table, additive: bool = False,
              genotype_counts: pa.Table | None = None) -> PlannedGene:
    """The gene's GenePlan (keys, no sequences) and a window job per distinct window.

    `additive`: the haplotypes' windows are built only for the counts; the jobs are those of each distinct
    variant applied alone (model work bounded by the gene's distinct variants).
    """
    slots = KeyedWindows(unit.gene_id)
    ref_keys, ref_slots, ref_len = [], [], 0
    iupac_before = getattr(reference, "ambiguous_replaced", 0)
    for w in unit.windows:
        seq = build_sequence(reference, w, []).sequence
        slot, _ = slots.slot(w, seq, [])
        ref_keys.append(content_key(seq))
        ref_slots.append(slot)
        ref_len += len(seq)
    iupac = getattr(reference, "ambiguous_replaced", 0) - iupac_before  # read as N (the alphabet policy)
    hap_keys, hap_repl, carriers = [], [], []
    outcomes: dict[str, set] = {name: set() for name in VARIANT_OUTCOMES}  # a variant counts once per gene
    windows_built = windows_same_as_ref = windows_dedup = 0
    naive_tokens = 0
    n_subject_haps_listed = 0
    rows = haplotypes.cast(HAPLOTYPE_SCHEMA).to_pylist()
    for row in rows:
        variants = [Variant(v["chrom"], v["pos"], v["ref"], v["alt"]) for v in row["variants"]]
        repl = []
        hap_len = ref_len
        for i, window in enumerate(unit.windows):
            if not variants_in(window, variants):
                continue
            res = build_sequence(reference, window, variants)  # all: overlap skips depend on earlier ones
            for name in VARIANT_OUTCOMES:
                outcomes[name].update(getattr(res, name))
            windows_built += 1
            hap_len += len(res.sequence) - window.length  # a reference window is as long as its segments
            if additive:
                continue
            if content_key(res.sequence) == ref_keys[i]:
                windows_same_as_ref += 1
                continue
            slot, new = slots.slot(window, res.sequence, res.applied)
            windows_dedup += not new
            repl.append((i, slot))
        hap_keys.append(row["haplotype_key"])
        hap_repl.append(repl)
        hap_carriers = [(c["subject_id"], int(c["hap_index"])) for c in row["carriers"]]
        carriers.append(hap_carriers)
        n_subject_haps_listed += len(hap_carriers)
        naive_tokens += len(hap_carriers) * hap_len
    extra = {}
    if additive:
        extra = _plan_single_variants(reference, unit, slots, ref_keys, rows)
    counts = {
        "windows_per_reference": len(unit.windows),
        "reference_tokens": ref_len,
        "reference_iupac_as_n": iupac,
        "unique_haplotypes": len(hap_keys),
        "haplotype_windows_built": windows_built,
        "haplotype_windows_equal_reference": windows_same_as_ref,
        "haplotype_windows_deduplicated": windows_dedup,
        "windows_embedded": len(slots.keys),
        "distinct_variants": len(extra.get("variants", ())),
        "tokens_embedded": slots.tokens,
        "carrier_haplotype_tokens": naive_tokens,
        "carrier_subject_haplotypes": n_subject_haps_listed,
        **{f"variants_{name}": len(outcomes[name]) for name in VARIANT_OUTCOMES},
    }
    ref = np.array(ref_slots, dtype=np.int64)
    plan = GenePlan(unit, slots.keys, ref, hap_keys, hap_repl, carriers, counts,
                    genotype_counts=genotype_counts, **extra)
    return PlannedGene(plan, slots.jobs)


def _plan_single_variants(reference: Any, unit: GeneUnit, slots: KeyedWindows, ref_keys: list[str],
                          rows: list[dict]) -> dict:
    """The additive fields of a GenePlan; variants carried by nobody are left out, as `dosages` does."""
    keyed = [[(v["chrom"], v["pos"], v["ref"], v["alt"]) for v in row["variants"]] for row in rows]
    variants = sorted({k for row, keys in zip(rows, keyed, strict=True) if row["carriers"] for k in keys})
    index = {k: j for j, k in enumerate(variants)}
    variant_repl = [single_variant_windows(reference, unit, slots, ref_keys, Variant(*key))
                    for key in variants]
    hap_variants = [sorted({index[k] for k in keys if k in index}) for keys in keyed]
    return {"variants": variants, "variant_repl": variant_repl, "hap_variants": hap_variants}


PLAN_META = b"neuro_caduceus.plan"
PLAN_FORMAT = 1  # the plan file's layout (its `format_version` in PLAN_META)


def write_plan(folder: JobFolder, name: str, plan: GenePlan) -> None:
    """plans/<name>.parquet: one row per haplotype; keys, reference slots and counts in the footer."""
    meta = {"format_version": PLAN_FORMAT, "gene_id": plan.unit.gene_id, "gene_name": plan.unit.gene_name,
            "keys": plan.keys, "ref_slots": plan.ref_slots.tolist(), "counts": plan.counts,
            "variants": plan.variants, "variant_repl": plan.variant_repl}
    table = pa.table({
        "haplotype_key": pa.array(plan.hap_keys, pa.string()),
        "repl": pa.array([[w for pair in r for w in pair] for r in plan.hap_repl], pa.list_(pa.int64())),
        "carrier_subject": pa.array([[s for s, _ in c] for c in plan.carriers], pa.list_(pa.string())),
        "carrier_hap": pa.array([[h for _, h in c] for c in plan.carriers], pa.list_(pa.int8())),
        "hap_variants": pa.array(plan.hap_variants or [[] for _ in plan.hap_keys], pa.list_(pa.int64())),
    }).replace_schema_metadata({PLAN_META: json.dumps(meta).encode()})
    if plan.genotype_counts is not None:  # before the plan: a plan file implies its counts are there
        write_parquet(plan.genotype_counts, folder.plan_counts(name), fs=folder.fs)
    write_parquet(table, folder.plan(name), fs=folder.fs)


def read_plan(folder: JobFolder, name: str) -> GenePlan:
    fs = folder.fs
    with fs.open(folder.plan(name), "rb") as f:
        table = pq.read_table(f)
    meta = json.loads(table.schema.metadata[PLAN_META])
    check_format(meta.get("format_version"), PLAN_FORMAT, folder.plan(name))
    rows = table.to_pydict()
    repl = [[(r[i], r[i + 1]) for i in range(0, len(r), 2)] for r in rows["repl"]]
    carriers = [list(zip(s, h, strict=True)) for s, h in zip(rows["carrier_subject"], rows["carrier_hap"],
                                                             strict=True)]
    unit = GeneUnit(meta["gene_id"], meta["gene_name"], None, [])
    counts = None
    if fs.exists(folder.plan_counts(name)):
        with fs.open(folder.plan_counts(name), "rb") as f:
            counts = pq.read_table(f)
    return GenePlan(unit, meta["keys"], np.array(meta["ref_slots"], dtype=np.int64), rows["haplotype_key"],
                    repl, carriers, meta["counts"], genotype_counts=counts,
                    variants=[tuple(v) for v in meta.get("variants", [])],
                    variant_repl=[[tuple(p) for p in r] for r in meta.get("variant_repl", [])],
                    hap_variants=rows.get("hap_variants", [[] for _ in rows["haplotype_key"]]))
