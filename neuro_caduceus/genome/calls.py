"""Sparse non-reference calls of one gene -> its unique haplotypes with their carriers (HAPLOTYPE_SCHEMA).

Why separate from Hail: the Ray datasource and the Parquet export collect the same sparse calls and must
turn them into identical rows. Columnar numpy throughout: a gene with a common variant has hundreds of
thousands of non-ref calls in a biobank, so nothing here loops over calls or carriers in Python.

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

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from neuro_caduceus.genome.genotype_counts import counts_table
from neuro_caduceus.genome.strategies import check_strategy
from neuro_caduceus.genome.variant_schema import (
    CARRIER_TYPE,
    HAPLOTYPE_SCHEMA,
    VARIANT_TYPE,
    Variant,
    haplotype_key_of_tokens,
)

# Bits of the per-call GT code (downcoded after the split: each allele is 0 = REF or 1 = this ALT).
G0, G1, PHASED, HAPLOID = 1, 2, 4, 8


@dataclass(frozen=True)
class SparseCalls:
    """Non-reference calls, columnar: call i is subject `sample[i]` at variant `var[i]` with GT `code[i]`.

    `variants[j]`, `record[j]` (id of the written VCF record) and `a_index[j]` describe variant j. Missing
    calls (no GT, or set missing by entry QC) are listed apart: subject `missing_sample[i]` at variant
    `missing_var[i]`.
    """

    samples: np.ndarray  # str, MatrixTable column order
    variants: list[Variant]
    record: np.ndarray  # int64 per variant
    a_index: np.ndarray  # int64 per variant
    sample: np.ndarray  # int64 per call
    var: np.ndarray  # int64 per call
    code: np.ndarray  # int64 per call
    missing_sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    missing_var: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def restrict(self, keep_variants: np.ndarray) -> SparseCalls:
        """Only the variants where `keep_variants` is True, renumbered by position, then record, then ALT.

        Why record order within a position: bcftools consensus applies one position's variants in file order.
        """
        kept = np.flatnonzero(keep_variants)
        variants, record, a_index = self.variants, self.record, self.a_index
        kept = np.array(
            sorted(kept.tolist(), key=lambda j: (variants[j].chrom, variants[j].pos, record[j], a_index[j])),
            dtype=np.int64,
        )
        new_id = np.full(len(self.variants), -1, dtype=np.int64)
        new_id[kept] = np.arange(len(kept))
        mask = new_id[self.var] >= 0
        missing = new_id[self.missing_var] >= 0
        return SparseCalls(
            self.samples,
            [self.variants[i] for i in kept],
            self.record[kept],
            self.a_index[kept],
            self.sample[mask],
            new_id[self.var[mask]],
            self.code[mask],
            self.missing_sample[missing],
            new_id[self.missing_var[missing]],
        )


def haplotype_pairs(calls: SparseCalls) -> tuple[np.ndarray, np.ndarray]:
    """(carrier, variant) pairs, carrier = sample * 2 + hap_index - 1 (rules in the module docstring)."""
    code, sample, var = calls.code, calls.sample, calls.var
    g0, g1 = (code & G0) > 0, (code & G1) > 0
    phased, haploid = (code & PHASED) > 0, (code & HAPLOID) > 0
    h1 = np.where(haploid, g0, np.where(phased, g0, g0 & g1))
    h2 = ~haploid & np.where(phased, g1, g0 & g1)
    het = ~haploid & ~phased & (g0 != g1)
    if het.any():  # unphased hets: 0/k -> hap 2; j/k (two split rows of one record) -> j hap 1, k hap 2
        idx = np.flatnonzero(het)
        rec, a = calls.record[var[idx]], calls.a_index[var[idx]]
        order = np.lexsort((a, rec, sample[idx]))
        idx, rec = idx[order], rec[order]
        s = sample[idx]
        first = np.ones(len(idx), dtype=bool)
        first[1:] = (s[1:] != s[:-1]) | (rec[1:] != rec[:-1])
        group = np.cumsum(first) - 1
        size = np.bincount(group)[group]
        h1[idx] = first & (size > 1)
        h2[idx] = ~(first & (size > 1))
    carrier = np.concatenate([sample[h1] * 2, sample[h2] * 2 + 1])
    variant = np.concatenate([var[h1], var[h2]])
    return carrier, variant


def haplotype_table(region_id: str, calls: SparseCalls, strategy: str) -> pa.Table:
    """HAPLOTYPE_SCHEMA rows for one region: unique non-reference haplotypes and their carriers.

    Rows sorted by haplotype_key; variants by position, then VCF record (the order of `calls.variants`);
    carriers by (subject_id, hap_index). Keys are haplotype_key's (variants in Variant order).
    """
    if check_strategy(strategy) == "reference" or len(calls.var) == 0:
        return HAPLOTYPE_SCHEMA.empty_table()
    carrier, variant = haplotype_pairs(calls)
    if strategy == "consensus":
        carrier = carrier // 2 * 2
    n_var = len(calls.variants)
    pair = np.unique(carrier * n_var + variant)  # sorted by carrier, then variant (= Variant order)
    carrier, variant = pair // n_var, pair % n_var
    carriers, start, length = np.unique(carrier, return_index=True, return_counts=True)
    padded = np.full((len(carriers), int(length.max())), -1, dtype=np.int64)
    padded[np.repeat(np.arange(len(carriers)), length), np.arange(len(pair)) - np.repeat(start, length)] = (
        variant
    )
    haps, group = np.unique(padded, axis=0, return_inverse=True)
    group = group.reshape(-1)
    rows = haps.tolist()  # plain ints: far faster to walk than numpy scalars
    tokens = [v.token() for v in calls.variants]
    v = calls.variants
    if all(v[j] <= v[j + 1] for j in range(n_var - 1)):  # ids already in Variant order (the usual case)
        key_rows = [[j for j in row if j >= 0] for row in rows]
    else:  # one position's records not in Variant order: keys take the variants in Variant order
        variant_rank = {j: r for r, j in enumerate(sorted(range(n_var), key=v.__getitem__))}
        key_rows = [sorted((j for j in row if j >= 0), key=variant_rank.__getitem__) for row in rows]
    if len(set(tokens)) == len(tokens):
        keys = [haplotype_key_of_tokens(region_id, [tokens[j] for j in row]) for row in key_rows]
    else:  # the same variant written in two records: keyed once, as haplotype_key does
        keys = [haplotype_key_of_tokens(region_id, dict.fromkeys(tokens[j] for j in row)) for row in key_rows]
    rank = np.empty(len(keys), dtype=np.int64)
    rank[np.argsort(keys, kind="stable")] = np.arange(len(keys))

    subject_rank = np.empty(len(calls.samples), dtype=np.int64)
    subject_rank[np.argsort(calls.samples, kind="stable")] = np.arange(len(calls.samples))
    sample, hap = carriers // 2, carriers % 2 + 1
    order = np.lexsort((hap, subject_rank[sample], rank[group]))
    carrier_offsets = np.concatenate([[0], np.cumsum(np.bincount(rank[group], minlength=len(keys)))])
    carrier_struct = pa.StructArray.from_arrays(
        [
            pa.array(calls.samples[sample[order]], pa.string()),
            pa.array(hap[order].astype(np.int8), pa.int8()),
        ],
        fields=list(CARRIER_TYPE),
    )
    by_rank = np.argsort(rank)
    ordered = haps[by_rank]
    present = ordered >= 0
    flat = ordered[present]  # row-major: each haplotype's variants in position, record order
    variant_offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))])
    columns = {f: np.array([getattr(v, f) for v in calls.variants], dtype=object)
               for f in ("chrom", "ref", "alt")}
    variant_struct = pa.StructArray.from_arrays(
        [
            pa.array(columns["chrom"][flat], pa.string()),
            pa.array(np.array([v.pos for v in calls.variants], dtype=np.int64)[flat], pa.int64()),
            pa.array(columns["ref"][flat], pa.string()),
            pa.array(columns["alt"][flat], pa.string()),
        ],
        fields=list(VARIANT_TYPE),
    )
    return pa.table(
        {
            "gene_id": pa.array([region_id] * len(keys), pa.string()),
            "haplotype_key": pa.array([keys[g] for g in by_rank], pa.string()),
            "variants": pa.ListArray.from_arrays(pa.array(variant_offsets, pa.int32()), variant_struct),
            "carriers": pa.ListArray.from_arrays(pa.array(carrier_offsets, pa.int32()), carrier_struct),
        },
        schema=HAPLOTYPE_SCHEMA,
    )


def _per_sample_records(sample: np.ndarray, record: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sample, number of distinct records) for the (sample, record) pairs given."""
    if not len(sample):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = np.unique(np.stack([sample, record], axis=1), axis=0)
    return np.unique(pairs[:, 0], return_counts=True)


def _missing_records(calls: SparseCalls) -> dict[int, set[tuple[int, str]]]:
    """Per sample index, the (POS, REF) of the records where its call is missing (split rows merged)."""
    out: dict[int, set[tuple[int, str]]] = {}
    for s, v in zip(calls.missing_sample.tolist(), calls.missing_var.tolist(), strict=True):
        out.setdefault(s, set()).add((calls.variants[v].pos, calls.variants[v].ref))
    return out


def genotype_counts(region_id: str, calls: SparseCalls) -> pa.Table:
    """GENOTYPE_COUNTS_SCHEMA rows of one region from its sparse calls, sorted by subject_id."""
    code = calls.code
    g0, g1 = (code & G0) > 0, (code & G1) > 0
    het = ((code & HAPLOID) == 0) & ((code & PHASED) == 0) & (g0 != g1)
    miss_s, miss_n = _per_sample_records(calls.missing_sample, calls.record[calls.missing_var])
    het_s, het_n = _per_sample_records(calls.sample[het], calls.record[calls.var[het]])
    return counts_table(region_id, calls.samples, miss_s, miss_n, het_s, het_n, _missing_records(calls))
