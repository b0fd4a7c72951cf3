"""The phase-free, dosage-aware `additive` subject embedding, as a pure function of pooled window sums.

Why: exome calls are mostly unphased, so `diploid` has to guess which chromosome each het ALT sits on. The
additive strategy needs no phase: only each subject's ALT dosage per variant and the effect of each variant
applied alone to the reference (`neuro_caduceus.provenance.ADDITIVE_DEFINITION`). It also bounds the
model work by the distinct variants of a gene instead of its distinct haplotypes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def additive_embeddings(e_ref: np.ndarray, e_var: np.ndarray, subject: np.ndarray, variant: np.ndarray,
                        dosage: np.ndarray, n_subjects: int) -> np.ndarray:
    """float64 [n_subjects, d]: e_ref + sum over (subject, variant, dosage) triples of dosage x delta_v
    (an imputed dosage may be fractional, within [0, 2])."""
    if len(dosage) and (dosage.min() < 0 or dosage.max() > 2):
        raise ValueError(f"dosages must be 0, 1 or 2; got values in [{dosage.min()}, {dosage.max()}]")
    out = np.repeat(e_ref[None, :], n_subjects, axis=0)
    np.add.at(out, subject, dosage[:, None] * (e_var[variant] - e_ref[None, :]))
    return out


def imputed_dosages(subject: np.ndarray, variant: np.ndarray, dosage: np.ndarray, n_subjects: int,
                    missing_subject: np.ndarray, missing_variant: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray, np.ndarray]:
    """`missing: impute`: the observed (subject, variant, dosage) triples plus, for every (subject, variant)
    whose call is missing, the expected dosage 2 * p_v; returns (subject, variant, float dosage, p).

    p_v = AC_v / (2 * N_v): AC_v = the observed ALT alleles of v (sum of its dosages), N_v = the subjects
    called at v (all `n_subjects` minus those missing at v and not carrying it). A missing pair that also
    carries v (a half-missing call such as `./1`) keeps its observed dosage and is not imputed.
    """
    n_variants = int(max(variant.max(initial=-1), missing_variant.max(initial=-1))) + 1
    observed = set(zip(subject.tolist(), variant.tolist(), strict=True))
    pairs = sorted({(s, v) for s, v in zip(missing_subject.tolist(), missing_variant.tolist(), strict=True)
                    if (s, v) not in observed})
    miss = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    allele_count = np.bincount(variant, weights=dosage, minlength=n_variants)
    called = n_subjects - np.bincount(miss[:, 1], minlength=n_variants)
    p = np.divide(allele_count, 2 * called, out=np.zeros(n_variants), where=called > 0)
    return (np.concatenate([subject, miss[:, 0]]), np.concatenate([variant, miss[:, 1]]),
            np.concatenate([dosage.astype(np.float64), 2 * p[miss[:, 1]]]), p)


def dosages(haplotypes: pa.Table, subjects: Sequence[str]) -> tuple[list[tuple], np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """From HAPLOTYPE_SCHEMA rows (any strategy that keeps both haplotypes, e.g. diploid): the distinct
    variants (chrom, pos, ref, alt) in sorted order and the sparse (subject index, variant index, dosage)
    triples; a subject's dosage of v = how many of its haplotypes carry v. Subjects not listed are skipped.
    """
    index = {s: i for i, s in enumerate(subjects)}
    counts: dict[tuple[int, tuple], int] = {}
    for row in haplotypes.to_pylist():
        keys = {(v["chrom"], v["pos"], v["ref"], v["alt"]) for v in row["variants"]}
        for carrier in row["carriers"]:
            i = index.get(carrier["subject_id"])
            if i is None:
                continue
            for key in keys:
                counts[(i, key)] = counts.get((i, key), 0) + 1
    variants = sorted({key for _, key in counts})
    vindex = {v: j for j, v in enumerate(variants)}
    triples = sorted((i, vindex[key], n) for (i, key), n in counts.items())
    arr = np.array(triples, dtype=np.int64).reshape(-1, 3)
    return variants, arr[:, 0], arr[:, 1], arr[:, 2]
