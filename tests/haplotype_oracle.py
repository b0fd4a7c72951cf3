"""Shared by the haplotype tests: random variants of every kind, and the bcftools consensus oracle."""

from __future__ import annotations

import random
from pathlib import Path

from pysam import bcftools

KINDS = ("snv", "mnv", "ins", "del", "complex")


def random_variant(kind: str, seq: str, pos0: int, rng: random.Random) -> tuple[str, str]:
    """(REF, ALT) of a `kind` variant at 0-based `pos0` of the upper-case sequence `seq`."""
    def other(b: str) -> str:
        return rng.choice([x for x in "ACGT" if x != b])

    if kind == "snv":
        return seq[pos0], other(seq[pos0])
    if kind == "mnv":
        ref = seq[pos0 : pos0 + rng.randint(2, 4)]
        return ref, "".join(other(b) for b in ref)
    if kind == "ins":
        return seq[pos0], seq[pos0] + "".join(rng.choice("ACGT") for _ in range(rng.randint(1, 8)))
    if kind == "del":
        ref = seq[pos0 : pos0 + rng.randint(2, 9)]
        return ref, ref[0]
    ref = seq[pos0 : pos0 + rng.randint(2, 5)]  # complex replacement, different length
    return ref, other(ref[0]) + "".join(rng.choice("ACGT") for _ in range(rng.randint(2, 6)))


def bcftools_consensus(work: Path, chrom: str, sequence: str, segments, vcf: str | Path, sample: str,
                       haplotype: str) -> str:
    """bcftools consensus of each segment (a FASTA record `chrom:from-to` written under `work`), concatenated
    in segment order, upper case (+ strand)."""
    parts = []
    for a, b in segments:
        fa = Path(work) / f"oracle_{chrom}_{a}_{b}.fa"
        if not fa.exists():
            fa.write_text(f">{chrom}:{a + 1}-{b}\n{sequence[a:b]}\n")
        text = bcftools.consensus("-f", str(fa), "-s", sample, "-H", haplotype, str(vcf))
        parts.append("".join(text.split("\n")[1:]))
    return "".join(parts).upper()
