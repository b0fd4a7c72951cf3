"""Subject-specific haplotype sequences of regions, from a multi-sample VCF (the `personalize` command).

Why this shape: in a cohort most subjects share a region's haplotype. `unique_haplotypes_from_vcf` groups
subject haplotypes by their variants, so each unique haplotype is built once (`RegionBuilder`, with the
semantics of `build_sequence` = bcftools consensus) and the same string is handed to every carrier;
subjects absent from a region's rows carry its reference sequence.

Output order: samples (VCF header order, or the --samples file's), then regions, then haplotypes;
records are named `SAMPLE|REGION|hapN` (N = 1, 2 for diploid, 1 for consensus and reference).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neuro_caduceus.genome.fasta import ContigNotFound, Reference, resolve_contig
from neuro_caduceus.genome.gene_regions import check_contigs
from neuro_caduceus.genome.haplotypes import (
    VARIANT_OUTCOMES,
    BuildResult,
    build_sequence,
    edit_of,
    reverse_complement,
    unique_haplotypes_from_vcf,
)
from neuro_caduceus.genome.regions import Region, Window
from neuro_caduceus.genome.strategies import check_strategy, n_haps
from neuro_caduceus.genome.variant_schema import Variant, overlaps
from neuro_caduceus.genome.vcf_file import check_vcf
from neuro_caduceus.io import atomic_writer


@dataclass
class RegionHaplotypes:
    """One region's distinct sequences (index 0 = reference) and which one each sample haplotype carries."""

    region: Region
    builds: list[BuildResult]
    assignment: np.ndarray  # int32 [n_samples, n_haps]: index into `builds`

    @property
    def sequences(self) -> list[str]:
        return [b.sequence for b in self.builds]


class RegionReference:
    """The reference bases around one region, fetched once and served from memory.

    Why: `build_sequence` asks the reference for the region's bases and for every variant's REF bases, once
    per haplotype; a region with thousands of unique haplotypes would otherwise resolve the contig and
    fetch from the FASTA hundreds of thousands of times. Requests outside the cached span go through.
    """

    def __init__(self, reference, chrom: str, start: int, end: int):
        self.path = reference.path
        self._reference, self._chrom = reference, chrom
        self._length = reference.length(chrom)
        self._start, self._end = max(0, start), min(end, self._length)
        self._bases = reference.fetch(chrom, self._start, self._end)

    def length(self, chrom: str) -> int:
        return self._length if chrom == self._chrom else self._reference.length(chrom)

    def fetch(self, chrom: str, start: int, end: int) -> str:
        if chrom == self._chrom and self._start <= start <= end <= self._end:
            return self._bases[start - self._start : end - self._start]
        return self._reference.fetch(chrom, start, end)


class RegionBuilder:
    """Builds one region's haplotypes: the plain case is spliced directly, anything else by build_sequence.

    Why: `build_sequence` re-checks every variant of every haplotype, and a region's unique haplotypes share
    most of their variants. Here each distinct variant is judged once, by `build_sequence` on that variant
    alone over its REF span (so the REF / ignored rules stay the core's). A haplotype whose variants all
    passed alone, each inside one segment, none overlapping the one before, is the reference with each REF
    replaced by its ALT, which is what `build_sequence` returns for it; any other goes to `build_sequence`.
    Haplotypes are given as indices into `variants` (the distinct variants), so nothing is hashed twice.
    """

    def __init__(self, local: RegionReference, region: Region, variants: Sequence[Variant], strict_ref: bool):
        self.local, self.region, self.variants, self.strict_ref = local, region, variants, strict_ref
        self._plain: dict[int, tuple[int, int, bytes] | None] = {}  # (start0, end0, ALT) of a plain variant
        self._raw = [local.fetch(region.chrom, a, b).encode("ascii") for a, b in region.segments]

    def _judge(self, i: int) -> tuple[int, int, bytes] | None:
        v = self.variants[i]
        inside = any(a <= v.start0 and v.end0 <= b for a, b in self.region.segments)
        just_v = Window(self.region.region_id, 0, self.region.chrom, ((v.start0, v.end0),))
        alone = inside and build_sequence(self.local, just_v, [v], strict_ref=self.strict_ref)
        start, end, alt = edit_of(v)
        plain = (start, end, alt.encode()) if alone and alone.applied == [v] and alt.isascii() else None
        self._plain[i] = plain
        return plain

    def build(self, ids: Sequence[int]) -> BuildResult:
        plain, last_end, edits = self._plain, -1, []
        for i in ids:
            edit = plain.get(i, False)
            if edit is False:
                edit = self._judge(i)
            if edit is None or edit[0] < last_end:
                variants = [self.variants[j] for j in ids]
                return build_sequence(self.local, self.region, variants, strict_ref=self.strict_ref)
            edits.append(edit)
            last_end = edit[1]
        out, k = [], 0
        for (start, end), raw in zip(self.region.segments, self._raw, strict=True):
            first = k
            while k < len(edits) and edits[k][0] < end:
                k += 1
            if k == first:
                out.append(raw)
                continue
            piece = bytearray(raw)  # edits from the right, so the offsets to their left stay valid
            for v_start, v_end, alt in reversed(edits[first:k]):
                piece[v_start - start : v_end - start] = alt
            out.append(piece)
        seq = (out[0] if len(out) == 1 else b"".join(out)).decode("ascii")
        seq = reverse_complement(seq) if self.region.reverse else seq
        return BuildResult(seq, [self.variants[j] for j in ids], [], [], [])


def _carrier_columns(table: pa.Table, samples: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per carrier (flattened over rows): row index, sample index (into `samples`), haplotype column."""
    carriers = table.column("carriers").combine_chunks()
    offsets = carriers.offsets.to_numpy()
    values = carriers.values
    sample = pc.index_in(values.field("subject_id"), value_set=pa.array(list(samples), pa.string()))
    row = np.repeat(np.arange(table.num_rows), np.diff(offsets))
    hap = values.field("hap_index").to_numpy(zero_copy_only=False).astype(np.int64) - 1
    return row, sample.to_numpy(zero_copy_only=False).astype(np.int64), hap


def _variant_lists(table: pa.Table) -> tuple[list[Variant], list[int], list[int]]:
    """The distinct variants of all rows, each row's variants as indices into them (flat), row offsets.

    Deduplicated in Arrow (dictionary encoding of a chrom/pos/ref/alt key), so only distinct variants
    become Python objects.
    """
    if not table.num_rows:
        return [], [], [0]
    column = table.column("variants").combine_chunks()
    fields = [column.values.field(f) for f in ("chrom", "pos", "ref", "alt")]
    key = pc.binary_join_element_wise(fields[0], pc.cast(fields[1], pa.string()), *fields[2:], "\t")
    flat = pc.dictionary_encode(key).indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(flat, return_index=True)  # row of each distinct key, in dictionary order
    columns = [f.take(pa.array(first)).to_pylist() for f in fields]
    return [Variant(*v) for v in zip(*columns, strict=True)], flat.tolist(), column.offsets.to_pylist()


def _row_ranges(gene_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Contiguous row range of each gene (the VCF path writes each region's rows together)."""
    ranges: dict[str, tuple[int, int]] = {}
    start = 0
    for i in range(1, len(gene_ids) + 1):
        if i == len(gene_ids) or gene_ids[i] != gene_ids[start]:
            if gene_ids[start] in ranges:
                raise ValueError(f"haplotype rows of {gene_ids[start]} are not contiguous")
            ranges[gene_ids[start]] = (start, i)
            start = i
    return ranges


def region_haplotypes(
    reference,
    table: pa.Table,
    regions: Sequence[Region],
    samples: Sequence[str],
    strategy: str,
    strict_ref: bool = False,
) -> Iterator[RegionHaplotypes]:
    """Build each region's reference and unique haplotypes once; map every sample haplotype to one of them."""
    gene_ids = table.column("gene_id").to_pylist()
    ranges = _row_ranges(gene_ids)
    row, sample, hap = _carrier_columns(table, samples) if table.num_rows else (None, None, None)
    offsets = table.column("carriers").combine_chunks().offsets.to_numpy() if table.num_rows else None
    variants, flat, v_offsets = _variant_lists(table)
    for region in regions:
        r0, r1 = ranges.get(region.region_id, (0, 0))
        used = [variants[i] for i in set(flat[v_offsets[r0] : v_offsets[r1]])]
        lo = min([region.segments[0][0], *(v.start0 for v in used)])
        hi = max([region.segments[-1][1], *(v.end0 for v in used)])
        local = RegionReference(reference, region.chrom, lo, hi)
        builder = RegionBuilder(local, region, variants, strict_ref)
        builds = [builder.build(flat[v_offsets[r] : v_offsets[r + 1]]) for r in range(r0, r1)]
        builds.insert(0, builder.build([]))
        assignment = np.zeros((len(samples), n_haps(strategy)), dtype=np.int32)
        if r1 > r0:
            c0, c1 = offsets[r0], offsets[r1]
            assignment[sample[c0:c1], hap[c0:c1]] = row[c0:c1] - r0 + 1
        yield RegionHaplotypes(region, builds, assignment)


def missing_gt_fields(samples_text: bytes) -> int:
    """How many tab-separated sample fields have a `.` allele in their GT (the first `:` subfield).

    Why text: formatting a record is done by htslib in C (~20 us at 2,000 samples) while walking
    pysam's per-sample objects costs ~0.4 us per call, i.e. minutes for a biobank-sized region set.
    """
    b = np.frombuffer(samples_text, dtype=np.uint8)
    dots = np.flatnonzero(b == ord("."))
    if not len(dots):
        return 0
    starts = np.concatenate([[0], np.flatnonzero(b == ord("\t")) + 1])
    ends = np.concatenate([starts[1:] - 1, [len(b)]])
    colons = np.append(np.flatnonzero(b == ord(":")), len(b))  # the sentinel ends a last GT-only field
    gt_end = np.minimum(ends, colons[np.searchsorted(colons, starts)])
    field = np.searchsorted(starts, dots, side="right") - 1
    return len(np.unique(field[dots < gt_end[field]]))


def count_missing_calls(vcf: str, regions: Sequence[Region], samples: Sequence[str]) -> tuple[int, int]:
    """(VCF records overlapping the regions, genotype calls with a missing allele among them), per region.

    Read with pysam (restricted to `samples`), independently of the haplotype path; a record overlapping
    two regions counts in each. A record without GT counts every chosen sample as missing.
    """
    import pysam

    records = missing = 0
    with pysam.VariantFile(vcf) as vf:
        vf.subset_samples(list(samples))
        contigs = set(vf.header.contigs) | set(vf.index or [])
        for region in regions:
            try:
                chrom = resolve_contig(region.chrom, contigs, None, "the VCF")
            except ContigNotFound:
                continue
            start, end = region.segments[0][0], region.segments[-1][1]
            for rec in vf.fetch(chrom, start, end):
                probe = Variant(rec.chrom, rec.pos, rec.ref or "N", "N")
                if not overlaps(probe, region.segments):
                    continue
                records += 1
                fields = str(rec).rstrip("\n").split("\t", 9)
                if len(fields) < 10 or fields[8].split(":")[0] != "GT":
                    missing += len(samples)
                else:
                    missing += missing_gt_fields(fields[9].encode())
    return records, missing


@dataclass
class Summary:
    """What `personalize` did; the counts are over written haplotypes (sample x region x hap)."""

    strategy: str
    samples: int = 0
    regions: int = 0
    vcf_records_in_regions: int = 0
    missing_calls: int = 0
    variants: dict = field(default_factory=lambda: dict.fromkeys(VARIANT_OUTCOMES, 0))  # over haplotypes
    distinct_variants: dict = field(default_factory=lambda: {k: set() for k in VARIANT_OUTCOMES})
    haplotypes_built: int = 0
    haplotypes_written: int = 0
    bases_written: int = 0
    seconds: float = 0.0

    def add(self, rh: RegionHaplotypes) -> None:
        uses = np.bincount(rh.assignment.ravel(), minlength=len(rh.builds))
        self.haplotypes_built += len(rh.builds)
        self.haplotypes_written += int(uses.sum())
        for build, n in zip(rh.builds, uses.tolist(), strict=True):
            self.bases_written += n * len(build.sequence)
            for outcome in VARIANT_OUTCOMES:
                hits = getattr(build, outcome)
                self.variants[outcome] += n * len(hits)
                if n:
                    self.distinct_variants[outcome].update(v.token() for v in hits)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "distinct_variants"}
        out["variants"] = dict(self.variants)
        out["distinct_variants"] = {k: len(v) for k, v in self.distinct_variants.items()}
        out["rejected_ref_mismatch_examples"] = sorted(self.distinct_variants["rejected_ref_mismatch"])[:20]
        out["skipped_overlap_examples"] = sorted(self.distinct_variants["skipped_overlap"])[:20]
        out["shared"] = "each unique haplotype is built once and written to every carrier"
        return out

    def lines(self) -> list[str]:
        v = self.variants
        return [
            f"samples {self.samples}, regions {self.regions}, strategy {self.strategy}",
            f"haplotypes written {self.haplotypes_written:,} ({self.bases_written:,} bases), "
            f"built {self.haplotypes_built:,} (unique sequences per region, reference included)",
            f"VCF records in the regions {self.vcf_records_in_regions:,}; "
            f"missing calls {self.missing_calls:,} (those haplotypes keep the reference)",
            f"variants over written haplotypes: applied {v['applied']:,}, skipped overlapping "
            f"{v['skipped_overlap']:,}, rejected REF mismatch {v['rejected_ref_mismatch']:,}, "
            f"ignored (*, symbolic, ALT=REF) {v['ignored']:,}",
            f"time {self.seconds:.2f} s",
        ]


def vcf_samples(vcf: str) -> list[str]:
    import pysam

    with pysam.VariantFile(vcf) as vf:
        return list(vf.header.samples)


def _check_names(samples: Sequence[str], regions: Sequence[Region]) -> None:
    """Sample and region ids must not hold `|` or whitespace, or record names would be ambiguous."""
    bad = [n for n in [*samples, *(r.region_id for r in regions)] if "|" in n or any(c.isspace() for c in n)]
    if bad:
        raise ValueError(
            f"{len(bad)} sample or region ids contain '|' or whitespace, which would make the record names "
            f"SAMPLE|REGION|hapN ambiguous: {', '.join(repr(n) for n in bad[:10])}; rename them"
        )


def summary_path(out: str | Path) -> Path:
    """OUT.fa -> OUT.summary.json (the FASTA suffix replaced)."""
    out = Path(out)
    stem = out.name
    for suffix in (".fa.gz", ".fasta", ".fa", ".fna"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return out.with_name(f"{stem}.summary.json")


def personalize(
    fasta: str,
    vcf: str,
    regions: Sequence[Region],
    strategy: str,
    out: str | Path,
    samples: Sequence[str] | None = None,
    strict_ref: bool = False,
    workers: int = 1,
) -> Summary:
    """Write every sample's haplotype sequences of every region to `out` (FASTA) and its summary JSON."""
    check_strategy(strategy)
    t0 = time.perf_counter()
    check_vcf(vcf, need_index=True)  # before any reader seeks into it
    reference = Reference(fasta)
    check_contigs(reference, list(regions), vcf)
    table = unique_haplotypes_from_vcf(vcf, regions, strategy, samples, workers)  # checks index, samples
    chosen = list(samples) if samples is not None else vcf_samples(vcf)
    _check_names(chosen, regions)
    summary = Summary(strategy, samples=len(chosen), regions=len(regions))
    summary.vcf_records_in_regions, summary.missing_calls = count_missing_calls(vcf, regions, chosen)
    built = list(region_haplotypes(reference, table, regions, chosen, strategy, strict_ref))
    for rh in built:
        summary.add(rh)
    sequences = [rh.sequences for rh in built]
    with atomic_writer(out) as fh:
        for s, name in enumerate(chosen):
            for rh, seqs in zip(built, sequences, strict=True):
                for h, k in enumerate(rh.assignment[s].tolist(), start=1):
                    fh.write(f">{name}|{rh.region.region_id}|hap{h}\n{seqs[k]}\n")
    summary.seconds = time.perf_counter() - t0
    with atomic_writer(summary_path(out)) as fh:
        json.dump(summary.as_dict(), fh, indent=1)
    return summary
