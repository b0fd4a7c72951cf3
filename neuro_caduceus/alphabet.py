"""The DNA alphabet every sequence and allele must use, and the one policy for what lies outside it.

Why at the bottom: FASTA records (embed-fasta, verify-rc), reference bases (genes, personalize, the cohort
job) and VCF alleles are read in different areas; a character outside the alphabet must be treated the
same everywhere, never tokenized silently as [UNK] or copied into a haplotype.

The policy (IUPAC): A, C, G, T and N, in either case, are kept (lower case is soft-masking, read as upper
case). The other IUPAC ambiguity codes (R Y S W K M B D H V) are replaced by N in sequences and counted.
Anything else (X, digits, punctuation, gaps) is refused with the record and the position. A VCF REF or
ALT allele must be A/C/G/T/N only (the VCF specification's rule), or a symbolic allele (`<DEL>`, `*`, `.`,
breakends) that the haplotype builder handles apart.
"""

from __future__ import annotations

import re

KEPT = "ACGTN"
AMBIGUOUS = "RYSWKMBDHV"  # IUPAC codes other than N: replaced by N, counted
_OUTSIDE = re.compile(f"[^{KEPT}{AMBIGUOUS}{KEPT.lower()}{AMBIGUOUS.lower()}]")
_AMBIGUOUS = re.compile(f"[{AMBIGUOUS}{AMBIGUOUS.lower()}]")
_ALLELE = re.compile("[ACGTNacgtn]+")


def clean_sequence(seq: str, where: str) -> tuple[str, int]:
    """(the sequence upper-cased with other IUPAC codes replaced by N, how many were replaced).

    A character outside the IUPAC alphabet is a ValueError naming `where` (file and record), the
    character and its 1-based position.
    """
    bad = _OUTSIDE.search(seq)
    if bad:
        raise ValueError(f"{where}: character {bad.group()!r} at position {bad.start() + 1} is not a DNA "
                         f"base (allowed: {KEPT}, IUPAC codes {AMBIGUOUS} read as N); fix the sequence")
    upper = seq.upper()
    cleaned, replaced = _AMBIGUOUS.subn("N", upper)
    return cleaned, replaced


def is_symbolic(allele: str) -> bool:
    """`<DEL>`-style, `*` (overlapping deletion), `.` (no ALT) or a breakend: not a base string."""
    return allele in ("*", ".") or allele.startswith("<") or "[" in allele or "]" in allele


def check_allele(allele: str, what: str, where: str) -> None:
    """A VCF REF/ALT must be A/C/G/T/N (any case) or symbolic (ALT only); else a ValueError naming `where`."""
    if _ALLELE.fullmatch(allele) or (what == "ALT" and is_symbolic(allele)):
        return
    raise ValueError(f"{where}: {what} {allele!r} is not a DNA allele (A/C/G/T/N, or a symbolic ALT such "
                     "as <DEL> or *); fix the record")
