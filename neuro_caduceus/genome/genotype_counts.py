"""Per subject-gene genotype counts (missing and unphased het calls), the `max_missing` QC and its summary.

Why: a missing call becomes the reference allele in every strategy, so a subject-gene with many missing
calls looks like a reference carrier for reasons of coverage or sequencing batch; an unphased het is put on
haplotype 2 under `diploid` by convention, not by observation. Both are counted at the source (the Hail
datasource and the VCF path give identical rows), carried into the shards (`n_missing`), and summarised.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neuro_caduceus.genome.fasta import ContigNotFound, resolve_contig
from neuro_caduceus.genome.regions import Region
from neuro_caduceus.genome.variant_schema import Variant, overlaps

GENOTYPE_COUNTS_SCHEMA = pa.schema(
    [
        ("subject_id", pa.string()),
        ("gene_id", pa.string()),
        ("n_missing", pa.int32()),
        ("n_unphased_het", pa.int32()),
        ("missing_records", pa.list_(pa.struct([("pos", pa.int64()), ("ref", pa.string())]))),
    ]
)
"""Per subject-gene genotype counts (rows only where a count is non-zero; an absent subject-gene has 0, 0).

Both count VCF records (as written, before the multi-allelic split) overlapping the gene's segments:
`n_missing` = records where the subject's GT is missing (or was set missing by entry QC), `n_unphased_het`
= records where the subject's GT is an unphased (`/`) diploid call of two different alleles, i.e. the calls
whose placement on haplotype 1 or 2 under `diploid` is a convention, not an observation. `missing_records`
lists the `n_missing` records themselves, as (POS, REF) as written, sorted: what `missing: impute` needs to
know which variants a subject was not called at.
"""


def counts_table(region_id: str, samples: Sequence[str], miss_s: np.ndarray, miss_n: np.ndarray,
                 het_s: np.ndarray, het_n: np.ndarray, missing: dict[int, set[tuple[int, str]]]) -> pa.Table:
    """GENOTYPE_COUNTS_SCHEMA rows from per-sample-index counts and missing records (POS, REF) (shared by the
    Hail and VCF paths)."""
    n = np.zeros((len(samples), 2), dtype=np.int64)
    n[miss_s, 0] = miss_n
    n[het_s, 1] = het_n
    rows = np.flatnonzero(n.any(axis=1))
    ids = np.asarray(samples, dtype=object)[rows]
    order = np.argsort(ids.astype(str), kind="stable")
    rows, ids = rows[order], ids[order]
    return pa.table(
        {
            "subject_id": pa.array(ids.tolist(), pa.string()),
            "gene_id": pa.array([region_id] * len(rows), pa.string()),
            "n_missing": pa.array(n[rows, 0], pa.int32()),
            "n_unphased_het": pa.array(n[rows, 1], pa.int32()),
            "missing_records": pa.array(
                [[{"pos": p, "ref": r} for p, r in sorted(missing.get(int(i), ()))] for i in rows],
                GENOTYPE_COUNTS_SCHEMA.field("missing_records").type),
        },
        schema=GENOTYPE_COUNTS_SCHEMA,
    )


def excluded_by_missing(counts: pa.Table, max_missing: int | None) -> set[tuple[str, str]]:
    """(subject_id, gene_id) pairs with more than `max_missing` missing calls (none when it is None)."""
    if max_missing is None or not counts.num_rows:
        return set()
    over = counts.filter(pc.greater(counts.column("n_missing"), max_missing))
    return set(zip(over.column("subject_id").to_pylist(), over.column("gene_id").to_pylist(), strict=True))


def n_missing_of(counts: pa.Table | None, subjects: Sequence[str]) -> pa.Array:
    """int32 `n_missing` per subject of one gene (0 when absent); all null when the source gave no counts."""
    if counts is None:
        return pa.nulls(len(subjects), pa.int32())
    index = {s: i for i, s in enumerate(subjects)}
    out = np.zeros(len(subjects), dtype=np.int32)
    ids, n_missing = counts.column("subject_id").to_pylist(), counts.column("n_missing").to_pylist()
    for s, n in zip(ids, n_missing, strict=True):
        if s in index:
            out[index[s]] = n
    return pa.array(out, pa.int32())


def unit_genotype_stats(counts: pa.Table | None, subjects: Sequence[str], max_missing: int | None) -> dict:
    """One gene's counts over the cohort's subjects, for its unit stats (None where the source gave none)."""
    if counts is None:
        return {"missing_calls": None, "unphased_het_calls": None, "excluded_subject_genes": 0}
    counts = counts.filter(pc.is_in(counts.column("subject_id"), pa.array(list(subjects), pa.string())))
    return {"missing_calls": pc.sum(counts.column("n_missing")).as_py() or 0,
            "unphased_het_calls": pc.sum(counts.column("n_unphased_het")).as_py() or 0,
            "excluded_subject_genes": len(excluded_by_missing(counts, max_missing))}


def apply_genotype_summary(manifest: dict, strategy: str, max_missing: int | None) -> dict:
    """Add the `genotypes` totals (and the diploid warning) to a cohort manifest; excluded rows leave `rows`;
    `imputed_calls` counts the (subject, variant) calls `missing: impute` replaced by an expected dosage.

    The warning is also printed to stderr, so a job log shows it.
    """
    genes = manifest.get("per_gene", [])
    known = [g for g in genes if g.get("missing_calls") is not None]
    het = sum(g["unphased_het_calls"] for g in known)
    excluded = sum(int(g.get("excluded_subject_genes", 0)) for g in genes)
    summary = {"missing_calls": sum(g["missing_calls"] for g in known) if known else None,
               "unphased_het_calls": het if known else None, "genes_with_counts": len(known),
               "max_missing": max_missing, "excluded_subject_genes": excluded,
               "imputed_calls": sum(int(g.get("imputed_calls", 0)) for g in genes), "warning": None}
    if strategy == "diploid" and het:
        summary["warning"] = _diploid_warning(het)
        print(f"WARNING: {summary['warning']}", file=sys.stderr, flush=True)
    manifest["genotypes"] = summary
    manifest["rows"] = manifest.get("rows", 0) - excluded
    return manifest


def _diploid_warning(n_het: int) -> str:
    return (f"{n_het:,} unphased het calls: under haplotype_strategy diploid each is put on haplotype 2 by "
            "convention, so a subject's hets all land on one chromosome; use phased input, or the "
            "phase-free, dosage-aware strategy additive (haplotype_strategy: additive, as in "
            "configs/ukb_wes.yaml)")


def genotype_counts_from_vcf(vcf: str, regions: Sequence[Region], samples: Sequence[str]) -> pa.Table:
    """Per subject-gene missing and unphased het calls (GENOTYPE_COUNTS_SCHEMA, the Hail path's rows).

    Read with pysam, record by record (one count per VCF record as written, whatever its number of ALTs):
    missing = no GT or a missing allele; unphased het = a `/` diploid call of two different alleles.
    """
    import pysam

    tables = []
    with pysam.VariantFile(vcf) as vf:
        vf.subset_samples(list(samples))
        order = list(vf.header.samples)
        contigs = set(vf.header.contigs) | set(vf.index or [])
        for region in regions:
            n = np.zeros((len(order), 2), dtype=np.int64)
            missing: dict[int, set[tuple[int, str]]] = {}
            try:
                chrom = resolve_contig(region.chrom, contigs, None, "the VCF")
            except ContigNotFound:
                chrom = None
            start, end = region.segments[0][0], region.segments[-1][1]
            for rec in vf.fetch(chrom, start, end) if chrom else ():
                if not overlaps(Variant(rec.chrom, rec.pos, rec.ref or "N", "N"), region.segments):
                    continue
                for i, call in enumerate(rec.samples.values()):
                    gt = call.get("GT") if "GT" in rec.format else None
                    if not gt or None in gt:
                        n[i, 0] += 1
                        missing.setdefault(i, set()).add((rec.pos, rec.ref))
                    elif len(gt) == 2 and gt[0] != gt[1] and not call.phased:
                        n[i, 1] += 1
            idx = np.arange(len(order))
            tables.append(counts_table(region.region_id, order, idx, n[:, 0], idx, n[:, 1], missing))
    return pa.concat_tables(tables) if tables else GENOTYPE_COUNTS_SCHEMA.empty_table()
