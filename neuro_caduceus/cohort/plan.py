"""CPU stage: one gene's unique haplotypes -> the distinct window sequences that need the model.

Why: a gene embedding is sum(window sums) / sum(window lengths) over its windows (INTERFACES.md, the window
rule), so a haplotype differs from the reference only in the windows that hold one of its variants. The
reference windows are embedded once per gene; a haplotype window is built only where a variant falls, and
identical window contents (two haplotypes with the same variants in that window, or a variant that leaves
the sequence unchanged) are embedded once, keyed by content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant


@dataclass
class GeneUnit:
    """One work unit: a gene (region) and its windows, fixed on the driver (deterministic id = gene_id)."""

    gene_id: str
    gene_name: str
    region: Any  # genome.regions.Region
    windows: list[Any]  # genome.regions.Window, in order


@dataclass
class GenePlan:
    """What the model must embed for one gene and how to reassemble every haplotype from it."""

    unit: GeneUnit
    seqs: list[str]  # distinct window sequences to embed (slot = index)
    ref_slots: np.ndarray  # int64 [n_windows]: slot of each reference window
    hap_keys: list[str]
    hap_repl: list[list[tuple[int, int]]]  # per haplotype: (window index, slot) where it differs
    carriers: list[list[tuple[str, int]]]  # per haplotype: (subject_id, hap_index)
    counts: dict[str, int] = field(default_factory=dict)
    sums: np.ndarray | None = None  # float64 [n_slots, d], filled by the embedding actor
    lengths: np.ndarray | None = None  # int64 [n_slots]


VARIANT_OUTCOMES = ("applied", "skipped_overlap", "rejected_ref_mismatch", "ignored")  # BuildResult fields


def content_key(seq: str) -> str:
    """Window content key: identical sequences share one model call."""
    return hashlib.sha1(seq.encode()).hexdigest()


@lru_cache(maxsize=4)
def open_reference(path: str):
    """One open FASTA per worker process (tasks reuse their process)."""
    from neuro_caduceus.genome.fasta import Reference

    return Reference(path)


def plan_gene(reference: Any, unit: GeneUnit, haplotypes: pa.Table) -> GenePlan:
    """Distinct windows to embed for one gene, with per-haplotype window replacements and counts."""
    from neuro_caduceus.genome.haplotypes import build_sequence, variants_in

    slot_of: dict[str, int] = {}
    seqs: list[str] = []

    def slot(seq: str) -> int:
        key = content_key(seq)
        if key not in slot_of:
            slot_of[key] = len(seqs)
            seqs.append(seq)
        return slot_of[key]

    ref_seqs = [build_sequence(reference, w, []).sequence for w in unit.windows]
    ref_slots = np.array([slot(s) for s in ref_seqs], dtype=np.int64)
    ref_len = sum(len(s) for s in ref_seqs)
    hap_keys, hap_repl, carriers = [], [], []
    outcomes: dict[str, set] = {name: set() for name in VARIANT_OUTCOMES}  # a variant counts once per gene
    windows_built = windows_same_as_ref = windows_dedup = 0
    naive_tokens = 0
    n_subject_haps_listed = 0
    for row in haplotypes.cast(HAPLOTYPE_SCHEMA).to_pylist():
        variants = [Variant(v["chrom"], v["pos"], v["ref"], v["alt"]) for v in row["variants"]]
        repl = []
        hap_len = ref_len
        for i, window in enumerate(unit.windows):
            if not variants_in(window, variants):
                continue
            res = build_sequence(reference, window, variants)  # all: overlap skips depend on earlier ones
            for name in VARIANT_OUTCOMES:
                outcomes[name].update(getattr(res, name))
            windows_built += 1
            hap_len += len(res.sequence) - len(ref_seqs[i])
            if res.sequence == ref_seqs[i]:
                windows_same_as_ref += 1
                continue
            before = len(seqs)
            repl.append((i, slot(res.sequence)))
            windows_dedup += len(seqs) == before
        hap_keys.append(row["haplotype_key"])
        hap_repl.append(repl)
        hap_carriers = [(c["subject_id"], int(c["hap_index"])) for c in row["carriers"]]
        carriers.append(hap_carriers)
        n_subject_haps_listed += len(hap_carriers)
        naive_tokens += len(hap_carriers) * hap_len
    counts = {
        "windows_per_reference": len(unit.windows),
        "reference_tokens": ref_len,
        "unique_haplotypes": len(hap_keys),
        "haplotype_windows_built": windows_built,
        "haplotype_windows_equal_reference": windows_same_as_ref,
        "haplotype_windows_deduplicated": windows_dedup,
        "windows_embedded": len(seqs),
        "tokens_embedded": sum(len(s) for s in seqs),
        "carrier_haplotype_tokens": naive_tokens,
        "carrier_subject_haplotypes": n_subject_haps_listed,
        **{f"variants_{name}": len(outcomes[name]) for name in VARIANT_OUTCOMES},
    }
    return GenePlan(unit, seqs, ref_slots, hap_keys, hap_repl, carriers, counts)
