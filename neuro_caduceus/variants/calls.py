"""Sparse non-reference calls of one gene -> its unique haplotypes with their carriers (HAPLOTYPE_SCHEMA).

Why separate from Hail: the Ray datasource and the Parquet export collect the same sparse calls and must
turn them into identical rows; this step is plain Python over a gene's few non-ref calls.

Haplotype assignment (bcftools consensus semantics, reconstructed after Hail's split_multi_hts):
- phased calls keep their order: allele of GT[0] -> haplotype 1, GT[1] -> haplotype 2;
- unphased calls are stored by Hail with ascending allele indices, as DeepVariant/GLnexus write them, so
  for one VCF record a subject's `0/k` puts ALT k on haplotype 2, `k/k` on both, and `j/k` (j < k, two split
  rows of the same record) puts ALT j on haplotype 1 and ALT k on haplotype 2;
- a haploid call (ploidy 1) goes to haplotype 1; missing calls carry nothing (reference).
Variants are reported as written in the VCF record (`vcf_locus`/`vcf_alleles`, which `import-vcf` keeps
through the split), i.e. the raw per-ALT REF/ALT, not Hail's minimal representation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import pyarrow as pa

from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant, haplotype_key

STRATEGIES = ("reference", "consensus", "diploid")


class Call(NamedTuple):
    """One non-reference entry after the split: the subject, its variant, and the downcoded GT.

    A NamedTuple: a gene with common variants has hundreds of thousands of these.
    """

    subject_id: str
    variant: Variant
    record: tuple  # identifies the original VCF record: (chrom, pos, alleles...)
    a_index: int
    gt: tuple[int, ...]  # downcoded allele indices (0 = REF, 1 = this ALT), in Hail's stored order
    phased: bool


def overlaps(variant: Variant, segments: Sequence[tuple[int, int]]) -> bool:
    """REF span of the variant overlaps one of the 0-based half-open segments (as genome.variants_in)."""
    return any(variant.start0 < end and variant.end0 > start for start, end in segments)


def assign_haplotypes(calls: Iterable[Call]) -> dict[tuple[str, int], set[Variant]]:
    """(subject_id, hap_index 1|2) -> its ALT variants, following the rules in the module docstring."""
    haps: dict[tuple[str, int], set[Variant]] = defaultdict(set)
    unphased_hets: dict[tuple[str, tuple], list[Call]] = defaultdict(list)
    for c in calls:
        if len(c.gt) == 1:
            if c.gt[0] > 0:
                haps[(c.subject_id, 1)].add(c.variant)
        elif c.phased:
            for hap, allele in enumerate(c.gt[:2], start=1):
                if allele > 0:
                    haps[(c.subject_id, hap)].add(c.variant)
        elif c.gt[0] > 0 and c.gt[1] > 0:
            haps[(c.subject_id, 1)].add(c.variant)
            haps[(c.subject_id, 2)].add(c.variant)
        else:
            unphased_hets[(c.subject_id, c.record)].append(c)
    for (subject, _), group in unphased_hets.items():
        group.sort(key=lambda c: c.a_index)
        if len(group) == 1:  # written 0/k
            haps[(subject, 2)].add(group[0].variant)
        else:  # written j/k: the lower ALT index first
            haps[(subject, 1)].add(group[0].variant)
            for c in group[1:]:
                haps[(subject, 2)].add(c.variant)
    return haps


def haplotype_rows(region_id: str, calls: Iterable[Call], strategy: str) -> list[dict]:
    """Rows of HAPLOTYPE_SCHEMA for one region: unique non-reference haplotypes and their carriers.

    Rows are sorted by haplotype_key; variants by (chrom, pos, ref, alt); carriers by (subject_id, hap).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "reference":
        return []
    haps = assign_haplotypes(calls)
    if strategy == "consensus":
        merged: dict[tuple[str, int], set[Variant]] = defaultdict(set)
        for (subject, _), variants in haps.items():
            merged[(subject, 1)] |= variants
        haps = merged
    groups: dict[frozenset, list[tuple[str, int]]] = defaultdict(list)
    for carrier, variants in haps.items():
        if variants:
            groups[frozenset(variants)].append(carrier)
    rows = [
        {
            "gene_id": region_id,
            "haplotype_key": haplotype_key(region_id, variants),
            "variants": [v.__dict__ for v in sorted(variants)],
            "carriers": [{"subject_id": s, "hap_index": h} for s, h in sorted(carriers)],
        }
        for variants, carriers in groups.items()
    ]
    rows.sort(key=lambda r: r["haplotype_key"])
    return rows


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=HAPLOTYPE_SCHEMA)
