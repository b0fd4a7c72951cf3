"""The additive strategy against a direct computation with the Embedder on small sequences."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from neuro_caduceus.cohort.additive import additive_embeddings, dosages, imputed_dosages
from neuro_caduceus.cohort.pooling import window_means
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
    e_ref, e_var = window_means(sums, lengths, np.arange(3),
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


def test_imputed_dosage_is_twice_the_called_allele_frequency():
    """Direct formula on a hand-made cohort of 6: p_v = observed ALT alleles / (2 x subjects called at v)."""
    # observed: v0 hom in s0, het in s1; v1 het in s2; s3 missing at v0 and v1, s4 missing at v0; s1 has a
    # half-missing call at v1 (`./1` style: carries v1 and is listed missing): it keeps its observed dosage
    subject, variant, dosage = np.array([0, 1, 2, 1]), np.array([0, 0, 1, 1]), np.array([2, 1, 1, 1])
    ms, mv = np.array([3, 3, 4, 1]), np.array([0, 1, 0, 1])
    s, v, d, p = imputed_dosages(subject, variant, dosage, 6, ms, mv)
    np.testing.assert_allclose(p, [3 / (2 * 4), 2 / (2 * 5)])  # v0: 4 called of 6; v1: 5 called (s1 kept)
    imputed = sorted(zip(s[4:].tolist(), v[4:].tolist(), d[4:].tolist(), strict=True))
    assert imputed == [(3, 0, 2 * 3 / 8), (3, 1, 2 * 2 / 10), (4, 0, 2 * 3 / 8)]
    assert d[:4].tolist() == [2, 1, 1, 1]  # observed dosages unchanged
    e_ref, e_var = np.zeros(2), np.array([[1.0, 0.0], [0.0, 1.0]])
    got = additive_embeddings(e_ref, e_var, s, v, d, 6)
    np.testing.assert_allclose(got[3], [0.75, 0.4])  # expected contribution of both missing calls
    np.testing.assert_allclose(got[5], [0, 0])  # called, carries nothing: the reference


def test_impute_needs_the_additive_strategy():
    from neuro_caduceus.cohort.config import CohortConfig

    body = {"inputs": {"reference_fasta": "r.fa", "gtf": "g.gtf", "gene_set": "s.yaml", "vcf": "v.vcf.gz"},
            "model": {"checkpoint": "ckpt", "window": 512}, "output": {"dir": "out"}, "missing": "impute"}
    with pytest.raises(ValueError, match="missing: impute needs haplotype_strategy: additive"):
        CohortConfig.model_validate({**body, "haplotype_strategy": "diploid"})
    assert CohortConfig.model_validate({**body, "haplotype_strategy": "additive"}).missing == "impute"


def test_dosage_out_of_range_is_refused():
    with pytest.raises(ValueError, match="dosages must be 0, 1 or 2"):
        additive_embeddings(np.zeros(2), np.zeros((1, 2)), np.array([0]), np.array([0]), np.array([3]), 1)


def test_wes_template_regions_are_the_documented_ones():
    """docs/genotypes.md shows the exome regions of configs/ukb_wes.yaml; the template loads, phase-free."""
    import re
    from pathlib import Path

    import yaml

    from neuro_caduceus.cohort.config import CohortConfig

    root = Path(__file__).parents[1]
    block = re.search(r"```yaml\n(regions:.*?)```", (root / "docs" / "genotypes.md").read_text(), re.S)
    cfg = CohortConfig.model_validate(yaml.safe_load((root / "configs" / "ukb_wes.yaml").read_text()))
    assert cfg.regions.model_dump(include={"mode", "flank"}) == yaml.safe_load(block.group(1))["regions"]
    assert cfg.regions.mode == "exons" and cfg.rc_check.enabled
    assert cfg.haplotype_strategy == "additive"  # phase-free: UKB exome calls are unphased


def _vcf_dosages(vcf: str, region) -> dict[str, dict]:
    """Per subject, {Variant: ALT alleles of it in the GT} in the region (pysam, phase ignored)."""
    import pysam

    from neuro_caduceus.genome.variant_schema import Variant

    out: dict[str, dict] = {}
    with pysam.VariantFile(vcf) as f:
        for s in f.header.samples:
            out[s] = {}
        lo, hi = min(a for a, _ in region.segments), max(b for _, b in region.segments)
        for rec in f.fetch(region.chrom, lo, hi):
            for s, call in rec.samples.items():
                for allele in (call["GT"] or ())[:2]:
                    if allele is not None and allele > 0:
                        v = Variant(rec.chrom, rec.pos, rec.ref, rec.alts[allele - 1])
                        out[s][v] = out[s].get(v, 0) + 1
    return out


def _vcf_missing_records(vcf: str, region) -> dict[str, set[tuple[int, str]]]:
    """Per subject, the (POS, REF) of the records in the region where its GT has a missing allele (pysam)."""
    import pysam

    out: dict[str, set] = {}
    with pysam.VariantFile(vcf) as f:
        for s in f.header.samples:
            out[s] = set()
        lo, hi = min(a for a, _ in region.segments), max(b for _, b in region.segments)
        for rec in f.fetch(region.chrom, lo, hi):
            for s, call in rec.samples.items():
                if not call["GT"] or None in call["GT"]:
                    out[s].add((rec.pos, rec.ref))
    return out


def test_cohort_job_runs_additive_and_matches_a_direct_computation(ray_session, tmp_path):
    """The job's additive shards = e_ref + sum_v dosage x (e(reference with v alone) - e_ref), with each
    gene embedding pooled directly from the gene's windows and the dosages read from the VCF with pysam."""
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq
    import torch
    import yaml

    from neuro_caduceus.cohort.config import load_config
    from neuro_caduceus.cohort.job import build_units, run_embed_cohort
    from neuro_caduceus.genome.fasta import Reference
    from neuro_caduceus.genome.haplotypes import build_sequence, variants_in
    from neuro_caduceus.synthetic import make_cohort

    window = 512
    make_cohort(tmp_path, n_samples=10, n_genes=2, seed=11)
    ckpt = tmp_path / "ckpt"
    subprocess.run([sys.executable, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps",
                    "--seed", "0", "--out", str(ckpt)], check=True, capture_output=True)
    vcf = str(tmp_path / "cohort.vcf.gz")
    config = tmp_path / "additive.yaml"
    config.write_text(yaml.safe_dump({
        "inputs": {"reference_fasta": str(tmp_path / "genome.fa"), "gtf": str(tmp_path / "genes.gtf.gz"),
                   "gene_set": str(tmp_path / "geneset.yaml"), "reference_version": "synthetic", "vcf": vcf},
        "regions": {"mode": "gene_body", "flank": 0, "orient": "transcript"},
        "haplotype_strategy": "additive",
        "model": {"checkpoint": str(ckpt), "device": "cpu", "window": window},
        "compute": {"actors_min": 1, "actors_max": 1, "window_batch_size": 8, "cpus_per_task": 0.5,
                    "tokens_per_batch": 4 * window},
        "output": {"dir": str(tmp_path / "out")},
    }))
    summary = run_embed_cohort(config, quiet=True)
    table = pq.read_table(tmp_path / "out" / "shards")
    recipe = json.loads(table.schema.metadata[b"neuro_caduceus.recipe"])
    assert recipe["haplotype_strategy"] == "additive" and "additive_definition" in recipe
    assert "n_missing" in table.column_names
    got = {(s, g): np.asarray(e) for s, g, e in zip(table["subject_id"].to_pylist(),
                                                    table["gene_id"].to_pylist(),
                                                    table["embedding"].to_pylist(), strict=True)}

    torch.set_num_threads(1)
    reference = Reference(str(tmp_path / "genome.fa"))
    emb = Embedder(from_pretrained(str(ckpt)), device="cpu", batch_size=8, window=window)

    def gene_embedding(unit, variants) -> np.ndarray:
        sums, counts = emb.pool_windows([build_sequence(reference, w, variants_in(w, variants)).sequence
                                         for w in unit.windows])
        return sums.sum(0) / counts.sum()

    expected, n_variants, seen, carriers = {}, {}, set(), set()
    for unit in build_units(load_config(config)):
        e_ref = gene_embedding(unit, [])
        per_subject = _vcf_dosages(vcf, unit.region)
        distinct = sorted({v for d in per_subject.values() for v in d})
        n_variants[unit.gene_id] = len(distinct)
        delta = {v: gene_embedding(unit, [v]) - e_ref for v in distinct}
        for s, d in per_subject.items():
            seen.update(d.values())
            if d:
                carriers.add((s, unit.gene_id))
            expected[(s, unit.gene_id)] = e_ref + sum((n * delta[v] for v, n in d.items()),
                                                      np.zeros_like(e_ref))
    assert set(got) == set(expected)
    assert any(n_variants.values())
    assert seen >= {1, 2}, seen  # het and hom-alt carriers, so the dosage factor is exercised
    worst = max(float(np.abs(got[k] - expected[k]).max()) for k in expected)
    assert worst < 1e-5, worst
    per_gene = {g["gene_id"]: g for g in summary["per_gene"]}
    assert {g: per_gene[g]["distinct_variants"] for g in n_variants} == n_variants
    assert summary["genotypes"]["imputed_calls"] == 0 and recipe["missing"] == "reference"
    assert "reference_embedding" not in per_gene[unit.gene_id]  # in reference.parquet, not the manifest

    # reference.parquet = the reference haplotype pooled directly; deviation = ||e_s - e_ref|| (numpy)
    refs = pq.read_table(tmp_path / "out" / "reference.parquet")
    assert refs["gene_id"].to_pylist() == [u.gene_id for u in build_units(load_config(config))]
    ref_of = dict(zip(refs["gene_id"].to_pylist(), np.stack(refs["embedding"].to_numpy(zero_copy_only=False)),
                      strict=True))
    for unit in build_units(load_config(config)):
        np.testing.assert_allclose(ref_of[unit.gene_id], gene_embedding(unit, []), atol=1e-5)
    assert table.schema.field("deviation").type == pa.float32()
    emb64 = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float64)
    ref64 = np.stack([ref_of[g] for g in table["gene_id"].to_pylist()]).astype(np.float64)
    deviation = table["deviation"].to_numpy()
    np.testing.assert_allclose(deviation, np.linalg.norm(emb64 - ref64, axis=1), rtol=1e-6, atol=1e-9)
    keys = list(zip(table["subject_id"].to_pylist(), table["gene_id"].to_pylist(), strict=True))
    is_carrier = np.array([k in carriers for k in keys])
    assert (deviation[~is_carrier] == 0).all() and (deviation[is_carrier] > 0).any()  # 0: the reference

    # missing: impute, same windows (all store hits): a missing call at v's record becomes 2 * p_v
    body = yaml.safe_load(config.read_text())
    body["missing"] = "impute"
    body["output"] = {"dir": str(tmp_path / "out_impute"),
                      "window_store": str(tmp_path / "out" / "window_store")}
    config.write_text(yaml.safe_dump(body))
    imputed_summary = run_embed_cohort(config, quiet=True)
    table = pq.read_table(tmp_path / "out_impute" / "shards")
    assert json.loads(table.schema.metadata[b"neuro_caduceus.recipe"])["missing"] == "impute"
    got = {(s, g): np.asarray(e) for s, g, e in zip(table["subject_id"].to_pylist(),
                                                    table["gene_id"].to_pylist(),
                                                    table["embedding"].to_pylist(), strict=True)}
    n_imputed = 0
    for unit in build_units(load_config(config)):
        e_ref = gene_embedding(unit, [])
        per_subject = _vcf_dosages(vcf, unit.region)
        missing = _vcf_missing_records(vcf, unit.region)
        distinct = sorted({v for d in per_subject.values() for v in d})
        delta = {v: gene_embedding(unit, [v]) - e_ref for v in distinct}
        for v in distinct:  # direct formula: p_v = AC_v / (2 N_v), N_v = subjects called at v's record
            uncalled = [s for s in per_subject if (v.pos, v.ref) in missing[s] and v not in per_subject[s]]
            p = sum(d.get(v, 0) for d in per_subject.values()) / (2 * (len(per_subject) - len(uncalled)))
            for s in uncalled:
                expected[(s, unit.gene_id)] = expected[(s, unit.gene_id)] + 2 * p * delta[v]
                n_imputed += 1
    assert n_imputed > 0 and imputed_summary["genotypes"]["imputed_calls"] == n_imputed
    worst = max(float(np.abs(got[k] - expected[k]).max()) for k in expected)
    assert worst < 1e-5, worst
