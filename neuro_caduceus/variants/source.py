"""A Ray Data datasource over a Hail MatrixTable: per gene group, the unique haplotypes and their carriers.

Why: Ray reads the MatrixTable directly, without a Spark cluster. Each read task runs Hail locally inside its
Ray worker (one JVM per worker process, started once by `init_hail`), reads only the partitions of its genes
(`_intervals` pushdown), localizes only non-reference entries and emits Arrow blocks in HAPLOTYPE_SCHEMA.
Subjects with no non-reference call in a gene are not listed: they carry that gene's reference haplotype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from neuro_caduceus.genome.calls import genotype_counts, haplotype_table
from neuro_caduceus.genome.strategies import check_strategy
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA
from neuro_caduceus.variants.extract import (
    DEFAULT_MAX_REF_LENGTH,
    RegionSpan,
    calls_by_region,
    check_contigs,
    nonref_calls,
    read_region_matrix,
)
from neuro_caduceus.variants.hail_session import init_hail
from neuro_caduceus.variants.mt_meta import read_meta
from neuro_caduceus.variants.qc import QCConfig, apply_qc, filter_ids, sample_sets

WORKER_DRIVER_MEMORY = os.environ.get("NEURO_CADUCEUS_HAIL_WORKER_MEMORY", "1g")
GENES_PER_QUERY = 16  # genes per Hail query inside a read task (bounds the calls held at once)


def read_region_group(
    mt_path: str,
    regions: Sequence[RegionSpan],
    strategy: str,
    qc: QCConfig | None,
    id_sets: tuple[set[str] | None, set[str]] | None = None,
    max_ref_length: int = DEFAULT_MAX_REF_LENGTH,
    cores: int = 1,
    driver_memory: str = WORKER_DRIVER_MEMORY,
    genes_per_query: int = GENES_PER_QUERY,
    counts_out: list[pa.Table] | None = None,
) -> Iterator[pa.Table]:
    """One Arrow table per region with rows (the body of a read task; also used by the Parquet export).

    Regions are queried `genes_per_query` at a time, which bounds the non-ref calls held in memory at once.
    When `counts_out` is a list, each region's GENOTYPE_COUNTS_SCHEMA table (missing and unphased het calls
    per subject, from the same query) is appended to it.
    """
    if strategy == "reference" or not regions:
        return
    hl = init_hail(cores=cores, driver_memory=driver_memory)
    for i in range(0, len(regions), genes_per_query):
        chunk = regions[i : i + genes_per_query]
        mt = apply_qc(read_region_matrix(hl, mt_path, chunk, max_ref_length), qc, id_sets)
        for region, region_calls in calls_by_region(nonref_calls(hl, mt), chunk):
            if counts_out is not None:
                counts_out.append(genotype_counts(region.region_id, region_calls))
            table = haplotype_table(region.region_id, region_calls, strategy)
            if table.num_rows:
                yield table


class HaplotypeDatasource(Datasource):
    """Unique non-reference haplotypes per region (gene) from a MatrixTable, as HAPLOTYPE_SCHEMA rows."""

    def __init__(
        self,
        mt_path: str,
        regions: Sequence[Any],
        strategy: str,
        qc: QCConfig | None = None,
        max_ref_length: int = DEFAULT_MAX_REF_LENGTH,
        driver_memory: str = WORKER_DRIVER_MEMORY,
    ) -> None:
        check_strategy(strategy)
        if not os.path.exists(mt_path) and "://" not in mt_path:
            raise FileNotFoundError(f"MatrixTable {mt_path} does not exist")
        self.mt_path = str(mt_path)
        self.regions = [RegionSpan.of(r) for r in regions]
        meta = read_meta(self.mt_path)  # checked here, on the driver, before any read task starts
        if "GT" not in meta.entry_fields:
            raise ValueError(
                f"{mt_path}: no entry field 'GT' (has: {list(meta.entry_fields)}); GT is required"
            )
        if meta.contigs is not None:
            check_contigs(self.regions, self.mt_path, str(meta.reference), meta.contigs)
        self.strategy = strategy
        self.qc = qc or QCConfig()
        self.id_sets = sample_sets(self.qc)  # read on the driver: workers need not see the list files
        self.max_ref_length = max_ref_length
        self.driver_memory = driver_memory

    def get_name(self) -> str:
        return "HailHaplotypes"

    def estimate_inmemory_data_size(self) -> int | None:
        """Upper-bound guess: the on-disk entry bytes of the MT scaled by the fraction of bases read.

        Output rows hold only non-reference calls, so the real size is far smaller; Ray uses this only to
        size blocks. None when the MT is not on a local filesystem.
        """
        rows_dir = os.path.join(self.mt_path, "entries", "rows", "parts")
        if not os.path.isdir(rows_dir):
            return None
        on_disk = sum(e.stat().st_size for e in os.scandir(rows_dir) if e.is_file())
        bases = sum(b - a + self.max_ref_length for r in self.regions for a, b in r.segments)
        span = sum(max(b for _, b in r.segments) for r in self.regions) or 1
        return max(1, int(on_disk * min(1.0, bases / span)))

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any | None = None,
    ) -> list[ReadTask]:
        """One task per region while parallelism allows, else contiguous groups of nearby regions."""
        regions = sorted(self.regions, key=lambda r: (r.chrom, r.segments[0][0]))
        if not regions:
            return []
        n_tasks = len(regions) if parallelism is None or parallelism <= 0 else min(parallelism, len(regions))
        n = len(regions)
        groups = [regions[i * n // n_tasks : (i + 1) * n // n_tasks] for i in range(n_tasks)]
        size = self.estimate_inmemory_data_size()
        tasks = []
        for group in groups:
            args = (self.mt_path, group, self.strategy, self.qc, self.id_sets, self.max_ref_length)
            meta = BlockMetadata(
                num_rows=None,
                size_bytes=None if size is None else max(1, size * len(group) // len(regions)),
                exec_stats=None,
                input_files=(self.mt_path,),
            )
            tasks.append(
                ReadTask(
                    _bind(args, self.driver_memory),
                    meta,
                    schema=HAPLOTYPE_SCHEMA,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks


def _bind(args: tuple, driver_memory: str):
    """A picklable zero-argument read function for one group (late binding of loop variables avoided)."""

    def read_fn() -> Iterator[pa.Table]:
        yield from read_region_group(*args, driver_memory=driver_memory)

    return read_fn


def read_haplotypes(
    mt_path: str,
    regions: Sequence[Any],
    strategy: str,
    qc: QCConfig | None = None,
    *,
    override_num_blocks: int | None = None,
    max_ref_length: int = DEFAULT_MAX_REF_LENGTH,
    **read_args: Any,
):
    """ray.data.Dataset of HAPLOTYPE_SCHEMA rows from a MatrixTable (one read task per gene or gene group)."""
    source = HaplotypeDatasource(mt_path, regions, strategy, qc, max_ref_length=max_ref_length)
    return ray.data.read_datasource(source, override_num_blocks=override_num_blocks, **read_args)


def _column_ids(mt_path: str) -> list[str]:
    hl = init_hail(cores=1, driver_memory=WORKER_DRIVER_MEMORY)
    return hl.read_matrix_table(mt_path).s.collect()


def cohort_samples(mt_path: str, qc: QCConfig | None = None) -> list[str]:
    """Subject ids after the sample-list QC, in MatrixTable column order.

    List ids absent from the MatrixTable are warned about (with counts). Runs Hail in a Ray task when Ray is
    up (so the driver needs no JVM), else in this process.
    """
    qc = qc or QCConfig()
    if ray.is_initialized():
        ids = ray.get(ray.remote(num_cpus=1)(_column_ids).remote(str(mt_path)))
    else:
        ids = _column_ids(str(mt_path))
    kept, _ = filter_ids(ids, qc, sample_sets(qc))
    return kept
