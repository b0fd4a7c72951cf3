"""Haplotype sequences: reference bases of a region or window with a haplotype's variants applied.

Semantics of `bcftools consensus` (-H 1 / -H 2 for the two diploid haplotypes, -H A for consensus), which
the tests use as the oracle:
- variants are applied in position order, variants at one position in the order given (the VCF path keeps
  the file's record order); REF must equal the FASTA (case-insensitive), else the variant is rejected and
  listed (or an error with `strict_ref`);
- a variant whose REF span overlaps one already applied is skipped and listed, except as bcftools does: a
  variant anchored on the last REF base of the variant applied just before it (an insertion or deletion
  whose first REF and ALT bases agree, or a symbolic `<DEL>`) is applied after it when that one did not
  lengthen the sequence (its REF bases after the anchor are removed, its ALT bases after the anchor
  inserted): e.g. a deletion and a deletion or insertion at its last base, an SNV and an insertion or
  deletion at one position;
- a symbolic `<DEL>` with INFO/END (or SVLEN) deletes POS+1..END and keeps the REF base; it travels as
  REF = that base followed by one `N` per deleted base (its REF span is the deleted span) and its REF is
  not checked, as in bcftools. ALT `*` (spanning deletion), other symbolic ALTs (`<INS>`, `<DUP>`, a
  `<DEL>` without END / SVLEN ...) and ALT == REF are ignored and listed.

Boundary rule (regions and windows cut the reference; variants need not respect the cuts): ALT base i of a
variant starting at reference position s maps to s + min(i, len(REF) - 1), i.e. inserted bases belong to the
last REF base and deleted bases vanish (an anchored variant joins the one before it into one edit first).
A region or window keeps exactly the haplotype bases that map into its segments. So a variant straddling a
boundary contributes its bases on each side where they map, and the windows of a haplotype (stride ==
window) concatenate to the haplotype of the whole region, exactly as the reference windows tile the
reference. Minus-strand regions in transcript orientation are built on the + strand and reverse-complemented
last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa

from neuro_caduceus.genome.calls import G0, G1, HAPLOID, PHASED, SparseCalls, haplotype_table
from neuro_caduceus.genome.fasta import resolve_contig
from neuro_caduceus.genome.strategies import check_strategy
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant, overlaps, variant_of
from neuro_caduceus.genome.vcf_file import check_vcf

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


VARIANT_OUTCOMES = BuildResult._fields[1:]  # what became of each variant a sequence was built with


def reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def variants_in(span: Span, variants: Iterable[Variant]) -> list[Variant]:
    """The variants whose REF span overlaps the region's or window's segments (input order kept; positions
    only: the variants are those of the span's contig)."""
    return [v for v in variants if overlaps(v, span.segments)]


def is_symbolic_deletion(v: Variant) -> bool:
    """A `<DEL>` whose span is known (REF = its base + one N per deleted base, see variant_of)."""
    return v.alt.upper() == "<DEL>" and len(v.ref) > 1


def _is_ignored(v: Variant) -> bool:
    alt = v.alt.upper()
    if is_symbolic_deletion(v):
        return False
    return alt in ("*", ".", v.ref.upper()) or alt.startswith("<") or "[" in alt or "]" in alt


def _is_indel(ref: str, alt: str) -> bool:
    """htslib's VCF_INDEL class of a REF/ALT pair (bcftools consensus tests it before chaining a variant)."""
    r, a = ref.upper(), alt.upper()
    if len(r) == 1 and len(a) == 1:
        return False
    p = 0  # strip the common prefix
    while p < len(r) and p < len(a) and r[p] == a[p]:
        p += 1
    if p == len(r) or p == len(a):
        return len(r) != len(a)
    r_end, a_end = len(r) - 1, len(a) - 1  # then strip the common suffix, keeping one base of each
    while r_end > p and a_end > p and r[r_end] == a[a_end]:
        r_end, a_end = r_end - 1, a_end - 1
    if a_end == p:
        return r_end != p and r[r_end] == a[a_end]
    return r_end == p and r[r_end] == a[a_end]


def _anchored(v: Variant) -> bool:
    """bcftools applies this variant on the frozen last base of the one before (its `trim_beg`)."""
    if is_symbolic_deletion(v):
        return True
    return _is_indel(v.ref, v.alt) and v.ref[:1].upper() == v.alt[:1].upper()


def edit_of(v: Variant) -> tuple[int, int, str]:
    """(start0, end0, bases written instead of REF) of an applied variant on its own."""
    return v.start0, v.end0, (v.ref[:1] if is_symbolic_deletion(v) else v.alt).upper()


NEAR = 1 << 20  # variants this far outside the span are checked by their own fetch, not the shared one


class _Bases:
    """The reference bases of a span and of its variants' REF spans, fetched in one read.

    Why: a window is built once per haplotype that carries a variant; one range read per call (not one per
    variant) keeps that cheap on htslib and essential on a bucket URL.
    """

    def __init__(self, reference, chrom: str, segments, variants: list[Variant]):
        size = reference.length(chrom)
        for v in variants:
            if v.end0 > size:
                raise ValueError(
                    f"{v.chrom}:{v.pos} {v.ref}>{v.alt} ends past the end of contig {chrom} (length {size}) "
                    f"in {reference.path}: the VCF and the FASTA are different assemblies"
                )
        near = [v for v in variants if segments[0][0] - NEAR < v.end0 and v.start0 < segments[-1][1] + NEAR]
        self.lo = min([segments[0][0], *(v.start0 for v in near)])
        self.hi = max([segments[-1][1], *(v.end0 for v in near)])
        self.reference, self.chrom = reference, chrom
        self.bases = reference.fetch(chrom, self.lo, self.hi)

    def get(self, start: int, end: int) -> str:
        if self.lo <= start and end <= self.hi:
            return self.bases[start - self.lo : end - self.lo]
        return self.reference.fetch(self.chrom, start, end)


def _select(bases: _Bases, variants: list[Variant], strict_ref: bool):
    """Split the haplotype's variants into applied / skipped / rejected / ignored (module docstring rules).

    Also returns the edits (start0, end0, bases) the applied ones make, an anchored variant joined to the
    edit before it.
    """
    applied, skipped, rejected, ignored, edits = [], [], [], [], []
    last_end, last_lengthens = -1, False
    for v in variants:
        if _is_ignored(v):
            ignored.append(v)
            continue
        found = bases.get(v.start0, v.end0)
        if not is_symbolic_deletion(v) and found != v.ref.upper():
            if strict_ref:
                raise ValueError(
                    f"REF mismatch at {v.chrom}:{v.pos}: VCF REF {v.ref} but FASTA "
                    f"{bases.reference.path} has {found}"
                )
            rejected.append(v)
            continue
        start, end, alt = edit_of(v)
        if start >= last_end:
            edits.append((start, end, alt))
        elif start == last_end - 1 and not last_lengthens and _anchored(v):
            first, _, before = edits[-1]
            edits[-1] = (first, end, before + alt[1:])
        else:
            skipped.append(v)
            continue
        applied.append(v)
        last_end, last_lengthens = end, len(alt) > end - start
    return applied, skipped, rejected, ignored, edits


def _build_segment(ctx: str, lo: int, start: int, end: int, edits: list[tuple[int, int, str]]) -> str:
    """Haplotype bases that map into [start, end) (the boundary rule in the module docstring)."""
    out, pos = [], start
    for v_start, v_end, alt in edits:
        if v_end <= start or v_start >= end:
            continue
        if v_start > pos:
            out.append(ctx[pos - lo : v_start - lo])
        first = 0 if start <= v_start else start - v_start
        stop = len(alt) if end >= v_end else min(end - v_start, len(alt))
        out.append(alt[first:stop])
        pos = max(pos, v_end)
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
    Variants must lie on the span's contig (only positions are compared; their chrom may be spelled `1` for
    a `chr1` span), as the rows of one region in HAPLOTYPE_SCHEMA do.
    """
    segments = span.segments
    ordered = sorted(variants, key=lambda v: v.pos)  # stable: one position's variants keep their order
    bases = _Bases(reference, span.chrom, segments, [v for v in ordered if not _is_ignored(v)])
    *chosen, edits = _select(bases, ordered, strict_ref)
    applied, skipped, rejected, ignored = ([v for v in part if overlaps(v, segments)] for part in chosen)
    ctx, lo = bases.bases, bases.lo
    seq = "".join(_build_segment(ctx, lo, a, b, edits) for a, b in segments)
    return BuildResult(reverse_complement(seq) if span.reverse else seq, applied, skipped, rejected, ignored)


# ------------------------------------------------------------------------------------------ the VCF path


def _open_vcf(vcf: str):
    from cyvcf2 import VCF

    check_vcf(vcf, need_index=True)
    try:
        return VCF(vcf, lazy=True, threads=1)
    except Exception as err:  # cyvcf2 raises a bare Exception("cannot parse VCF header") and alike
        raise ValueError(f"VCF {vcf}: htslib cannot read it ({err}); check the header with "
                         f"`bcftools view -h {vcf}`") from err


GENOTYPE_CHUNK_BYTES = (
    64 << 20
)  # genotype arrays stacked per chunk of records (bounds memory at biobank size)


def _region_calls(
    reader, seqnames: set, region: Span, sample_idx: np.ndarray, samples: np.ndarray, whole_calls: bool
):
    """SparseCalls of one region: every ALT of every record whose REF span overlaps a segment.

    Records are read with cyvcf2 and their genotype arrays stacked in chunks, so the per-call work is
    columnar numpy over [records, samples], not per record. `whole_calls`: a genotype with a missing allele
    (`.|1`) counts as missing altogether (bcftools -H A); otherwise each allele stands alone (-H 1 / -H 2).
    """
    parts = _CallParts()
    try:
        chrom = resolve_contig(region.chrom, seqnames, None, "the VCF")
    except KeyError:
        chrom = None  # the VCF has no calls on this contig
    if chrom is not None:
        start, end = region.segments[0][0], region.segments[-1][1]
        chunk = max(1, GENOTYPE_CHUNK_BYTES // (4 * max(1, len(samples))))
        records, arrays = [], []
        for rec in reader(f"{chrom}:{start + 1}-{end}"):
            if rec.genotype is None:
                continue  # no FORMAT/GT: nobody carries anything
            gt = rec.genotype.array()
            arrays.append(
                gt[:, :2] if gt.shape[1] > 2 else np.pad(gt[:, :1], ((0, 0), (0, 1)), constant_values=-2)
            )
            span = (rec.INFO.get("END"), rec.INFO.get("SVLEN")) if "<DEL>" in rec.ALT else (None, None)
            records.append((rec.CHROM, rec.POS, rec.REF, rec.ALT, *span))
            if len(records) == chunk:
                parts.add(records, np.stack(arrays)[:, sample_idx], region.segments, whole_calls)
                records, arrays = [], []
        if records:
            parts.add(records, np.stack(arrays)[:, sample_idx], region.segments, whole_calls)
    calls = SparseCalls(
        samples,
        parts.variants,
        np.asarray(parts.record, dtype=np.int64),
        np.asarray(parts.a_index, dtype=np.int64),
        _concat(parts.sample),
        _concat(parts.var),
        _concat(parts.code),
    )
    return calls.restrict(np.ones(len(parts.variants), dtype=bool))  # renumbered in position, file order


class _CallParts:
    """Accumulates the non-reference calls of a region, chunk by chunk of records."""

    def __init__(self) -> None:
        self.variants: list[Variant] = []
        self.record: list[int] = []
        self.a_index: list[int] = []
        self.sample: list[np.ndarray] = []
        self.var: list[np.ndarray] = []
        self.code: list[np.ndarray] = []
        self.n_records = 0

    def add(self, records: list[tuple], gt: np.ndarray, segments, whole_calls: bool) -> None:
        """`gt`: int16 [records, samples, 2] alleles as written (-1 missing, -2 haploid end)."""
        first, second = gt[:, :, 0], gt[:, :, 1]
        check_allele_indices(records, gt)
        haploid = second == -2
        called = (first >= 0) & (haploid | (second >= 0)) if whole_calls else np.ones(first.shape, dtype=bool)
        for k in range(1, max(len(r[3]) for r in records) + 1):
            g0, g1 = (first == k) & called, (second == k) & called
            rows, cols = np.nonzero(g0 | g1)
            if not len(rows):
                continue
            vid = np.full(len(records), -1, dtype=np.int64)
            for r in np.unique(rows):
                chrom, pos, ref, alts, end, svlen = records[r]
                v = variant_of(chrom, pos, ref, alts[k - 1], end, svlen)
                if overlaps(v, segments):
                    vid[r] = len(self.variants)
                    self.variants.append(v)
                    self.record.append(self.n_records + int(r))
                    self.a_index.append(k)
            keep = vid[rows] >= 0
            rows, cols = rows[keep], cols[keep]
            self.sample.append(cols.astype(np.int64))
            self.var.append(vid[rows])
            bits = G0 * g0[rows, cols] + G1 * g1[rows, cols] + PHASED + HAPLOID * haploid[rows, cols]
            self.code.append(bits.astype(np.int64))  # written allele order, as bcftools consensus
        self.n_records += len(records)


def check_allele_indices(records: list[tuple], gt: np.ndarray) -> None:
    """A GT allele index beyond the record's ALTs (`0/3` with one ALT) is an error, never read as REF."""
    if not gt.size:
        return
    n_alts = np.array([len(r[3]) for r in records])
    over = np.flatnonzero(gt.reshape(len(records), -1).max(axis=1) > n_alts)
    if len(over):
        chrom, pos, _, alts = records[over[0]][:4]
        top = int(gt[over[0]].max())
        raise ValueError(f"{chrom}:{pos}: a GT calls allele {top} but the record has {len(alts)} ALT(s) "
                         f"({len(over)} record(s) like this in the chunk); fix the genotypes")


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def unique_haplotypes_from_vcf(
    vcf: str,
    regions: Sequence[Span],
    strategy: str,
    samples: Sequence[str] | None = None,
    workers: int = 1,
) -> pa.Table:
    """HAPLOTYPE_SCHEMA rows (unique non-reference haplotypes + carriers) per region, read from a VCF.

    GT alleles go to haplotypes in written order (hap1 = first allele, phased or not, as bcftools consensus);
    a missing allele carries nothing (diploid); for consensus a call with any missing allele is missing.
    Rows are identical to the Hail datasource's for the same calls (Hail reads `.|1` as a missing call).
    `workers` > 1 reads groups of regions in that many processes (parsing VCF text is the main cost);
    the rows are the same, in the same order.
    """
    check_strategy(strategy)
    reader = _open_vcf(str(vcf))
    header = list(reader.samples)
    chosen = header if samples is None else list(samples)
    missing = sorted(set(chosen) - set(header))
    if missing:
        raise ValueError(f"{len(missing)} requested samples are not in VCF {vcf}: {', '.join(missing[:10])}")
    if strategy == "reference" or not regions:
        return HAPLOTYPE_SCHEMA.empty_table()
    job = (str(vcf), strategy, None if samples is None else chosen)
    if workers <= 1 or len(regions) < 2:
        tables = [_read_regions(job, list(regions))]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n = min(len(regions), workers * 4)
        groups = [list(regions[i * len(regions) // n : (i + 1) * len(regions) // n]) for i in range(n)]
        context = multiprocessing.get_context("fork")  # spawn would re-run an unguarded __main__
        with ProcessPoolExecutor(max_workers=min(workers, n), mp_context=context) as pool:
            tables = list(pool.map(_read_regions, [job] * n, groups))
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else HAPLOTYPE_SCHEMA.empty_table()


def _read_regions(job: tuple, regions: list) -> pa.Table:
    """One process's share: open the VCF, read each region, turn its calls into haplotype rows."""
    vcf, strategy, samples = job
    reader = _open_vcf(vcf)
    header = list(reader.samples)
    chosen = header if samples is None else samples
    position = {s: i for i, s in enumerate(header)}
    sample_idx = np.array([position[s] for s in chosen], dtype=np.int64)
    names = np.array(chosen, dtype=object)
    seqnames = set(reader.seqnames)
    try:
        tables = [
            haplotype_table(
                r.region_id,
                _region_calls(reader, seqnames, r, sample_idx, names, strategy == "consensus"),
                strategy,
            )
            for r in regions
        ]
    except ValueError as err:  # a bad record: name the file
        raise ValueError(f"VCF {vcf}: {err}") from err
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else HAPLOTYPE_SCHEMA.empty_table()
