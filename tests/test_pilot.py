"""Variant-vs-reference pilot on a small synthetic cohort (VCF input, tiny random PS checkpoint, local Ray).

The oracle for single-variant effects edits the gene's reference string by hand (reverse-complementing
minus-strand genes) and embeds both whole strings with the Embedder, sharing no code with the pilot's
planning; the window (4,096) holds every gene whole, so the comparison is exact for indels too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pysam
import pytest
from typer.testing import CliRunner

WINDOW = 4096


@pytest.fixture(scope="module")
def pilot(tmp_path_factory, ray_session):
    from neuro_caduceus.analysis.pilot import run_pilot
    from neuro_caduceus.cohort.config import CohortConfig
    from neuro_caduceus.model.config import preset_config
    from neuro_caduceus.model.random_init import random_model
    from neuro_caduceus.synthetic import make_cohort

    d = tmp_path_factory.mktemp("pilot")
    manifest = make_cohort(d / "cohort", n_samples=16, n_genes=3, seed=1)  # SYN2 is on the minus strand
    random_model(preset_config("tiny-ps"), seed=0).save_pretrained(d / "ckpt")
    cfg = CohortConfig.model_validate(
        {
            "inputs": {
                "vcf": str(d / "cohort" / "cohort.vcf.gz"),
                "reference_fasta": str(d / "cohort" / "genome.fa"),
                "gtf": str(d / "cohort" / "genes.gtf.gz"),
                "gene_set": str(d / "cohort" / "geneset.yaml"),
            },
            "regions": {"mode": "gene_body", "flank": 0, "orient": "transcript"},
            "model": {"checkpoint": str(d / "ckpt"), "window": WINDOW},
            "output": {"dir": str(d / "unused")},
        }
    )
    result = run_pilot(cfg, d / "out", local_flank=100)  # short local windows keep the test fast
    return result, cfg, manifest, d


def _direct_distance(model, seq_ref: str, seq_alt: str) -> tuple[float, float]:
    from neuro_caduceus.model.embedder import Embedder

    emb = Embedder(model, device="cpu", batch_size=8)

    def mean(seq: str) -> np.ndarray:
        sums, counts = emb.pool_windows([seq[i : i + WINDOW] for i in range(0, len(seq), WINDOW)])
        return sums.sum(axis=0) / counts.sum()

    a, b = mean(seq_ref), mean(seq_alt)
    return 1 - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), float(np.linalg.norm(a - b))


def test_single_variant_effect_equals_direct_embedding(pilot):
    from neuro_caduceus.model import from_pretrained

    result, cfg, manifest, _ = pilot
    model = from_pretrained(cfg.model.checkpoint)
    genes = {g["gene_id"]: g for g in manifest["genes"]}
    fasta = pysam.FastaFile(cfg.inputs.reference_fasta)
    rows = result.variants.filter(result.variants["status"] == "applied")
    per_kind: dict[tuple[str, bool], int] = {}
    for gene_id in genes:
        g = genes[gene_id]
        ref = fasta.fetch(g["chrom"], g["start"], g["end"]).upper()
        part = rows.filter(rows["gene_id"] == gene_id).sort("pos")
        for r in part.iter_rows(named=True):
            start, end = r["pos"] - 1, r["pos"] - 1 + len(r["ref"])
            kind = (g["strand"], len(r["ref"]) == len(r["alt"]))
            if start < g["start"] or end > g["end"] or per_kind.get(kind, 0) >= 4:
                continue
            alt = ref[: start - g["start"]] + r["alt"] + ref[end - g["start"] :]
            a, b = ref, alt
            if g["strand"] == "-":
                comp = str.maketrans("ACGTN", "TGCAN")
                a, b = a.translate(comp)[::-1], b.translate(comp)[::-1]
            cos, l2 = _direct_distance(model, a, b)
            assert r["cos_distance"] == pytest.approx(cos, rel=1e-6, abs=1e-12), r
            assert r["l2_distance"] == pytest.approx(l2, rel=1e-6, abs=1e-12), r
            per_kind[kind] = per_kind.get(kind, 0) + 1
    assert sum(per_kind.values()) >= 8 and len(per_kind) >= 3, per_kind  # SNV/MNV and indels, both strands


def test_subjects_without_variants_have_distance_exactly_zero(pilot):
    result = pilot[0]
    subjects = result.subjects
    assert subjects.height == 16 * 3
    clean = subjects.filter(subjects["n_variants"] == 0)
    assert clean.height > 0
    assert (clean["cos_distance"] == 0).all() and (clean["l2_distance"] == 0).all()
    carriers = subjects.filter(subjects["n_variants"] > 0)
    assert carriers.height > 0 and (carriers["l2_distance"] > 0).any()


def test_one_row_per_variant_of_the_vcf(pilot):
    result, cfg, manifest, _ = pilot
    expected = set()
    with pysam.VariantFile(cfg.inputs.vcf) as f:
        for g in manifest["genes"]:
            for rec in f.fetch(g["chrom"], g["start"], g["end"]):
                carried = {a for s in rec.samples.values() for a in (s["GT"] or ()) if a}
                for k in carried:
                    if rec.pos - 1 < g["end"] and rec.pos - 1 + len(rec.ref) > g["start"]:
                        expected.add((g["gene_id"], rec.pos, rec.ref, rec.alts[k - 1]))
    got = list(zip(*(result.variants[c].to_list() for c in ("gene_id", "pos", "ref", "alt")), strict=True))
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
    assert set(result.variants["consequence"].to_list()) <= {"coding", "UTR", "intronic", "flank"}
    assert ((result.variants["allele_frequency"] > 0) & (result.variants["allele_frequency"] <= 1)).all()


def test_report_plots_and_strand_check(pilot):
    import matplotlib.image
    import pyarrow.parquet as pq

    result, _, _, d = pilot
    out = d / "out"
    for name in ("distance_vs_frequency.png", "distance_per_gene.png", "distance_along_gene.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, name
        assert f"({name})" in (out / "report.md").read_text()
    strand = json.loads((out / "pilot_summary.json").read_text())["strand_check"]
    assert strand["run"] and strand["passed"] and strand["variants_compared"] > 0
    assert strand["max_abs_difference"] < 1e-9
    recipe = json.loads(pq.read_schema(out / "variants.parquet").metadata[b"neuro_caduceus.recipe"])
    assert recipe["stage"] == "variant_pilot" and len(recipe["gene_list"]) == 3


def test_second_pilot_reuses_the_window_store(pilot):
    """The pilot embeds through the cohort job's window store: a second pilot on the same cohort and model
    embeds nothing new and gives the same distances."""
    from neuro_caduceus.analysis.pilot import run_pilot

    result, cfg, _, d = pilot
    assert result.summary["windows_new"] == result.summary["windows_embedded"]  # a fresh store at first
    again = run_pilot(cfg, d / "out_again", local_flank=100, strand_check=False)
    assert again.summary["windows_new"] == 0
    assert again.variants.equals(result.variants)


def test_cli_names_a_bad_config_key(tmp_path):
    from neuro_caduceus.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "inputs: {vcf: x.vcf.gz, reference_fasta: a.fa, gtf: g.gtf, gene_set: s.yaml}\n"
        "model: {checkpoint: c, window: 256}\noutput: {dir: o}\nmodle: {}\n"
    )
    res = CliRunner().invoke(app, ["pilot", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "modle" in res.output
    assert not Path(tmp_path / "o").exists()
