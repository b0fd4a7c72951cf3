"""Where the cohort's haplotypes come from: one interface over a MatrixTable, a Parquet export or a VCF.

Why one interface: the planner, the dry run and the recipe need the same few things of any input (one
gene's unique haplotypes and genotype counts, the subjects after QC, what to check before a run, which file
to name in the recipe), and `open_source` chooses the implementation once from `inputs`.

Why per gene: the job's work unit is a gene, so each CPU task reads exactly its gene's HAPLOTYPE_SCHEMA rows
(the Hail datasource's read body with interval pushdown, the exported Parquet file of that gene, or the pysam
VCF oracle path) and a unit is complete or absent, never half-read.

Hail and Ray are imported inside the MatrixTable methods: this module is loaded by the driver's dry run and by
every planning task, which never start a JVM and need not load Ray Data.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.cohort.config import Inputs
from neuro_caduceus.genome.genotype_counts import genotype_counts_from_vcf
from neuro_caduceus.genome.haplotypes import unique_haplotypes_from_vcf
from neuro_caduceus.genome.personalize import vcf_samples
from neuro_caduceus.genome.strategies import calls_strategy
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA
from neuro_caduceus.io import FilesystemMissing, filesystem
from neuro_caduceus.variants.export import read_export_samples
from neuro_caduceus.variants.extract import DEFAULT_MAX_REF_LENGTH, RegionSpan, read_region_matrix
from neuro_caduceus.variants.hail_session import init_hail
from neuro_caduceus.variants.mt_meta import read_meta
from neuro_caduceus.variants.qc import QCConfig, filter_ids, qc_summary, sample_sets


def url_exists(path: str) -> bool:
    """A local path or URL exists (any fsspec filesystem)."""
    fs, p = filesystem(path)
    return fs.exists(p)


@dataclass(frozen=True)
class GeneGenotypes:
    """One gene's HAPLOTYPE_SCHEMA rows and its GENOTYPE_COUNTS_SCHEMA table (missing and unphased het calls
    per subject; None for the reference strategy and for a Parquet export written before the counts)."""

    haplotypes: pa.Table
    counts: pa.Table | None


class HaplotypeSource(ABC):
    """The cohort's genotypes as the job reads them; `kind` is the `inputs` key, `path` its value."""

    kind: str
    path: str

    def gene_haplotypes(self, region: Any, strategy: str, subjects: list[str] | None = None) -> pa.Table:
        """HAPLOTYPE_SCHEMA rows of one gene (empty for the reference strategy)."""
        return self._gene(region, strategy, subjects, with_counts=False).haplotypes

    def gene_genotypes(self, region: Any, strategy: str, subjects: list[str] | None = None) -> GeneGenotypes:
        """The gene's haplotypes and genotype counts."""
        return self._gene(region, strategy, subjects, with_counts=True)

    def _gene(self, region: Any, strategy: str, subjects: list[str] | None,
              with_counts: bool) -> GeneGenotypes:
        strategy = calls_strategy(strategy)
        if strategy == "reference":
            return GeneGenotypes(HAPLOTYPE_SCHEMA.empty_table(), None)
        parts, counts = self._read_gene(region, strategy, subjects, with_counts)
        parts = [p.select(HAPLOTYPE_SCHEMA.names).cast(HAPLOTYPE_SCHEMA) for p in parts if p.num_rows]
        return GeneGenotypes(pa.concat_tables(parts) if parts else HAPLOTYPE_SCHEMA.empty_table(), counts)

    @abstractmethod
    def _read_gene(self, region: Any, strategy: str, subjects: list[str] | None,
                   with_counts: bool) -> tuple[list[pa.Table], pa.Table | None]:
        """The gene's haplotype tables for a sequence strategy other than reference, and (`with_counts`) its
        genotype counts."""

    @abstractmethod
    def subjects_and_qc(self, regions: list) -> tuple[list[str], dict]:
        """Subjects after QC (source order) and the counted QC summary for the recipe and the manifest."""

    @abstractmethod
    def problems(self) -> list[str]:
        """What is missing or incomplete in the input (an index, the MatrixTable's GT, the export's parts)."""


@dataclass(frozen=True)
class MatrixTableSource(HaplotypeSource):
    """A Hail MatrixTable (`import-vcf` output), read with the configured QC by Hail inside Ray workers (the
    planning tasks, and one task for the subjects); a gene reads only its own partitions."""

    path: str
    qc: QCConfig
    kind = "matrix_table"

    def _read_gene(self, region: Any, strategy: str, subjects: list[str] | None,
                   with_counts: bool) -> tuple[list[pa.Table], pa.Table | None]:
        from neuro_caduceus.variants.source import read_region_group  # Ray Data (the datasource's module)

        counts: list[pa.Table] = []
        parts = list(read_region_group(self.path, [RegionSpan.of(region)], strategy, self.qc,
                                       sample_sets(self.qc), counts_out=counts if with_counts else None))
        return parts, (pa.concat_tables(counts) if counts else None)

    def subjects_and_qc(self, regions: list) -> tuple[list[str], dict]:
        import ray

        spans = [RegionSpan.of(r) for r in regions]
        task = ray.remote(num_cpus=1)(_mt_subjects_and_qc)  # Hail runs in a worker: no JVM on the driver
        return ray.get(task.remote(self.path, self.qc, spans))

    def problems(self) -> list[str]:
        try:
            if "GT" not in read_meta(self.path).entry_fields:
                return [f"inputs.matrix_table: {self.path} has no GT entry field"]
        except ImportError as err:
            return [f"inputs.matrix_table: {FilesystemMissing(self.path, err)}"]
        except (OSError, ValueError) as err:
            return [f"inputs.matrix_table: {err}"]
        return []


def _mt_subjects_and_qc(mt_path: str, qc: QCConfig, spans: list) -> tuple[list[str], dict]:
    """QC counts over the configured regions only (interval pushdown), never a scan of the whole exome."""
    from neuro_caduceus.variants.source import WORKER_DRIVER_MEMORY  # Ray Data (the datasource's module)

    hl = init_hail(cores=1, driver_memory=WORKER_DRIVER_MEMORY)
    mt = read_region_matrix(hl, mt_path, spans, DEFAULT_MAX_REF_LENGTH)
    summary = qc_summary(mt, qc)
    summary["scope"] = "variants in the configured regions"
    kept, _ = filter_ids(mt.s.collect(), qc, sample_sets(qc), warn=False)
    return kept, summary


@dataclass(frozen=True)
class ParquetExportSource(HaplotypeSource):
    """The folder of `neuro-caduceus export-variants`: one Parquet file per gene, QC applied at export."""

    path: str
    kind = "haplotypes_parquet"

    @property
    def root(self) -> str:
        return self.path.rstrip("/")

    def _read_gene(self, region: Any, strategy: str, subjects: list[str] | None,
                   with_counts: bool) -> tuple[list[pa.Table], pa.Table | None]:
        path = f"{self.root}/haplotypes/{region.region_id}.parquet"
        fs, fs_path = fsspec.core.url_to_fs(path)
        if not fs.exists(fs_path):
            raise FileNotFoundError(
                f"{path}: gene {region.region_id} is not in the export; re-run export-variants with this "
                "gene set and region settings"
            )
        with fs.open(fs_path, "rb") as f:
            parts = [pq.read_table(f)]
        counts_path, counts = fs_path.replace("/haplotypes/", "/genotype_counts/"), None
        if with_counts and fs.exists(counts_path):
            with fs.open(counts_path, "rb") as f:
                counts = pq.read_table(f)
        return parts, counts

    def subjects_and_qc(self, regions: list) -> tuple[list[str], dict]:
        with fsspec.open(f"{self.root}/qc_summary.json", "rt") as f:
            summary = json.load(f)
        return read_export_samples(self.root), summary

    def problems(self) -> list[str]:
        return [f"inputs.haplotypes_parquet: {path} not found"
                for path in (f"{self.root}/samples.parquet", f"{self.root}/qc_summary.json")
                if not url_exists(path)]


@dataclass(frozen=True)
class VcfSource(HaplotypeSource):
    """A bgzipped, indexed VCF read with pysam (small runs; only the sample lists of the QC apply)."""

    path: str
    qc: QCConfig
    kind = "vcf"

    def _read_gene(self, region: Any, strategy: str, subjects: list[str] | None,
                   with_counts: bool) -> tuple[list[pa.Table], pa.Table | None]:
        parts = [unique_haplotypes_from_vcf(self.path, [region], strategy, samples=subjects)]
        counts = None
        if with_counts:
            chosen = subjects if subjects is not None else vcf_samples(self.path)
            counts = genotype_counts_from_vcf(self.path, [region], chosen)
        return parts, counts

    def subjects_and_qc(self, regions: list) -> tuple[list[str], dict]:
        kept, samples = filter_ids(vcf_samples(self.path), self.qc, sample_sets(self.qc))
        note = "VCF path: sample lists applied; entry/variant QC keys need the MatrixTable path"
        return kept, {"config": self.qc.model_dump(mode="json"), "samples": samples, "note": note}

    def problems(self) -> list[str]:
        if not url_exists(self.path):
            return [f"inputs.vcf: {self.path} not found"]
        if not (url_exists(self.path + ".tbi") or url_exists(self.path + ".csi")):
            return [f"inputs.vcf: {self.path} has no .tbi/.csi index (tabix -p vcf)"]
        return []


def open_source(inputs: Inputs, qc: QCConfig) -> HaplotypeSource:
    """The source `inputs` names (exactly one of matrix_table, haplotypes_parquet, vcf; checked by Inputs)."""
    if inputs.matrix_table:
        return MatrixTableSource(inputs.matrix_table, qc)
    if inputs.haplotypes_parquet:
        return ParquetExportSource(inputs.haplotypes_parquet)
    return VcfSource(str(inputs.vcf), qc)
