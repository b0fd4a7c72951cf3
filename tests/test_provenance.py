"""Provenance: one recipe schema in every artifact of a small end-to-end run; input identities; RANDOM label.

The run also exercises the cohort job's hooks: the RC check stage (manifest and recipe), the per
subject-gene `n_missing` column of the shards and the `max_missing` exclusions (against the VCF counts).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from neuro_caduceus.provenance import (
    PROVENANCE_KEYS,
    RANDOM_LABEL,
    input_identity,
    read_recipe,
    stamp,
    title,
)


def _vcf_counts(vcf: Path, gtf: Path) -> list[dict]:
    from neuro_caduceus.genome.annotation import read_genes
    from neuro_caduceus.genome.genotype_counts import genotype_counts_from_vcf
    from neuro_caduceus.genome.personalize import vcf_samples
    from neuro_caduceus.genome.regions import RegionSpec, build_regions

    regions = build_regions(read_genes(str(gtf)), RegionSpec(mode="gene_body"))
    return genotype_counts_from_vcf(str(vcf), regions, vcf_samples(str(vcf))).to_pylist()


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_session):
    from neuro_caduceus.cohort.config import CohortConfig
    from neuro_caduceus.cohort.job import run_embed_cohort
    from neuro_caduceus.model.config import preset_config
    from neuro_caduceus.model.random_init import random_model
    from neuro_caduceus.synthetic import make_cohort

    d = tmp_path_factory.mktemp("prov")
    c = d / "cohort"
    make_cohort(c, n_samples=80, n_genes=3, seed=2)
    random_model(preset_config("tiny-ps"), seed=0).save_pretrained(d / "ckpt")
    counts = _vcf_counts(c / "cohort.vcf.gz", c / "genes.gtf.gz")
    max_missing = max(r["n_missing"] for r in counts) - 1  # excludes only the worst subject-gene(s)
    cfg = CohortConfig.model_validate({
        "inputs": {"vcf": str(c / "cohort.vcf.gz"), "reference_fasta": str(c / "genome.fa"),
                   "gtf": str(c / "genes.gtf.gz"), "gene_set": str(c / "geneset.yaml")},
        "qc": {"max_missing": max_missing},
        "model": {"checkpoint": str(d / "ckpt"), "window": 1024},
        "rc_check": {"genes": 2, "windows": 1},
        "output": {"dir": str(d / "emb"), "recipe_id": "prov_test_v1"},
    })
    manifest = run_embed_cohort(cfg, quiet=True)
    return d, cfg, manifest


# One fixture per stage, each first used by its own test (so no single test waits for the whole chain).
@pytest.fixture(scope="module")
def stats(run):
    from neuro_caduceus.stats.jobs import run_pca, run_residualize
    from neuro_caduceus.stats.subject_matrix import build_subject_matrix

    d = run[0]
    build_subject_matrix(str(d / "emb"), str(d / "stats"), on_missing="drop")
    run_pca(str(d / "stats"), str(d / "pca"), n_components=8)
    run_residualize(str(d / "pca"), str(d / "cohort" / "covariates.tsv"), str(d / "resid"))
    return d


@pytest.fixture(scope="module")
def analyses(stats):
    from neuro_caduceus.analysis.cca import CCAConfig, cca_from_files
    from neuro_caduceus.analysis.logo import LogoConfig, logo_from_files

    d, c = stats, stats / "cohort"
    logo_from_files(d / "stats" / "matrix", c / "phenotype.tsv", c / "covariates.tsv", d / "logo",
                    config=LogoConfig(n_repeats=2, n_perm=5, n_folds=3, inner_folds=2), categorical=["batch"])
    cca_from_files(d / "resid" / "residuals", c / "brain.parquet", d / "cca",
                   config=CCAConfig(n_perm=5, reduce_dims=4, n_components=2))
    return d


@pytest.fixture(scope="module")
def pilot(run):
    from neuro_caduceus.analysis.pilot import run_pilot

    d, cfg, _ = run
    run_pilot(cfg, d / "pilot", local_flank=50, strand_check=False)
    return d


ARTIFACTS = {
    "embed_cohort": ["emb/shards", "emb/reference.parquet"],
    "subject_matrix": ["stats/matrix", "stats/subject_matrix_summary.json"],
    "pca": ["pca/scores", "pca/pca_model.npz", "pca/pca_summary.json"],
    "residualize": ["resid/residuals", "resid/residualize_summary.json"],
    "logo": ["logo/logo_delta_auc.parquet", "logo/logo_predictions.parquet", "logo/logo_summary.json"],
    "cca": ["cca/cca_correlations.parquet", "cca/cca_null.parquet", "cca/cca_summary.json"],
    "variant_pilot": ["pilot/variants.parquet", "pilot/subjects.parquet", "pilot/pilot_summary.json"],
}


def test_input_identities_are_exact(run, tmp_path):
    d, _, _ = run
    recipe = read_recipe(d / "emb/shards")
    by_path = {Path(i["path"]).name: i for i in recipe["inputs"]}
    vcf = d / "cohort" / "cohort.vcf.gz"
    assert by_path["cohort.vcf.gz"]["sha256"] == hashlib.sha256(vcf.read_bytes()).hexdigest()
    assert by_path["cohort.vcf.gz"]["size"] == vcf.stat().st_size
    ckpt = by_path["ckpt"]
    assert ckpt["kind"] == "folder" and ckpt["files"] == 2 and len(ckpt["listing_sha256"]) == 64
    assert input_identity(tmp_path / "absent")["kind"] == "missing"
    (tmp_path / "f.txt").write_text("x")
    assert input_identity(f"file://{tmp_path / 'f.txt'}")["sha256"] == hashlib.sha256(b"x").hexdigest()


def test_random_label_in_titles_and_lineage():
    assert title("PCA", {"random_init": True}).startswith(f"[{RANDOM_LABEL}]")
    assert title("PCA", {"random_init": False}) == "PCA"
    again = stamp(stamp({"recipe_id": "r", "random_init": True, "stage": "a"}, "b", []), "c", [])
    assert [s["stage"] for s in again["lineage"]] == ["a", "b"] and again["random_init"] is True


def test_cohort_hooks_rc_check_and_missing_counts(run):
    d, cfg, manifest = run
    rc = manifest["rc_check"]
    assert rc["passed"] and rc["enabled"] and len(rc["windows"]) >= 1
    assert read_recipe(d / "emb/shards")["rc_check"] == rc
    assert json.loads((d / "emb" / "_rc_check.json").read_text()) == rc
    subjects = json.loads((d / "emb" / "_cohort.json").read_text())["subjects"]
    counts = _vcf_counts(Path(cfg.inputs.vcf), Path(cfg.inputs.gtf))
    missing = {(r["subject_id"], r["gene_id"]): r["n_missing"] for r in counts}
    excluded = {k for k, n in missing.items() if n > cfg.qc.max_missing}
    assert excluded and manifest["genotypes"]["excluded_subject_genes"] == len(excluded)
    assert manifest["genotypes"]["missing_calls"] == sum(missing.values())
    assert manifest["genotypes"]["unphased_het_calls"] == sum(r["n_unphased_het"] for r in counts) > 0
    assert "unphased het calls" in manifest["genotypes"]["warning"]
    rows = pq.read_table(d / "emb" / "shards").to_pylist()
    assert len(rows) == manifest["rows"] == len(subjects) * 3 - len(excluded)
    for r in rows:
        key = (r["subject_id"], r["gene_id"])
        assert key not in excluded and r["n_missing"] == missing.get(key, 0)


def _check(d: Path, stage: str) -> set[str]:
    keys = set()
    for rel in ARTIFACTS[stage]:
        recipe = read_recipe(d / rel)
        assert set(PROVENANCE_KEYS) <= set(recipe), (rel, set(PROVENANCE_KEYS) - set(recipe))
        assert recipe["stage"] == stage, rel
        assert recipe["recipe_id"] == recipe["embedding_strategy_id"] == "prov_test_v1", rel
        assert recipe["random_init"] is True, rel
        assert set(recipe["versions"]) == {"neuro_caduceus", "torch", "ray", "hail"}, rel
        assert recipe["versions"]["torch"] and recipe["created_utc"].endswith("+00:00"), rel
        assert recipe["inputs"] and all("path" in i and "size" in i for i in recipe["inputs"]), rel
        assert recipe["gene_list"] and recipe["window"] == 1024 and recipe["dtype"] == "float32", rel
        keys |= set(recipe)
    return keys


def test_cohort_shards_provenance(run):
    _check(run[0], "embed_cohort")


def test_stats_stages_provenance(stats):
    for stage in ("subject_matrix", "pca", "residualize"):
        _check(stats, stage)


def test_analyses_provenance_and_random_label(analyses):
    for stage in ("logo", "cca"):
        _check(analyses, stage)
    lineage = [s["stage"] for s in read_recipe(analyses / "cca/cca_summary.json")["lineage"]]
    assert lineage == ["embed_cohort", "subject_matrix", "pca", "residualize"]
    for report in ("logo/logo_report.md", "cca/cca_report.md"):
        assert RANDOM_LABEL in (analyses / report).read_text(), report


def test_pilot_provenance_and_llr_columns(pilot):
    _check(pilot, "variant_pilot")
    variants = pq.read_table(pilot / "pilot" / "variants.parquet")
    assert {"llr", "llr_forward", "llr_reverse", "llr_method"} <= set(variants.column_names)
    assert "snv_masked" in variants.column("llr_method").to_pylist()
    summary = json.loads((pilot / "pilot" / "pilot_summary.json").read_text())
    assert summary["llr_noise_floor"]["random_same_class"]
    assert RANDOM_LABEL in (pilot / "pilot" / "report.md").read_text()


def test_every_artifact_carries_the_same_keys(run, stats, analyses, pilot):
    """Beyond PROVENANCE_KEYS: the embedding recipe's keys too, identical in every artifact."""
    shard_keys = set(read_recipe(run[0] / "emb/shards"))
    for stage in ARTIFACTS:
        for rel in ARTIFACTS[stage]:
            extra = {"lineage", "local_flank", "llr_definition", "block_scaling"}  # stage additions
            assert set(read_recipe(run[0] / rel)) - extra == shard_keys - extra, rel
