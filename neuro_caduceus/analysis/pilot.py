"""Variant-vs-reference pilot: how far, and where, variants move a gene's embedding.

Per gene of a cohort config (the cohort job's own config file and stages):
- the reference region, embedded once;
- every variant applied alone to the reference (single-variant effect);
- every unique haplotype, fanned out to its carriers (subject = mean of its haplotypes, as the cohort job);
- the local effect: the reference and the alternative sequence of [start - flank, end + flank) around the
  variant (flank 768: the +-768 bp of the official Caduceus variant-effect scripts), each embedded whole
  and mean-pooled.
Gene embeddings follow the window rule (sum of window sums / sum of lengths), so a variant or haplotype
re-embeds only the windows it touches, and identical window contents are embedded once. The model runs
in the cohort job's actor pool (`EmbedWindows` on a Ray Data `ActorPoolStrategy`). Distances to the
reference: cosine distance and L2; identical vectors have distance exactly 0.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from neuro_caduceus.cohort.config import CohortConfig
from neuro_caduceus.cohort.plan import GeneUnit, content_key, open_reference
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant

LOCAL_FLANK = 768


@dataclass
class PilotPlan:
    """One gene's distinct sequences to embed (`seqs`, filled with `sums`/`lengths` by the actor)."""

    unit: GeneUnit
    gene: dict  # gene_id, gene_name, strand, start, end, exons, cds (for consequence classes)
    seqs: list[str] = field(default_factory=list)
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

    def slot(self, seq: str, index: dict[str, int]) -> int:
        key = content_key(seq)
        if key not in index:
            index[key] = len(self.seqs)
            self.seqs.append(seq)
        return index[key]


def consequence(v: Variant, gene: dict) -> str:
    """coding (CDS of the canonical transcript) / UTR (other exonic) / intronic / flank (outside the gene)."""

    def hits(parts: list[dict]) -> bool:
        return any(v.start0 < p["end"] and v.end0 > p["start"] for p in parts)

    if hits(gene["cds"]):
        return "coding"
    if hits(gene["exons"]):
        return "UTR"
    return "intronic" if v.start0 < gene["end"] and v.end0 > gene["start"] else "flank"


def plan_pilot(reference: Any, unit: GeneUnit, gene: dict, haplotypes, candidates: list[Variant],
               local_flank: int) -> PilotPlan:
    """The distinct windows of the reference, of each variant alone, of each haplotype, and local pairs."""
    from neuro_caduceus.genome.haplotypes import build_sequence, overlaps
    from neuro_caduceus.genome.regions import Window

    plan, index = PilotPlan(unit, gene), {}
    ref_seqs = [build_sequence(reference, w, []).sequence for w in unit.windows]
    plan.ref_slots = np.array([plan.slot(s, index) for s in ref_seqs], dtype=np.int64)

    def replacements(variants: list[Variant]) -> list[tuple[int, int]]:
        out = []
        for i, w in enumerate(unit.windows):
            if any(overlaps(v, w.segments) for v in variants):
                seq = build_sequence(reference, w, variants).sequence
                if seq != ref_seqs[i]:
                    out.append((i, plan.slot(seq, index)))
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
        plan.local_slots.append((plan.slot(build_sequence(reference, local, []).sequence, index),
                                 plan.slot(build_sequence(reference, local, [v]).sequence, index)))
    return plan


def distances(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(cosine distance, L2) of two float64 vectors; exactly (0, 0) when they are identical."""
    if np.array_equal(a, b):
        return 0.0, 0.0
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return 1.0 - cos, float(np.linalg.norm(a - b))


def gene_results(plan: PilotPlan, subjects: list[str], strategy: str) -> tuple[list[dict], list[dict]]:
    """Per variant and per subject rows of one embedded gene plan."""
    from neuro_caduceus.cohort.shards import haplotype_embeddings, subject_embeddings

    ref, singles = haplotype_embeddings(SimpleNamespace(
        sums=plan.sums, lengths=plan.lengths, ref_slots=plan.ref_slots, hap_keys=plan.variants,
        hap_repl=plan.variant_repl))
    _, haps = haplotype_embeddings(plan)
    ploidy = 2 if strategy == "diploid" else 1
    n_alleles = max(1, ploidy * len(subjects))
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


def _plan_batch(batch: dict[str, Any], cfg: CohortConfig, subjects: list[str], genes: dict,
                candidates: dict, local_flank: int) -> dict[str, Any]:
    from neuro_caduceus.cohort.source import read_gene_haplotypes

    plans = []
    for blob in batch["unit"]:
        unit: GeneUnit = pickle.loads(blob)
        haps = read_gene_haplotypes(cfg, unit.region, subjects)
        plans.append(pickle.dumps(plan_pilot(open_reference(cfg.inputs.reference_fasta), unit,
                                             genes[unit.gene_id], haps, candidates.get(unit.gene_id, []),
                                             local_flank)))
    return {"gene_id": batch["gene_id"], "plan": np.array(plans, dtype=object)}


def embed_plans(cfg: CohortConfig, units: list[GeneUnit], subjects: list[str], genes: dict,
                candidates: dict, local_flank: int) -> list[PilotPlan]:
    """Plan on CPU tasks, embed in the cohort job's actor pool, return the embedded plans (small)."""
    import ray

    from neuro_caduceus.cohort.embed import EmbedWindows
    from neuro_caduceus.cohort.job import _gpus_per_actor

    compute = cfg.compute
    gpus = _gpus_per_actor(cfg)
    device = cfg.model.device if cfg.model.device != "auto" else ("cuda" if gpus > 0 else "cpu")
    resources: dict[str, Any] = {"num_gpus": gpus} if gpus > 0 else {"num_cpus": compute.cpus_per_actor}
    items = [{"gene_id": u.gene_id, "unit": pickle.dumps(u)} for u in units]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(_plan_batch, batch_size=1, batch_format="numpy", num_cpus=compute.cpus_per_task,
                        fn_kwargs={"cfg": cfg, "subjects": subjects, "genes": genes, "candidates": candidates,
                                   "local_flank": local_flank})
    ds = ds.map_batches(
        EmbedWindows,
        fn_constructor_kwargs={"checkpoint": cfg.model.checkpoint, "device": device, "dtype": cfg.model.dtype,
                               "window_batch_size": compute.window_batch_size,
                               "threads": int(max(1, compute.cpus_per_actor))},
        compute=ray.data.ActorPoolStrategy(min_size=compute.actors_min, max_size=compute.actors_max),
        batch_size=compute.genes_per_batch, batch_format="numpy", **resources,
    )
    plans = [pickle.loads(p) for batch in ds.iter_batches(batch_size=1, batch_format="numpy")
             for p in batch["plan"]]
    order = {u.gene_id: i for i, u in enumerate(units)}
    return sorted(plans, key=lambda p: order[p.unit.gene_id])


def candidate_variants(vcf: str, units: list[GeneUnit]) -> dict[str, list[Variant]]:
    """Sites of a candidate-variant VCF (genotypes not needed) per gene region, every ALT of each record."""
    import pysam

    from neuro_caduceus.genome.fasta import resolve_contig
    from neuro_caduceus.genome.haplotypes import overlaps

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


def run_pilot(cfg: CohortConfig, out: str | Path, variants_vcf: str | None = None,
              local_flank: int = LOCAL_FLANK, strand_check: bool = True) -> PilotResult:
    """Run the pilot for a cohort config and write variants/subjects Parquet, plots, report and summary."""
    import polars as pl
    import ray

    from neuro_caduceus.analysis.pilot_report import write_outputs
    from neuro_caduceus.analysis.variant_scores import add_llr_scores
    from neuro_caduceus.cohort.job import build_units
    from neuro_caduceus.cohort.source import cohort_subjects_and_qc
    from neuro_caduceus.genome.annotation import read_genes
    from neuro_caduceus.model import from_pretrained
    from neuro_caduceus.model.embedder import Embedder
    from neuro_caduceus.provenance import pilot_recipe

    t0 = time.time()
    model = from_pretrained(cfg.model.checkpoint)
    recipe = Embedder(model, device="cpu").recipe()
    units = build_units(cfg)
    genes = {r["gene_id"]: r for r in read_genes(cfg.inputs.gtf).filter(
        pl.col("gene_id").is_in([u.gene_id for u in units])).iter_rows(named=True)}
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    subjects, qc = cohort_subjects_and_qc(cfg, [u.region for u in units])
    candidates = candidate_variants(variants_vcf, units) if variants_vcf else {}
    print(f"pilot: {len(units)} genes, {len(subjects)} subjects, embedding on Ray ...", flush=True)
    plans = embed_plans(cfg, units, subjects, genes, candidates, local_flank)
    variant_rows, subject_rows = [], []
    for plan in plans:
        v, s = gene_results(plan, subjects, cfg.haplotype_strategy)
        variant_rows += v
        subject_rows += s
    variants = pl.DataFrame(variant_rows, schema=VARIANT_COLUMNS)
    variants, llr_floor = add_llr_scores(variants, model, cfg, genes, local_flank)  # variant_scores.py
    subjects_df = pl.DataFrame(subject_rows, schema=SUBJECT_COLUMNS)
    strand = _strand_check(cfg, units, subjects, genes, candidates, local_flank, variants, recipe) \
        if strand_check else {"run": False, "reason": "disabled"}
    summary = {
        "genes": len(units), "subjects": len(subjects), "variants": variants.height,
        "variants_by_status": dict(variants.group_by("status").len().iter_rows()),
        "variants_by_consequence": dict(variants.group_by("consequence").len().iter_rows()),
        "windows_embedded": int(sum(len(p.lengths) for p in plans)),
        "tokens_embedded": int(sum(int(p.lengths.sum()) for p in plans)),
        "local_flank": local_flank, "candidates_vcf": variants_vcf, "qc": qc, "strand_check": strand,
        "llr_noise_floor": llr_floor,
        "seconds": round(time.time() - t0, 1),
    }
    full_recipe = pilot_recipe(cfg, recipe, units, qc, variants_vcf, local_flank)  # provenance.py
    write_outputs(Path(out), variants, subjects_df, summary, full_recipe)
    return PilotResult(variants, subjects_df, summary)


def _strand_check(cfg: CohortConfig, units: list[GeneUnit], subjects: list[str], genes: dict,
                  candidates: dict, local_flank: int, variants, recipe: dict) -> dict:
    """Minus-strand genes again with the other orientation: a PS model must give the same distances."""
    import polars as pl

    from neuro_caduceus.cohort.job import build_units

    minus = [u.gene_id for u in units if u.region.strand == "-"]
    if not recipe.get("rcps"):
        return {"run": False, "reason": "not a PS (RC-equivariant) checkpoint"}
    if not minus:
        return {"run": False, "reason": "no minus-strand gene"}
    other = "reference" if cfg.regions.orient == "transcript" else "transcript"
    flipped = cfg.model_copy(update={"regions": cfg.regions.model_copy(update={"orient": other})})
    flipped_units = [u for u in build_units(flipped) if u.gene_id in minus]
    plans = embed_plans(flipped, flipped_units, subjects, genes, candidates, local_flank)
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


def pilot_summary_line(result: PilotResult) -> str:
    s = result.summary
    strand = s["strand_check"]
    check = (f"strand check max |diff| {strand['max_abs_difference']:.2e}" if strand.get("run")
             else f"strand check skipped ({strand['reason']})")
    return (f"{s['variants']} variants, {s['subjects']} subjects x {s['genes']} genes in {s['seconds']} s; "
            f"{check}")

