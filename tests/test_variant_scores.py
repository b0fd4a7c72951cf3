"""Masked-LM LLR scores against a direct computation with the model's logits; the noise floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuro_caduceus.analysis.variant_scores import noise_floor, score_variants, variant_query
from neuro_caduceus.genome.variant_schema import Variant
from neuro_caduceus.model import from_pretrained, tokenizer

SEQ = "ACGTTGCAAGCTAGCTAGGATCCGATTACGTAGGCTTACGATCGATCGTAGCTAGCATGCATCG"
FLANK = 10


class Ref:
    """A one-contig in-memory reference (the scorer only needs length and fetch)."""

    def length(self, chrom: str) -> int:
        return len(SEQ)

    def fetch(self, chrom: str, start: int, end: int) -> str:
        return SEQ[start:end]


def _direct(model, context: str, offsets: list[int], ref: str, alt: str) -> float:
    ids = torch.from_numpy(tokenizer.tokenize(context))[None].clone()
    ids[0, offsets] = tokenizer.VOCAB["[MASK]"]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0].double(), dim=-1)
    return sum(float(logp[o, tokenizer.VOCAB[a]] - logp[o, tokenizer.VOCAB[r]])
               for o, r, a in zip(offsets, ref, alt, strict=True))


def _rc(s: str) -> str:
    return s.translate(str.maketrans("ACGT", "TGCA"))[::-1]


@pytest.mark.parametrize("name", ["ps_d32_l2", "ph_d32_l2"])
def test_llr_equals_direct_logits_on_both_strands(golden_dir, name):
    model = from_pretrained(golden_dir / name)
    snv = Variant("c", 30, SEQ[29], "G" if SEQ[29] != "G" else "A")  # context [19, 40): offset 10
    edge = Variant("c", 3, SEQ[2], "T" if SEQ[2] != "T" else "C")  # clipped context [0, 13): offset 2
    mnv = Variant("c", 40, SEQ[39:41], "".join("A" if b != "A" else "C" for b in SEQ[39:41]))
    rows = score_variants(model, Ref(), [snv, edge, mnv], FLANK)
    for v, row in zip([snv, edge, mnv], rows, strict=True):
        lo, hi = max(0, v.start0 - FLANK), min(len(SEQ), v.end0 + FLANK)
        ctx, offs = SEQ[lo:hi], list(range(v.start0 - lo, v.end0 - lo))
        fwd = _direct(model, ctx, offs, v.ref, v.alt)
        rev = _direct(model, _rc(ctx), [len(ctx) - 1 - o for o in offs][::-1], _rc(v.ref), _rc(v.alt))
        assert row["llr_forward"] == pytest.approx(fwd, abs=1e-9)
        assert row["llr_reverse"] == pytest.approx(rev, abs=1e-9)
        assert row["llr"] == pytest.approx((fwd + rev) / 2, abs=1e-9)
    assert [r["llr_method"] for r in rows] == ["snv_masked", "snv_masked", "mnv_sum_of_masked_positions"]
    if name.startswith("ps"):  # RC-equivariant: both strands agree up to float error
        assert abs(rows[0]["llr_forward"] - rows[0]["llr_reverse"]) < 1e-4
    else:
        assert abs(rows[0]["llr_forward"] - rows[0]["llr_reverse"]) > 1e-6


def test_unscored_variants_say_why(golden_dir):
    model = from_pretrained(golden_dir / "ps_d32_l2")
    bad = [Variant("c", 10, SEQ[9], SEQ[9] + "A"), Variant("c", 10, "N" if SEQ[9] != "N" else "A", "C"),
           Variant("c", 10, "G" if SEQ[9] != "G" else "A", "T")]
    assert variant_query(Ref(), bad[0], FLANK) == "indel_not_scored"
    rows = score_variants(model, Ref(), bad, FLANK)
    assert [r["llr_method"] for r in rows] == ["indel_not_scored", "non_acgt_or_equal_not_scored",
                                              "ref_mismatch_not_scored"]
    assert all(np.isnan(r["llr"]) for r in rows)


def test_noise_floor_random_same_class(golden_dir):
    model = from_pretrained(golden_dir / "ps_d32_l2")
    gene = {"g": {"chrom": "c", "start": 0, "end": len(SEQ)}}

    def classify(v, g):
        return "first_half" if v.start0 < len(SEQ) // 2 else "second_half"

    floor = noise_floor(model, Ref(), gene, classify, [], n_per_class=5, flank=FLANK, seed=3)
    assert set(floor["random_same_class"]) == {"first_half", "second_half"}
    assert all(c["n"] == 5 and c["p95_abs_llr"] >= c["median_abs_llr"] > 0
               for c in floor["random_same_class"].values())
    again = noise_floor(model, Ref(), gene, classify, [], n_per_class=5, flank=FLANK, seed=3)
    assert again == floor  # seeded
