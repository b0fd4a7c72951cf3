"""Zero-shot masked-LM log-likelihood-ratio (LLR) scores of variants, beside the embedding distances.

Definition (SNV at 0-based reference position p, REF base r, ALT base a): the context is the reference
sequence [p - flank, p + 1 + flank) on the forward strand (clipped at the contig ends); position p is
replaced by [MASK] and the masked LM gives log-probabilities at p (log-softmax over the whole vocabulary; the
normalisation cancels in the difference):

    llr_forward = log P(a | context) - log P(r | context)
    llr_reverse = the same on the reverse complement of the context, with p mirrored and r, a complemented
    llr         = (llr_forward + llr_reverse) / 2       (strand-averaged)

A PS checkpoint is RC-equivariant, so its two strands agree up to floating-point error (their difference is
reported as the numerical noise floor); for a PH checkpoint the average makes the score strand-symmetric.
MNVs (REF and ALT of equal length > 1): every position of the REF span is masked in one pass and the
per-position LLRs are summed (independent masked marginals). Indels and variants whose REF disagrees with
the reference or touches a non-ACGT base are not scored (NaN, with the reason in `llr_method`).

Noise floor: LLRs of random substitutions of the same consequence class (positions drawn uniformly from the
class's bases in the same genes, ALT drawn uniformly from the other three bases, fixed seed): a variant's
|llr| is informative only well above that distribution's spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuro_caduceus.cohort.consequence import consequence
from neuro_caduceus.genome.fasta import Reference
from neuro_caduceus.genome.variant_schema import Variant
from neuro_caduceus.model import tokenizer

SCORE_FLANK = 512
SCORE_COLUMNS = {"llr": float, "llr_forward": float, "llr_reverse": float, "llr_method": str}
_BASES = "ACGT"


@dataclass(frozen=True)
class MaskedQuery:
    """One strand of one variant: context ids, masked offsets, REF and ALT token ids at those offsets."""

    ids: np.ndarray
    offsets: np.ndarray
    ref_ids: np.ndarray
    alt_ids: np.ndarray

    def reverse(self) -> MaskedQuery:
        n = len(self.ids)
        comp = tokenizer.COMPLEMENT_IDS
        return MaskedQuery(tokenizer.reverse_complement_ids(self.ids), (n - 1 - self.offsets)[::-1],
                           comp[self.ref_ids][::-1], comp[self.alt_ids][::-1])


def variant_query(reference: Any, v: Variant, flank: int) -> MaskedQuery | str:
    """The forward-strand query of a variant, or the reason it is not scored."""
    if len(v.ref) != len(v.alt):
        return "indel_not_scored"
    ref, alt = v.ref.upper(), v.alt.upper()
    if not set(ref + alt) <= set(_BASES) or ref == alt:
        return "non_acgt_or_equal_not_scored"
    size = reference.length(v.chrom)
    lo, hi = max(0, v.start0 - flank), min(size, v.end0 + flank)
    context = reference.fetch(v.chrom, lo, hi).upper()
    offsets = np.arange(v.start0 - lo, v.end0 - lo)
    if context[offsets[0] : offsets[-1] + 1] != ref:
        return "ref_mismatch_not_scored"
    return MaskedQuery(tokenizer.tokenize(context), offsets, tokenizer.tokenize(ref), tokenizer.tokenize(alt))


def masked_llr(model: Any, queries: Sequence[MaskedQuery], device: str = "cpu",
               batch_size: int = 32) -> np.ndarray:
    """LLR (sum over masked offsets of log P(alt) - log P(ref)) of each query; equal lengths share a batch."""
    import torch

    out = np.zeros(len(queries))
    by_len: dict[int, list[int]] = {}
    for i, q in enumerate(queries):
        by_len.setdefault(len(q.ids), []).append(i)
    mask_id = tokenizer.VOCAB["[MASK]"]
    with torch.inference_mode():
        for idx in by_len.values():
            for k in range(0, len(idx), batch_size):
                part = idx[k : k + batch_size]
                ids = np.stack([queries[i].ids for i in part])
                for row, i in enumerate(part):
                    ids[row, queries[i].offsets] = mask_id
                logits = model(torch.from_numpy(ids).to(device)).double()
                logp = torch.log_softmax(logits, dim=-1).cpu().numpy()
                for row, i in enumerate(part):
                    q = queries[i]
                    out[i] = float((logp[row, q.offsets, q.alt_ids] - logp[row, q.offsets, q.ref_ids]).sum())
    return out


def score_variants(model: Any, reference: Any, variants: Sequence[Variant], flank: int = SCORE_FLANK,
                   device: str = "cpu") -> list[dict]:
    """Per variant: llr, llr_forward, llr_reverse, llr_method (the columns of SCORE_COLUMNS)."""
    queries = [variant_query(reference, v, flank) for v in variants]
    scored = [i for i, q in enumerate(queries) if isinstance(q, MaskedQuery)]
    fwd = masked_llr(model, [queries[i] for i in scored], device)
    rev = masked_llr(model, [queries[i].reverse() for i in scored], device)
    rows = [{"llr": float("nan"), "llr_forward": float("nan"), "llr_reverse": float("nan"), "llr_method": q}
            for q in queries]
    for j, i in enumerate(scored):
        method = "snv_masked" if len(variants[i].ref) == 1 else "mnv_sum_of_masked_positions"
        rows[i] = {"llr": (fwd[j] + rev[j]) / 2, "llr_forward": fwd[j], "llr_reverse": rev[j],
                   "llr_method": method}
    return rows


def random_substitutions(reference: Any, genes: dict, classify: Any, n_per_class: int, seed: int = 0,
                         draws_per_gene: int = 20_000) -> dict[str, list[Variant]]:
    """Up to n_per_class random SNVs per consequence class: positions drawn uniformly (without replacement,
    at most draws_per_gene per gene) over the genes' ACGT bases, classified, then sampled per class."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[tuple[str, int, str]]] = {}
    for g in genes.values():
        seq = reference.fetch(g["chrom"], g["start"], g["end"]).upper()
        offsets = rng.choice(len(seq), size=min(draws_per_gene, len(seq)), replace=False)
        for off in np.sort(offsets).tolist():
            base = seq[off]
            if base in _BASES:
                probe = Variant(g["chrom"], g["start"] + off + 1, base, base)
                pools.setdefault(classify(probe, g), []).append((g["chrom"], g["start"] + off + 1, base))
    out = {}
    for cls, pool in sorted(pools.items()):
        picks = rng.choice(len(pool), size=min(n_per_class, len(pool)), replace=False)
        out[cls] = [Variant(c, p, r, str(rng.choice([b for b in _BASES if b != r])))
                    for c, p, r in (pool[i] for i in sorted(picks))]
    return out


def noise_floor(model: Any, reference: Any, genes: dict, classify: Any, scores: list[dict],
                n_per_class: int = 20, flank: int = SCORE_FLANK, device: str = "cpu", seed: int = 0) -> dict:
    """Random same-class substitutions (|llr| spread per class) and the strand disagreement of the scores."""
    per_class = {}
    for cls, variants in random_substitutions(reference, genes, classify, n_per_class, seed).items():
        llr = np.array([r["llr"] for r in score_variants(model, reference, variants, flank, device)])
        a = np.abs(llr[np.isfinite(llr)])
        per_class[cls] = {"n": int(a.size), "median_abs_llr": float(np.median(a)) if a.size else None,
                          "p95_abs_llr": float(np.quantile(a, 0.95)) if a.size else None}
    diff = [abs(r["llr_forward"] - r["llr_reverse"]) for r in scores if np.isfinite(r["llr"])]
    return {"random_same_class": per_class, "n_per_class": n_per_class, "seed": seed, "flank": flank,
            "strand_max_abs_difference": max(diff, default=0.0),
            "definition": "random SNVs of the same consequence class in the same genes; a variant's |llr| "
                          "means something only well above that class's p95_abs_llr"}


def add_llr_scores(variants: Any, model: Any, cfg: Any, genes: dict, flank: int,
                   n_per_class: int = 20) -> tuple[Any, dict]:
    """The pilot's hook: SCORE_COLUMNS added to its variants table (same row order), and the noise floor."""
    import polars as pl
    import torch

    device = cfg.model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    reference = Reference(cfg.inputs.reference_fasta)
    listed = [Variant(r["chrom"], r["pos"], r["ref"], r["alt"]) for r in variants.iter_rows(named=True)]
    rows = score_variants(model, reference, listed, flank, device)
    scores = pl.DataFrame(rows, schema=SCORE_COLUMNS)
    floor = noise_floor(model, reference, genes, consequence, rows, n_per_class, flank, device)
    floor["methods"] = dict(scores.group_by("llr_method").len().iter_rows())
    return pl.concat([variants, scores], how="horizontal"), floor
