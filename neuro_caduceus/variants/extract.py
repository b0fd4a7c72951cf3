"""Hail side of the read: interval pushdown on a MatrixTable and collection of a gene group's non-ref calls.

Why: a read task must touch only the partitions of its genes (`hl.read_matrix_table(_intervals=...)`) and
localize only the non-reference entries (aggregated per row into one packed array), never samples x variants.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuro_caduceus.genome.calls import SparseCalls
from neuro_caduceus.genome.variant_schema import Variant, overlaps, variant_of

DEFAULT_MAX_REF_LENGTH = 1000
"""Intervals start this many bases before a region so a deletion starting upstream but reaching into the
region (REF span overlap, as genome.variants_in) is still read."""


@dataclass(frozen=True)
class RegionSpan:
    """The part of a genome Region the reader needs (plain data, cheap to ship to Ray workers)."""

    region_id: str
    chrom: str
    segments: tuple[tuple[int, int], ...]  # 0-based half-open, reference coordinates

    @classmethod
    def of(cls, region: Any) -> RegionSpan:
        """From a genome.regions.Region (or anything with region_id, chrom, segments)."""
        segments = tuple((int(a), int(b)) for a, b in region.segments)
        return cls(str(region.region_id), str(region.chrom), segments)


def reference_of(hl: Any, mt_path: str):
    """The MatrixTable's reference genome (reading the MT metadata registers a custom one)."""
    mt = hl.read_matrix_table(mt_path)
    if "locus" not in mt.row or not isinstance(mt.locus.dtype, hl.tlocus):
        raise ValueError(f"{mt_path}: row field 'locus' of type locus is required (rows: {list(mt.row)})")
    return mt.locus.dtype.reference_genome


def check_contigs(
    regions: Sequence[RegionSpan], mt_path: str, reference: str, contigs: Sequence[str]
) -> None:
    """Fail, naming the region and contig, when a region lies on a contig the MatrixTable's genome lacks."""
    for r in regions:
        if r.chrom not in contigs:
            shown = ", ".join(contigs[:5]) + (" ..." if len(contigs) > 5 else "")
            raise ValueError(
                f"region {r.region_id} is on contig {r.chrom!r}, which the MatrixTable {mt_path} "
                f"(reference {reference}: {shown}) does not have; check chr naming (chr1 vs 1) and reference"
            )


def locus_intervals(
    hl: Any, rg: Any, regions: Sequence[RegionSpan], max_ref_length: int, mt_path: str
) -> list:
    """Sorted, merged 1-based locus intervals covering every segment (padded upstream by max_ref_length)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    check_contigs(regions, mt_path, rg.name, rg.contigs)
    for r in regions:
        length = rg.lengths[r.chrom]
        for a, b in r.segments:
            spans.setdefault(r.chrom, []).append((max(1, a + 1 - max_ref_length), min(length, b)))
    out = []
    for chrom in sorted(spans, key=rg.contigs.index):
        merged: list[list[int]] = []
        for a, b in sorted(spans[chrom]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out += [
            hl.Interval(hl.Locus(chrom, a, rg), hl.Locus(chrom, b, rg), includes_end=True) for a, b in merged
        ]
    return out


def read_region_matrix(hl: Any, mt_path: str, regions: Sequence[RegionSpan], max_ref_length: int):
    """The MatrixTable restricted, at read time, to the partitions overlapping the regions."""
    rg = reference_of(hl, mt_path)
    return hl.read_matrix_table(mt_path, _intervals=locus_intervals(hl, rg, regions, max_ref_length, mt_path))


def nonref_calls(hl: Any, mt: Any) -> SparseCalls:
    """Localize only the non-reference entries of a (small, interval-restricted) MatrixTable.

    Per row, Hail aggregates the non-ref entries into one comma-separated string of int64 codes (column index
    * 16 + GT code), and the missing entries into one of column indices, parsed by numpy: several times
    faster than one struct per entry, and no Python int per entry (a common variant in a biobank has ~10^5
    non-ref entries).
    """
    if "GT" not in mt.entry:
        raise ValueError(f"MatrixTable has no entry field 'GT' (has: {list(mt.entry)}); GT is required")
    mt = mt.add_col_index("_ci")
    # the written VCF record: kept by import-vcf (vcf_*) or by hl.split_multi (old_*); else the row itself
    prefix = next((p for p in ("vcf_", "old_") if f"{p}locus" in mt.row and f"{p}alleles" in mt.row), None)
    raw = prefix is not None and "a_index" in mt.row
    locus = mt[f"{prefix}locus"] if raw else mt.locus
    alleles = mt[f"{prefix}alleles"] if raw else mt.alleles
    a_index = mt.a_index if raw else hl.int32(1)
    info = mt.info if "info" in mt.row else None
    span = {f"_{k.lower()}": info[k] if info is not None and k in info else hl.missing(hl.tint32)
            for k in ("END", "SVLEN")}  # the span of a symbolic <DEL>
    gt = mt.GT
    haploid = gt.ploidy == 1
    code = (
        hl.if_else(gt[0] > 0, 1, 0)
        + 2 * hl.if_else(~haploid & (gt[hl.if_else(haploid, 0, 1)] > 0), 1, 0)
        + 4 * hl.int(gt.phased)
        + 8 * hl.int(haploid)
    )
    mt = mt.select_rows(
        _n_alleles=hl.len(mt.alleles),
        _pos=locus.position,
        _alleles=alleles,
        _a=a_index,
        **span,
        _nr=hl.delimit(
            hl.agg.filter(gt.is_non_ref(), hl.agg.collect(hl.int64(mt._ci) * 16 + code)).map(hl.str), ","
        ),
        _miss=hl.delimit(hl.agg.filter(hl.is_missing(gt), hl.agg.collect(mt._ci)).map(hl.str), ","),
    )
    samples = np.array(mt.s.collect(), dtype=object)
    variants: list[Variant] = []
    records: dict[tuple, int] = {}
    record, a_idx, packed, missing = [], [], [], []
    for r in mt.rows().collect():
        if r._n_alleles != 2:
            raise ValueError(
                f"row {r.locus} {r.alleles} is multi-allelic; split the MatrixTable first "
                "(hl.split_multi_hts, as import-vcf does)"
            )
        if not r._nr and not r._miss:
            continue
        alleles = r._alleles
        variants.append(variant_of(r.locus.contig, int(r._pos), alleles[0], alleles[r._a], r._end, r._svlen))
        record.append(records.setdefault((r.locus.contig, int(r._pos), *r._alleles), len(records)))
        a_idx.append(int(r._a))
        packed.append(np.fromstring(r._nr, dtype=np.int64, sep=",") if r._nr else np.zeros(0, np.int64))
        missing.append(np.fromstring(r._miss, dtype=np.int64, sep=",") if r._miss else np.zeros(0, np.int64))
    lengths = [len(p) for p in packed]
    flat = np.concatenate(packed) if packed else np.zeros(0, dtype=np.int64)
    n_missing = [len(m) for m in missing]
    return SparseCalls(
        samples=samples,
        variants=variants,
        record=np.asarray(record, dtype=np.int64),
        a_index=np.asarray(a_idx, dtype=np.int64),
        sample=flat >> 4,
        var=np.repeat(np.arange(len(variants), dtype=np.int64), lengths),
        code=flat & 15,
        missing_sample=np.concatenate(missing) if missing else np.zeros(0, dtype=np.int64),
        missing_var=np.repeat(np.arange(len(variants), dtype=np.int64), n_missing),
    )


def calls_by_region(
    calls: SparseCalls, regions: Sequence[RegionSpan]
) -> Iterator[tuple[RegionSpan, SparseCalls]]:
    """Each region with the calls whose variant's REF span overlaps one of its segments."""
    for r in regions:
        keep = np.array([v.chrom == r.chrom and overlaps(v, r.segments) for v in calls.variants], dtype=bool)
        yield r, calls.restrict(keep)
