"""The additive strategy against a direct computation with the Embedder on small sequences."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from neuro_caduceus.cohort.additive import additive_embeddings, dosages, single_variant_embeddings
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA
from neuro_caduceus.model import from_pretrained
from neuro_caduceus.model.embedder import Embedder

WINDOW = 40


@pytest.fixture(scope="module")
def embedder(golden_dir):
    return Embedder(from_pretrained(golden_dir / "ps_d32_l2"), device="cpu", window=WINDOW)


def _apply(seq: str, start0: int, ref: str, alt: str) -> str:
    assert seq[start0:start0 + len(ref)] == ref
    return seq[:start0] + alt + seq[start0 + len(ref):]


def test_additive_equals_direct_window_rule(embedder):
    rng = np.random.default_rng(3)
    ref = "".join(rng.choice(list("ACGT"), 100))
    windows = [(0, 40), (40, 80), (80, 100)]
    # (window, 0-based start within the region, REF, ALT): two SNVs and an insertion (length changes)
    variants = [(0, 5, ref[5], "A" if ref[5] != "A" else "C"),
                (1, 50, ref[50], "G" if ref[50] != "G" else "T"), (2, 90, ref[90], ref[90] + "TTA")]
    ref_windows = [ref[a:b] for a, b in windows]
    alt_windows = [_apply(ref_windows[k], s - windows[k][0], r, a) for k, s, r, a in variants]
    sums, lengths = embedder.pool_windows(ref_windows + alt_windows)
    e_ref, e_var = single_variant_embeddings(sums, lengths, np.arange(3),
                                             [[(k, 3 + j)] for j, (k, *_) in enumerate(variants)])

    def direct(window_seqs: list[str]) -> np.ndarray:  # the window rule, each window embedded on its own
        total = sum(embedder.embed(s).astype(np.float64) * len(s) for s in window_seqs)
        return total / sum(len(s) for s in window_seqs)

    d_ref = direct(ref_windows)
    np.testing.assert_allclose(e_ref, d_ref, rtol=1e-5, atol=1e-6)
    for j, (k, *_rest) in enumerate(variants):
        seqs = list(ref_windows)
        seqs[k] = alt_windows[j]
        np.testing.assert_allclose(e_var[j], direct(seqs), rtol=1e-5, atol=1e-6)
    # subject 0: hom ALT of v0 and het v2; subject 1: nothing; subject 2: het v1
    subject, variant, dosage = np.array([0, 0, 2]), np.array([0, 2, 1]), np.array([2, 1, 1])
    got = additive_embeddings(e_ref, e_var, subject, variant, dosage, 3)
    d_var = [direct([alt_windows[j] if i == k else ref_windows[i] for i in range(3)])
             for j, (k, *_) in enumerate(variants)]
    expect = [d_ref + 2 * (d_var[0] - d_ref) + (d_var[2] - d_ref), d_ref, d_ref + (d_var[1] - d_ref)]
    np.testing.assert_allclose(got, np.stack(expect), rtol=1e-5, atol=1e-6)
    assert np.array_equal(got[1], e_ref)  # no variant: exactly the reference


def test_dosages_count_haplotypes_not_phase():
    v = [{"chrom": "c", "pos": 5, "ref": "A", "alt": "G"}, {"chrom": "c", "pos": 9, "ref": "C", "alt": "T"}]
    rows = [  # s1 carries v0 on both haplotypes (hom), s2 carries v0 and v1 on one haplotype
        {"gene_id": "g", "haplotype_key": "k1", "variants": [v[0]],
         "carriers": [{"subject_id": "s1", "hap_index": 1}, {"subject_id": "s1", "hap_index": 2}]},
        {"gene_id": "g", "haplotype_key": "k2", "variants": v,
         "carriers": [{"subject_id": "s2", "hap_index": 2}]},
    ]
    table = pa.Table.from_pylist(rows, schema=HAPLOTYPE_SCHEMA)
    variants, subject, variant, dosage = dosages(table, ["s0", "s1", "s2"])
    assert variants == [("c", 5, "A", "G"), ("c", 9, "C", "T")]
    assert list(zip(subject.tolist(), variant.tolist(), dosage.tolist(), strict=True)) == [
        (1, 0, 2), (2, 0, 1), (2, 1, 1)]


def test_dosage_out_of_range_is_refused():
    with pytest.raises(ValueError, match="dosages must be 0, 1 or 2"):
        additive_embeddings(np.zeros(2), np.zeros((1, 2)), np.array([0]), np.array([0]), np.array([3]), 1)


def test_wes_template_regions_are_the_documented_ones():
    """docs/genotypes.md shows the exome regions of configs/ukb_wes.yaml; the template loads."""
    import re
    from pathlib import Path

    import yaml

    from neuro_caduceus.cohort.config import CohortConfig

    root = Path(__file__).parents[1]
    block = re.search(r"```yaml\n(regions:.*?)```", (root / "docs" / "genotypes.md").read_text(), re.S)
    cfg = CohortConfig.model_validate(yaml.safe_load((root / "configs" / "ukb_wes.yaml").read_text()))
    assert cfg.regions.model_dump(include={"mode", "flank"}) == yaml.safe_load(block.group(1))["regions"]
    assert cfg.regions.mode == "exons" and cfg.rc_check.enabled
