"""The variant and unique-haplotype schema shared by the VCF path, the Hail path and the cohort job.

Why one module: the haplotype builder (genome/), the Hail datasource (variants/) and the embedding job
(cohort/) must agree byte for byte on what a variant is and how a haplotype is keyed, or identical
haplotypes would be embedded twice and the two input paths would disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from neuro_caduceus.alphabet import check_allele


@dataclass(frozen=True, order=True)
class Variant:
    """One biallelic variant, VCF style: `pos` is the 1-based position of the first REF base."""

    chrom: str
    pos: int
    ref: str
    alt: str

    @property
    def start0(self) -> int:
        """0-based start of the REF span."""
        return self.pos - 1

    @property
    def end0(self) -> int:
        """0-based exclusive end of the REF span."""
        return self.pos - 1 + len(self.ref)

    def token(self) -> str:
        return f"{self.chrom}:{self.pos}:{self.ref}:{self.alt}"


def variant_of(chrom: str, pos: int, ref: str, alt: str, end: int | None = None, svlen=None) -> Variant:
    """One VCF allele as a Variant; a symbolic `<DEL>` with INFO/END (else SVLEN) deletes POS+1..END and is
    carried as REF = its first base followed by one N per deleted base, so its REF span is what it deletes.

    REF and ALT must follow the alphabet policy (`check_allele`); an error names the record's position."""
    check_allele(ref, "REF", f"{chrom}:{pos}")
    check_allele(alt, "ALT", f"{chrom}:{pos}")
    if alt.upper() == "<DEL>":
        if isinstance(svlen, (tuple, list)):
            svlen = svlen[0] if svlen else None
        last = end if end is not None else (pos + abs(int(svlen)) if svlen else None)
        if last is not None and last > pos:
            return Variant(chrom, pos, ref[:1] + "N" * (int(last) - pos), alt)
    return Variant(chrom, pos, ref, alt)


def overlaps(variant: Variant, segments: Sequence[tuple[int, int]]) -> bool:
    """The variant's REF span overlaps one of the 0-based half-open segments."""
    return any(variant.start0 < end and variant.end0 > start for start, end in segments)


def haplotype_key(region_id: str, variants: Iterable[Variant]) -> str:
    """Stable content key: the region plus its variants in sorted order (the reference has no variants)."""
    return haplotype_key_of_tokens(region_id, [v.token() for v in sorted(set(variants))])


def haplotype_key_of_tokens(region_id: str, sorted_tokens: Iterable[str]) -> str:
    """haplotype_key from the tokens of distinct variants already in Variant order (the fast path)."""
    return hashlib.sha1(f"{region_id}#{'|'.join(sorted_tokens)}".encode()).hexdigest()[:20]


VARIANT_TYPE = pa.struct(
    [("chrom", pa.string()), ("pos", pa.int64()), ("ref", pa.string()), ("alt", pa.string())]
)
CARRIER_TYPE = pa.struct([("subject_id", pa.string()), ("hap_index", pa.int8())])

# One row per unique non-reference haplotype of one gene (region). Subject haplotypes absent from every
# row of a gene carry that gene's reference haplotype. `hap_index` is 1 or 2 for the diploid strategy
# (GT alleles in written order, as bcftools consensus -H 1 / -H 2) and 1 for the consensus strategy.
HAPLOTYPE_SCHEMA = pa.schema(
    [
        ("gene_id", pa.string()),
        ("haplotype_key", pa.string()),
        ("variants", pa.list_(VARIANT_TYPE)),
        ("carriers", pa.list_(CARRIER_TYPE)),
    ]
)
