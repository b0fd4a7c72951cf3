"""The datasource's rows written by a Hail job as Parquet (for sites where Hail runs on a Spark cluster).

Layout of the output folder (written under a temp name, then renamed):
  haplotypes/<gene_id>.parquet   HAPLOTYPE_SCHEMA rows of one gene (an empty file when it has none)
  genotype_counts/<gene_id>.parquet  GENOTYPE_COUNTS_SCHEMA rows of one gene (missing, unphased het calls)
  samples.parquet                subject_id of every subject after QC, in MatrixTable column order
  qc_summary.json                the counted QC summary (variants.qc.qc_summary)
The cohort job reads it with `read_haplotypes_parquet(dir)`, which yields the same rows as
`read_haplotypes(mt, regions, ...)`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA
from neuro_caduceus.io import check_replaceable, output_dir, remove_leftovers
from neuro_caduceus.variants.extract import DEFAULT_MAX_REF_LENGTH, RegionSpan
from neuro_caduceus.variants.hail_session import init_hail
from neuro_caduceus.variants.qc import QCConfig, filter_ids, qc_summary, sample_sets

SAMPLES_SCHEMA = pa.schema([("subject_id", pa.string())])


def export_haplotypes(
    mt_path: str,
    regions: Sequence[Any],
    strategy: str,
    out_dir: str,
    qc: QCConfig | None = None,
    genes_per_query: int = 50,
    max_ref_length: int = DEFAULT_MAX_REF_LENGTH,
    overwrite: bool = False,
) -> dict:
    """Run in a process where Hail is (or can be) initialized, e.g. a Spark cluster's driver.

    Genes are read in groups of `genes_per_query` (one Hail query each, interval pushdown); returns
    {"genes", "rows", "samples", "out"}.
    """
    out = Path(out_dir)
    remove_leftovers(out)
    check_replaceable(out, overwrite)  # before Hail starts: a refused run writes nothing
    hl = init_hail()
    qc = qc or QCConfig()
    id_sets = sample_sets(qc)
    spans = sorted((RegionSpan.of(r) for r in regions), key=lambda r: (r.chrom, r.segments[0][0]))
    with output_dir(out, [mt_path], overwrite) as tmp:
        n_rows = _write_genes(tmp, mt_path, spans, strategy, qc, id_sets, max_ref_length, genes_per_query)
        mt = hl.read_matrix_table(mt_path)
        summary = qc_summary(mt, qc)
        samples, _ = filter_ids(mt.s.collect(), qc, id_sets, warn=False)  # qc_summary warned already
        pq.write_table(pa.table({"subject_id": samples}, schema=SAMPLES_SCHEMA), tmp / "samples.parquet")
        report = {"strategy": strategy, "mt": str(mt_path), **summary}
        (tmp / "qc_summary.json").write_text(json.dumps(report, indent=1))
    return {"genes": len(spans), "rows": n_rows, "samples": len(samples), "out": str(out)}


def _write_genes(tmp: Path, mt_path: str, spans: list[RegionSpan], strategy: str, qc: QCConfig, id_sets: Any,
                 max_ref_length: int, genes_per_query: int) -> int:
    """haplotypes/ and genotype_counts/ (a file per gene) into `tmp`; returns the haplotype rows."""
    from neuro_caduceus.variants.source import read_region_group  # ray: only where the export runs

    (tmp / "haplotypes").mkdir(parents=True)
    (tmp / "genotype_counts").mkdir()
    n_rows = 0
    for i in range(0, len(spans), genes_per_query):
        group = spans[i : i + genes_per_query]
        tables = {r.region_id: [] for r in group}
        counts: list[pa.Table] = []
        for table in read_region_group(
            mt_path, group, strategy, qc, id_sets, max_ref_length, genes_per_query=genes_per_query,
            counts_out=counts,
        ):
            tables[table["gene_id"][0].as_py()].append(table)
        for region, table in zip(group, counts, strict=strategy != "reference"):  # one per region, in order
            pq.write_table(table, tmp / "genotype_counts" / f"{region.region_id}.parquet")
        for gene_id, parts in tables.items():
            table = pa.concat_tables(parts) if parts else HAPLOTYPE_SCHEMA.empty_table()
            pq.write_table(table, tmp / "haplotypes" / f"{gene_id}.parquet")
            n_rows += table.num_rows
    return n_rows


def read_haplotypes_parquet(path: str, **read_args: Any):
    """ray.data.Dataset of HAPLOTYPE_SCHEMA rows from an export folder (same rows as the datasource)."""
    import ray.data

    folder = os.path.join(str(path), "haplotypes")
    if not os.path.isdir(folder) and "://" not in str(path):
        raise FileNotFoundError(f"{path}: not an export folder (no haplotypes/ inside)")
    return ray.data.read_parquet(folder, schema=HAPLOTYPE_SCHEMA, **read_args)


def read_export_samples(path: str) -> list[str]:
    """Subjects after QC, in MatrixTable order, from an export folder's samples.parquet."""
    return pq.read_table(os.path.join(str(path), "samples.parquet"))["subject_id"].to_pylist()
