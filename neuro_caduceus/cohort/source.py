"""Where one gene's unique haplotypes come from, and who the cohort's subjects are.

Why per gene: the job's work unit is a gene, so each CPU task reads exactly its gene's HAPLOTYPE_SCHEMA rows
(the Hail datasource's read body with interval pushdown, the exported Parquet file of that gene, or the pysam
VCF oracle path) and a unit is complete or absent, never half-read.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.cohort.config import CohortConfig
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA


def read_gene_haplotypes(cfg: CohortConfig, region: Any, subjects: list[str] | None = None,
                         counts_out: list[pa.Table] | None = None) -> pa.Table:
    """HAPLOTYPE_SCHEMA rows of one gene (empty for the reference strategy).

    When `counts_out` is a list, the gene's GENOTYPE_COUNTS_SCHEMA table (missing and unphased het calls per
    subject) is appended to it (a Parquet export written before the counts existed has none).
    """
    strategy = cfg.haplotype_strategy
    if strategy == "additive":  # dosages need both haplotypes of every subject
        strategy = "diploid"
    if strategy == "reference":
        return HAPLOTYPE_SCHEMA.empty_table()
    inputs = cfg.inputs
    if inputs.matrix_table:
        from neuro_caduceus.variants.extract import RegionSpan
        from neuro_caduceus.variants.qc import sample_sets
        from neuro_caduceus.variants.source import read_region_group

        parts = list(
            read_region_group(
                inputs.matrix_table, [RegionSpan.of(region)], strategy, cfg.qc, sample_sets(cfg.qc),
                counts_out=counts_out,
            )
        )
    elif inputs.haplotypes_parquet:
        path = f"{inputs.haplotypes_parquet.rstrip('/')}/haplotypes/{region.region_id}.parquet"
        fs, fs_path = fsspec.core.url_to_fs(path)
        if not fs.exists(fs_path):
            raise FileNotFoundError(
                f"{path}: gene {region.region_id} is not in the export; re-run export_variants.py with this "
                "gene set and region settings"
            )
        with fs.open(fs_path, "rb") as f:
            parts = [pq.read_table(f)]
        counts_path = fs_path.replace("/haplotypes/", "/genotype_counts/")
        if counts_out is not None and fs.exists(counts_path):
            with fs.open(counts_path, "rb") as f:
                counts_out.append(pq.read_table(f))
    else:
        from neuro_caduceus.genome.haplotypes import unique_haplotypes_from_vcf
        from neuro_caduceus.genome.personalize import genotype_counts_from_vcf, vcf_samples

        parts = [unique_haplotypes_from_vcf(inputs.vcf, [region], strategy, samples=subjects)]
        if counts_out is not None:
            chosen = subjects if subjects is not None else vcf_samples(inputs.vcf)
            counts_out.append(genotype_counts_from_vcf(inputs.vcf, [region], chosen))
    parts = [p.select(HAPLOTYPE_SCHEMA.names).cast(HAPLOTYPE_SCHEMA) for p in parts if p.num_rows]
    return pa.concat_tables(parts) if parts else HAPLOTYPE_SCHEMA.empty_table()


def _mt_subjects_and_qc(mt_path: str, qc: Any, spans: list) -> tuple[list[str], dict]:
    """QC counts over the configured regions only (interval pushdown), never a scan of the whole exome."""
    from neuro_caduceus.variants.extract import DEFAULT_MAX_REF_LENGTH, read_region_matrix
    from neuro_caduceus.variants.hail_session import init_hail
    from neuro_caduceus.variants.qc import filter_ids, qc_summary, sample_sets
    from neuro_caduceus.variants.source import WORKER_DRIVER_MEMORY

    hl = init_hail(cores=1, driver_memory=WORKER_DRIVER_MEMORY)
    mt = read_region_matrix(hl, mt_path, spans, DEFAULT_MAX_REF_LENGTH)
    summary = qc_summary(mt, qc)
    summary["scope"] = "variants in the configured regions"
    kept, _ = filter_ids(mt.s.collect(), qc, sample_sets(qc), warn=False)
    return kept, summary


def cohort_subjects_and_qc(cfg: CohortConfig, regions: list) -> tuple[list[str], dict]:
    """Subjects after QC (source order) and the counted QC summary for the recipe and the manifest."""
    import ray

    inputs = cfg.inputs
    if inputs.matrix_table:
        from neuro_caduceus.variants.extract import RegionSpan

        spans = [RegionSpan.of(r) for r in regions]
        task = ray.remote(num_cpus=1)(_mt_subjects_and_qc)  # Hail runs in a worker: no JVM on the driver
        return ray.get(task.remote(inputs.matrix_table, cfg.qc, spans))
    if inputs.haplotypes_parquet:
        from neuro_caduceus.variants.export import read_export_samples

        root = inputs.haplotypes_parquet.rstrip("/")
        with fsspec.open(f"{root}/qc_summary.json", "rt") as f:
            summary = json.load(f)
        return read_export_samples(root), summary
    import pysam

    from neuro_caduceus.variants.qc import filter_ids, sample_sets

    with pysam.VariantFile(inputs.vcf) as vcf:
        ids = list(vcf.header.samples)
    kept, samples = filter_ids(ids, cfg.qc, sample_sets(cfg.qc))
    note = "VCF path: sample lists applied; entry/variant QC keys need the MatrixTable path"
    return kept, {"config": cfg.qc.model_dump(mode="json"), "samples": samples, "note": note}
