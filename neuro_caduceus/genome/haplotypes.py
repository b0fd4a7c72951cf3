"""Haplotype sequences: reference bases of a region or window with a haplotype's variants applied.

Semantics of `bcftools consensus` (-H 1 / -H 2 for the two diploid haplotypes, -H A for consensus), which
the tests use as the oracle:
- variants are applied in position order; REF must equal the FASTA (case-insensitive), else the variant is
  rejected and listed (or an error with `strict_ref`);
- a variant whose REF span overlaps one already applied to the same sequence is skipped and listed
  (bcftools also lets an insertion follow a variant ending at its anchor base; here that insertion is
  skipped as overlapping: normalized VCFs, such as DeepVariant/GLnexus output, never have that case);
- ALT `*` (spanning deletion), symbolic ALTs (`<DEL>` ...) and ALT == REF are ignored and listed.

Boundary rule (regions and windows cut the reference; variants need not respect the cuts): ALT base i of a
variant starting at reference position s maps to s + min(i, len(REF) - 1), i.e. inserted bases belong to the
last REF base and deleted bases vanish. A region or window keeps exactly the haplotype bases that map into its
segments. So a variant straddling a boundary contributes its bases on each side where they map, and the
windows of a haplotype (stride == window) concatenate to the haplotype of the whole region, exactly as the
reference windows tile the reference. Minus-strand regions in transcript orientation are built on the +
strand and reverse-complemented last.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa

from neuro_caduceus.genome.fasta import resolve_contig
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant

_COMPLEMENT = str.maketrans("ACGTNRYSWKMBDHVacgtnryswkmbdhv", "TGCANYRSWMKVHDBtgcanyrswmkvhdb")


class Span(Protocol):
    """A Region or a Window: a contig, ascending reference pieces, and whether to reverse-complement."""

    chrom: str
    segments: tuple[tuple[int, int], ...]

    @property
    def reverse(self) -> bool: ...


class BuildResult(NamedTuple):
    sequence: str
    applied: list[Variant]
    skipped_overlap: list[Variant]
    rejected_ref_mismatch: list[Variant]
    ignored: list[Variant]


def reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def overlaps(variant: Variant, segments: Sequence[tuple[int, int]]) -> bool:
    """The variant's REF span overlaps one of the 0-based half-open segments."""
    return any(variant.start0 < end and variant.end0 > start for start, end in segments)


def variants_in(span: Span, variants: Iterable[Variant]) -> list[Variant]:
    """The variants whose REF span overlaps the region's or window's segments (input order kept)."""
    return [v for v in variants if overlaps(v, span.segments)]


def _is_ignored(v: Variant) -> bool:
    alt = v.alt.upper()
    return alt in ("*", ".", v.ref.upper()) or alt.startswith("<") or "[" in alt or "]" in alt


def _reference_bases(reference, chrom: str, v: Variant) -> str:
    if v.end0 > reference.length(chrom):
        raise ValueError(
            f"{v.chrom}:{v.pos} {v.ref}>{v.alt} ends past the end of contig {chrom} in "
            f"{reference.path}: the VCF and the FASTA are different assemblies"
        )
    return reference.fetch(chrom, v.start0, v.end0)


def _select(reference, chrom: str, variants: list[Variant], strict_ref: bool):
    """Split the haplotype's variants into applied / skipped / rejected / ignored, in position order."""
    applied, skipped, rejected, ignored = [], [], [], []
    last_end = -1
    for v in sorted(variants):
        if _is_ignored(v):
            ignored.append(v)
            continue
        found = _reference_bases(reference, chrom, v)
        if found != v.ref.upper():
            if strict_ref:
                raise ValueError(
                    f"REF mismatch at {v.chrom}:{v.pos}: VCF REF {v.ref} but FASTA "
                    f"{reference.path} has {found}"
                )
            rejected.append(v)
        elif v.start0 < last_end:
            skipped.append(v)
        else:
            applied.append(v)
            last_end = v.end0
    return applied, skipped, rejected, ignored


def _build_segment(ctx: str, lo: int, start: int, end: int, applied: list[Variant]) -> str:
    """Haplotype bases that map into [start, end) (the boundary rule in the module docstring)."""
    out, pos = [], start
    for v in applied:
        if v.end0 <= start or v.start0 >= end:
            continue
        if v.start0 > pos:
            out.append(ctx[pos - lo : v.start0 - lo])
        ref_len, alt = len(v.ref), v.alt.upper()
        first = 0 if start <= v.start0 else start - v.start0
        stop = len(alt) if end >= v.end0 else min(end - v.start0, len(alt))
        out.append(alt[first:stop])
        pos = max(pos, v.start0 + ref_len)
    if pos < end:
        out.append(ctx[pos - lo : end - lo])
    return "".join(out)


def build_sequence(
    reference, span: Span, variants: Iterable[Variant], *, strict_ref: bool = False
) -> BuildResult:
    """The haplotype sequence of a region or window (oriented), and what happened to its variants.

    `variants` may be all of the haplotype's variants: whether one is skipped as overlapping depends on the
    ones before it, also outside this window, so the choice is made over all of them and only the variants
    overlapping the span are reported and applied. That keeps windows consistent with the whole region.
    """
    segments = span.segments
    chosen = _select(reference, span.chrom, list(variants), strict_ref)
    applied, skipped, rejected, ignored = ([v for v in part if overlaps(v, segments)] for part in chosen)
    lo = min([segments[0][0], *(v.start0 for v in applied)])
    hi = max([segments[-1][1], *(v.end0 for v in applied)])
    ctx = reference.fetch(span.chrom, lo, hi)
    seq = "".join(_build_segment(ctx, lo, a, b, applied) for a, b in segments)
    return BuildResult(reverse_complement(seq) if span.reverse else seq, applied, skipped, rejected, ignored)


# ------------------------------------------------------------------------------------------ the VCF path


def _open_vcf(vcf: str):
    from cyvcf2 import VCF

    if "://" not in vcf:
        if not os.path.exists(vcf):
            raise FileNotFoundError(f"VCF {vcf} does not exist")
        if not (os.path.exists(f"{vcf}.tbi") or os.path.exists(f"{vcf}.csi")):
            raise FileNotFoundError(
                f"VCF {vcf} has no index ({vcf}.tbi or .csi): bgzip it and run "
                "`tabix -p vcf` (or pysam.tabix_index) first"
            )
    return VCF(vcf, lazy=True, threads=1)


def _region_calls(
    reader, seqnames: set, region: Span, sample_idx: np.ndarray, samples: np.ndarray, whole_calls: bool
):
    """SparseCalls of one region: every ALT of every record whose REF span overlaps a segment.

    `whole_calls`: a genotype with a missing allele (`.|1`) counts as missing altogether (bcftools -H A);
    otherwise each allele stands alone (bcftools -H 1 / -H 2).
    """
    from neuro_caduceus.variants.calls import G0, G1, HAPLOID, PHASED, SparseCalls

    variants, record, a_index, sample, var, code = [], [], [], [], [], []
    try:
        chrom = resolve_contig(region.chrom, seqnames, None, "the VCF")
    except KeyError:
        chrom = None  # the VCF has no calls on this contig
    if chrom is not None:
        start, end = region.segments[0][0], region.segments[-1][1]
        for rec_id, rec in enumerate(reader(f"{chrom}:{start + 1}-{end}")):
            gt = rec.genotype.array()[sample_idx] if rec.genotype is not None else None
            for k, alt in enumerate(rec.ALT, start=1):
                v = Variant(rec.CHROM, rec.POS, rec.REF, alt)
                if gt is None or not overlaps(v, region.segments):
                    continue
                haploid = gt[:, 1] == -2 if gt.shape[1] > 2 else np.ones(len(gt), dtype=bool)
                g0 = gt[:, 0] == k
                g1 = (gt[:, 1] == k) & ~haploid if gt.shape[1] > 2 else np.zeros(len(gt), dtype=bool)
                if whole_calls:
                    called = (gt[:, 0] >= 0) & (haploid | (gt[:, 1] >= 0))
                    g0, g1 = g0 & called, g1 & called
                carriers = np.flatnonzero(g0 | g1)
                if not len(carriers):
                    continue
                j = len(variants)
                variants.append(v)
                record.append(rec_id)
                a_index.append(k)
                sample.append(carriers)
                var.append(np.full(len(carriers), j, dtype=np.int64))
                bits = G0 * g0 + G1 * g1 + PHASED + HAPLOID * haploid  # written order, as bcftools
                code.append(bits[carriers].astype(np.int64))
    calls = SparseCalls(
        samples,
        variants,
        np.asarray(record, dtype=np.int64),
        np.asarray(a_index, dtype=np.int64),
        _concat(sample),
        _concat(var),
        _concat(code),
    )
    return calls.restrict(np.ones(len(variants), dtype=bool))  # renumbered in Variant order


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def unique_haplotypes_from_vcf(
    vcf: str, regions: Sequence[Span], strategy: str, samples: Sequence[str] | None = None
) -> pa.Table:
    """HAPLOTYPE_SCHEMA rows (unique non-reference haplotypes + carriers) per region, read from a VCF.

    GT alleles go to haplotypes in written order (hap1 = first allele, phased or not, as bcftools consensus);
    a missing allele carries nothing (diploid); for consensus a call with any missing allele is missing.
    Rows are identical to the Hail datasource's for the same calls (Hail reads `.|1` as a missing call).
    """
    from neuro_caduceus.variants.calls import STRATEGIES, haplotype_table

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    reader = _open_vcf(str(vcf))
    header = list(reader.samples)
    if samples is None:
        chosen = header
    else:
        chosen = list(samples)
        missing = sorted(set(chosen) - set(header))
        if missing:
            raise ValueError(
                f"{len(missing)} requested samples are not in VCF {vcf}: {', '.join(missing[:10])}"
            )
    position = {s: i for i, s in enumerate(header)}
    sample_idx = np.array([position[s] for s in chosen], dtype=np.int64)
    names = np.array(chosen, dtype=object)
    if strategy == "reference":
        return HAPLOTYPE_SCHEMA.empty_table()
    seqnames = set(reader.seqnames)
    tables = [
        haplotype_table(
            r.region_id,
            _region_calls(reader, seqnames, r, sample_idx, names, strategy == "consensus"),
            strategy,
        )
        for r in regions
    ]
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else HAPLOTYPE_SCHEMA.empty_table()
