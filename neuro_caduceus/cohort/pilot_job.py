"""Variant-vs-reference pilot: how far, and where, variants move a gene's embedding.

Per gene of a cohort config (the cohort job's own config file and stages):
- the reference region, embedded once;
- every variant applied alone to the reference (single-variant effect);
- every unique haplotype, fanned out to its carriers (subject = mean of its haplotypes, as the cohort job);
- the local effect: the reference and the alternative sequence of [start - flank, end + flank) around the
  variant (flank 768: the +-768 bp of the official Caduceus variant-effect scripts), each embedded whole
  and mean-pooled.
Gene embeddings follow the window rule (sum of window sums / sum of lengths), so a variant or haplotype
re-embeds only the windows it touches, and identical window contents are embedded once. The windows go
through the cohort job's embedding stage (`cohort.embed.embed_window_batches`) into its window store, so
windows the cohort job (or an earlier pilot) already embedded with the same model are not embedded again.
Distances to the reference: cosine distance and L2; identical vectors have distance exactly 0.
Why in `cohort`: it is a Ray job on the cohort job's stages and actor pool. The masked-LM scores beside the
distances and the pilot's files are `analysis.pilot`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import ray

from neuro_caduceus.cohort.config import CohortConfig
from neuro_caduceus.cohort.consequence import consequence
from neuro_caduceus.cohort.embed import embed_window_batches, model_recipe
from neuro_caduceus.cohort.job import build_units
from neuro_caduceus.cohort.plan import GeneUnit, KeyedWindows, open_reference
from neuro_caduceus.cohort.pooling import window_means
from neuro_caduceus.cohort.shards import subject_embeddings
from neuro_caduceus.cohort.source import HaplotypeSource, open_source
from neuro_caduceus.cohort.store import WindowStore, key_index, store_identity
from neuro_caduceus.cohort.window_jobs import BatchPacker
from neuro_caduceus.genome.annotation import read_genes
from neuro_caduceus.genome.fasta import resolve_contig
from neuro_caduceus.genome.haplotypes import build_sequence, overlaps
from neuro_caduceus.genome.regions import Window
from neuro_caduceus.genome.strategies import n_haps
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant
from neuro_caduceus.model import encoder_class
from neuro_caduceus.provenance import pilot_recipe
from neuro_caduceus.ray_session import ensure_ray

LOCAL_FLANK = 768


@dataclass
class PilotPlan:
    """One gene's distinct windows (content keys by slot, window jobs of the new ones) and how to use them;
    `sums`/`lengths` are read back from the window store."""

    unit: GeneUnit
    gene: dict  # gene_id, gene_name, strand, start, end, exons, cds (for consequence classes)
    keys: list[str] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    ref_slots: np.ndarray | None = None
    variants: list[Variant] = field(default_factory=list)
    variant_repl: list[list[tuple[int, int]]] = field(default_factory=list)
    variant_status: list[str] = field(default_factory=list)
    local_slots: list[tuple[int, int]] = field(default_factory=list)  # (reference slot, alternative slot)
    allele_count: list[int] = field(default_factory=list)
    hap_keys: list[str] = field(default_factory=list)
    hap_repl: list[list[tuple[int, int]]] = field(default_factory=list)
    hap_variants: list[int] = field(default_factory=list)
    carriers: list[list[tuple[str, int]]] = field(default_factory=list)
    sums: np.ndarray | None = None
    lengths: np.ndarray | None = None


def plan_pilot(reference: Any, unit: GeneUnit, gene: dict, haplotypes, candidates: list[Variant],
               local_flank: int) -> PilotPlan:
    """The distinct windows of the reference, of each variant alone, of each haplotype, and local pairs."""
    plan, keyed = PilotPlan(unit, gene), KeyedWindows(unit.gene_id)

    def slot(window: Window, variants: list[Variant]) -> tuple[int, str]:
        built = build_sequence(reference, window, variants)
        index, _ = keyed.slot(window, built.sequence, built.applied)
        return index, built.sequence

    ref = [slot(w, []) for w in unit.windows]
    plan.ref_slots = np.array([i for i, _ in ref], dtype=np.int64)

    def replacements(variants: list[Variant]) -> list[tuple[int, int]]:
        out = []
        for i, w in enumerate(unit.windows):
            if any(overlaps(v, w.segments) for v in variants):
                index, seq = slot(w, variants)
                if seq != ref[i][1]:
                    out.append((i, index))
        return out

    rows = haplotypes.cast(HAPLOTYPE_SCHEMA).to_pylist()
    counts: dict[Variant, int] = {v: 0 for v in candidates}
    for row in rows:
        variants = [Variant(**v) for v in row["variants"]]
        for v in variants:
            counts[v] = counts.get(v, 0) + len(row["carriers"])
        plan.hap_keys.append(row["haplotype_key"])
        plan.hap_repl.append(replacements(variants))
        plan.hap_variants.append(len(variants))
        plan.carriers.append([(c["subject_id"], int(c["hap_index"])) for c in row["carriers"]])
    size = reference.length(unit.region.chrom)
    for v in sorted(counts):
        result = build_sequence(reference, unit.region, [v])
        status = ("applied" if result.applied else "rejected_ref_mismatch" if result.rejected_ref_mismatch
                  else "ignored" if result.ignored else "outside_region")
        lo, hi = max(0, v.start0 - local_flank), min(size, v.end0 + local_flank)
        local = Window(unit.gene_id, -1, unit.region.chrom, ((lo, hi),), unit.region.reverse)
        plan.variants.append(v)
        plan.variant_status.append(status)
        plan.allele_count.append(counts[v])
        plan.variant_repl.append(replacements([v]))
        plan.local_slots.append((slot(local, [])[0], slot(local, [v])[0]))
    plan.keys, plan.jobs = keyed.keys, keyed.jobs
    return plan


def distances(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(cosine distance, L2) of two float64 vectors; exactly (0, 0) when they are identical."""
    if np.array_equal(a, b):
        return 0.0, 0.0
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return 1.0 - cos, float(np.linalg.norm(a - b))


def gene_results(plan: PilotPlan, subjects: list[str], strategy: str) -> tuple[list[dict], list[dict]]:
    """Per variant and per subject rows of one embedded gene plan."""
    ref, singles = window_means(plan.sums, plan.lengths, plan.ref_slots, plan.variant_repl)
    _, haps = window_means(plan.sums, plan.lengths, plan.ref_slots, plan.hap_repl)
    n_alleles = max(1, n_haps(strategy) * len(subjects))
    mean = plan.sums / plan.lengths[:, None]
    variant_rows, gene_start = [], plan.gene["start"]
    for i, v in enumerate(plan.variants):
        cos, l2 = distances(ref, singles[i])
        local_cos, local_l2 = distances(mean[plan.local_slots[i][0]], mean[plan.local_slots[i][1]])
        variant_rows.append({
            "gene_id": plan.unit.gene_id, "gene_name": plan.unit.gene_name, "chrom": v.chrom, "pos": v.pos,
            "ref": v.ref, "alt": v.alt, "allele_count": plan.allele_count[i],
            "allele_frequency": plan.allele_count[i] / n_alleles, "consequence": consequence(v, plan.gene),
            "status": plan.variant_status[i], "cos_distance": cos, "l2_distance": l2,
            "local_cos_distance": local_cos, "local_l2_distance": local_l2,
            "relative_position": (v.start0 - gene_start) / max(1, plan.gene["end"] - gene_start),
        })
    per_subject = subject_embeddings(plan, subjects, strategy, ref, haps).astype(np.float64)
    ref32 = ref.astype(np.float32).astype(np.float64)  # subjects are stored as float32, like the shards
    carried = np.zeros(len(subjects), dtype=np.int64)
    index = {s: i for i, s in enumerate(subjects)}
    for h, carriers in enumerate(plan.carriers):
        for subject, _ in carriers:
            if subject in index:
                carried[index[subject]] += plan.hap_variants[h]
    subject_rows = []
    for i, s in enumerate(subjects):
        cos, l2 = distances(ref32, per_subject[i])
        subject_rows.append({"subject_id": s, "gene_id": plan.unit.gene_id, "gene_name": plan.unit.gene_name,
                             "n_variants": int(carried[i]), "cos_distance": cos, "l2_distance": l2})
    return variant_rows, subject_rows


@ray.remote
def _plan_gene(source: HaplotypeSource, strategy: str, reference_fasta: str, unit: GeneUnit,
               subjects: list[str], gene: dict, candidates: list[Variant], local_flank: int) -> PilotPlan:
    """CPU task: one gene's pilot plan, its haplotypes read from the cohort's genotype source."""
    haps = source.gene_haplotypes(unit.region, strategy, subjects)
    return plan_pilot(open_reference(reference_fasta), unit, gene, haps, candidates, local_flank)


def embed_plans(cfg: CohortConfig, source: HaplotypeSource, units: list[GeneUnit], subjects: list[str],
                genes: dict, candidates: dict, local_flank: int) -> tuple[list[PilotPlan], int]:
    """(plans, windows newly embedded): plan on CPU tasks, embed the windows not yet in the window store
    through the cohort job's embedding stage, read the plans' window sums back (small: a pilot)."""
    store = WindowStore(cfg.window_store, store_identity(model_recipe(cfg))).open()
    shared_subjects, task = ray.put(subjects), _plan_gene.options(num_cpus=cfg.compute.cpus_per_task)
    strategy, fasta = cfg.haplotype_strategy, cfg.inputs.reference_fasta
    plans = ray.get([task.remote(source, strategy, fasta, u, shared_subjects, genes[u.gene_id],
                                 candidates.get(u.gene_id, []), local_flank)
                     for u in units])  # in the order of `units`
    stored = key_index(store.url, f"pilot-plan-{time.time()}")
    new = {j["key"]: j for p in plans for j in p.jobs if j["key"] not in stored}
    packer, batches = BatchPacker(cfg.compute.tokens_per_batch,
                                  encoder_class(cfg.model.checkpoint).special_tokens), []
    for job in new.values():
        batches.extend(packer.add(job))
    batches.extend(packer.flush())
    if batches:
        stats = embed_window_batches(ray.data.from_arrow(batches), cfg, store.url, store.identity)
        stats.materialize()
    index = key_index(store.url, f"pilot-read-{time.time()}")
    for p in plans:
        p.sums, p.lengths = store.lookup(p.keys, index)
        p.jobs = []
    return plans, len(new)


def candidate_variants(vcf: str, units: list[GeneUnit]) -> dict[str, list[Variant]]:
    """Sites of a candidate-variant VCF (genotypes not needed) per gene region, every ALT of each record."""
    import pysam

    out: dict[str, list[Variant]] = {}
    with pysam.VariantFile(vcf) as f:
        contigs = set(f.header.contigs)
        for u in units:
            try:
                chrom = resolve_contig(u.region.chrom, contigs, None, f"VCF {vcf}")
            except KeyError:
                continue
            lo, hi = u.region.segments[0][0], u.region.segments[-1][1]
            found = {Variant(u.region.chrom, r.pos, r.ref, alt) for r in f.fetch(chrom, lo, hi)
                     for alt in (r.alts or ())}
            out[u.gene_id] = sorted(v for v in found if overlaps(v, u.region.segments))
    return out


@dataclass
class PilotResult:
    variants: Any  # polars DataFrame
    subjects: Any
    summary: dict
    recipe: dict = field(default_factory=dict)
    genes: dict = field(default_factory=dict)  # gene_id -> GTF row (exons, CDS) of the config's genes


def run_pilot_job(cfg: CohortConfig, variants_vcf: str | None = None, local_flank: int = LOCAL_FLANK,
                  strand_check: bool = True) -> PilotResult:
    """The pilot's embeddings on Ray for a cohort config: per-variant and per-subject distances to the
    reference, the strand check, and the recipe (no files: `analysis.pilot` scores and writes them)."""
    recipe = {**model_recipe(cfg), "window": None, "stride": None}  # window/stride: the pilot's own below
    units = build_units(cfg)
    genes = {r["gene_id"]: r for r in read_genes(cfg.inputs.gtf).filter(
        pl.col("gene_id").is_in([u.gene_id for u in units])).iter_rows(named=True)}
    ensure_ray()
    source = open_source(cfg.inputs, cfg.qc)
    subjects, qc = source.subjects_and_qc([u.region for u in units])
    candidates = candidate_variants(variants_vcf, units) if variants_vcf else {}
    print(f"pilot: {len(units)} genes, {len(subjects)} subjects, embedding on Ray ...", flush=True)
    plans, new_windows = embed_plans(cfg, source, units, subjects, genes, candidates, local_flank)
    variant_rows, subject_rows = [], []
    for plan in plans:
        v, s = gene_results(plan, subjects, cfg.haplotype_strategy)
        variant_rows += v
        subject_rows += s
    variants = pl.DataFrame(variant_rows, schema=VARIANT_COLUMNS)
    subjects_df = pl.DataFrame(subject_rows, schema=SUBJECT_COLUMNS)
    strand = _strand_check(cfg, source, units, subjects, genes, candidates, local_flank, variants, recipe) \
        if strand_check else {"run": False, "reason": "disabled"}
    summary = {
        "genes": len(units), "subjects": len(subjects), "variants": variants.height,
        "variants_by_status": dict(variants.group_by("status").len().iter_rows()),
        "variants_by_consequence": dict(variants.group_by("consequence").len().iter_rows()),
        "windows_embedded": int(sum(len(p.lengths) for p in plans)),
        "tokens_embedded": int(sum(int(p.lengths.sum()) for p in plans)),
        "windows_new": new_windows, "window_store": cfg.window_store,
        "local_flank": local_flank, "candidates_vcf": variants_vcf, "qc": qc, "strand_check": strand,
    }
    full_recipe = pilot_recipe(cfg, recipe, units, qc, variants_vcf, local_flank, source=source.path)
    return PilotResult(variants, subjects_df, summary, full_recipe, genes)


def _strand_check(cfg: CohortConfig, source: HaplotypeSource, units: list[GeneUnit], subjects: list[str],
                  genes: dict, candidates: dict, local_flank: int, variants, recipe: dict) -> dict:
    """Minus-strand genes again with the other orientation: a PS model must give the same distances."""
    minus = [u.gene_id for u in units if u.region.strand == "-"]
    if recipe["encoder"]["strand"] != "built_in":
        return {"run": False, "reason": "strand invariance by averaging two passes, not built in (only an "
                                        "RC-equivariant model such as Caduceus PS is checked this way)"}
    if not minus:
        return {"run": False, "reason": "no minus-strand gene"}
    other = "reference" if cfg.regions.orient == "transcript" else "transcript"
    flipped = cfg.model_copy(update={"regions": cfg.regions.model_copy(update={"orient": other})})
    flipped_units = [u for u in build_units(flipped) if u.gene_id in minus]
    plans, _ = embed_plans(flipped, source, flipped_units, subjects, genes, candidates, local_flank)
    rows = [r for p in plans for r in gene_results(p, subjects, cfg.haplotype_strategy)[0]]
    keys = ["gene_id", "pos", "ref", "alt"]
    cols = ["cos_distance", "l2_distance", "local_cos_distance", "local_l2_distance"]
    both = variants.filter(pl.col("gene_id").is_in(minus)).join(
        pl.DataFrame(rows, schema=VARIANT_COLUMNS).select(keys + cols), on=keys, suffix="_flipped")
    worst = max([float((both[c] - both[f"{c}_flipped"]).abs().max() or 0.0) for c in cols], default=0.0)
    return {"run": True, "genes": minus, "orientations": [cfg.regions.orient, other],
            "variants_compared": both.height, "max_abs_difference": worst, "passed": worst < 1e-4}


VARIANT_COLUMNS = {
    "gene_id": str, "gene_name": str, "chrom": str, "pos": int, "ref": str, "alt": str, "allele_count": int,
    "allele_frequency": float, "consequence": str, "status": str, "cos_distance": float, "l2_distance": float,
    "local_cos_distance": float, "local_l2_distance": float, "relative_position": float,
}
SUBJECT_COLUMNS = {"subject_id": str, "gene_id": str, "gene_name": str, "n_variants": int,
                   "cos_distance": float, "l2_distance": float}

