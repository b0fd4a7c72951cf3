"""A variant's consequence class relative to its gene's canonical transcript (pilot table, noise floor)."""

from __future__ import annotations

from neuro_caduceus.genome.variant_schema import Variant


def consequence(v: Variant, gene: dict) -> str:
    """coding (CDS of the canonical transcript) / UTR (other exonic) / intronic / flank (outside the gene)."""

    def hits(parts: list[dict]) -> bool:
        return any(v.start0 < p["end"] and v.end0 > p["start"] for p in parts)

    if hits(gene["cds"]):
        return "coding"
    if hits(gene["exons"]):
        return "UTR"
    return "intronic" if v.start0 < gene["end"] and v.end0 > gene["start"] else "flank"
