"""compare-encoders: the measures against direct formulas, and the report of two real small cohort jobs.

Oracles: CKA by the HSIC form tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)) on Gram matrices of the subjects
(the code uses the feature-space form); the participation ratio and total variance from numpy's eigenvalues
of np.cov; carriers read from the VCF with pysam (a subject carries a gene's variant if a called allele of a
record in the gene's region is not the reference); the embeddings read from the shards with pyarrow; LOGO and
CCA values read back from the per-encoder folders the analyses wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pysam
import pytest
from typer.testing import CliRunner

from neuro_caduceus.analysis.representation import (
    carrier_shift,
    cka_permutation_test,
    linear_cka,
    participation_ratio,
    total_variance,
)
from neuro_caduceus.cli import app
from neuro_caduceus.io import RECIPE_KEY

runner = CliRunner()


def hsic_cka(X: np.ndarray, Y: np.ndarray) -> float:
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T
    return float(np.trace(K @ H @ L @ H) / np.sqrt(np.trace(K @ H @ K @ H) * np.trace(L @ H @ L @ H)))


def eigen_participation(X: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(np.atleast_2d(np.cov(X.T)))
    return float(lam.sum() ** 2 / (lam**2).sum())


@pytest.mark.parametrize("n, p, q", [(20, 5, 7), (6, 10, 3)])  # features < subjects, and the Gram path
def test_linear_cka_matches_the_hsic_formula_and_its_invariances(n, p, q):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(n, p)), rng.normal(size=(n, q))
    assert linear_cka(X, Y) == pytest.approx(hsic_cka(X, Y), rel=1e-10)
    Q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    assert linear_cka(X, 3.0 * X @ Q + 5.0) == pytest.approx(1.0, abs=1e-12)  # rotation, scale, shift
    assert np.isnan(linear_cka(np.ones((n, p)), Y))  # a block that does not vary has no geometry


def test_permutation_baseline_is_cka_of_shuffled_rows():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(15, 4))
    Y = X @ rng.normal(size=(4, 6)) + 0.1 * rng.normal(size=(15, 6))
    t = cka_permutation_test(X, Y, 30, np.random.default_rng(7))
    replay = np.random.default_rng(7)
    null = np.array([hsic_cka(X, Y[replay.permutation(15)]) for _ in range(30)])
    assert t.cka == pytest.approx(hsic_cka(X, Y), rel=1e-10)
    assert t.null_mean == pytest.approx(null.mean(), rel=1e-9)
    assert t.null_q95 == pytest.approx(np.quantile(null, 0.95), rel=1e-9)
    assert t.p_value == pytest.approx((1 + (null >= t.cka).sum()) / 31)
    assert t.p_value < 0.1 < t.cka - t.null_q95


@pytest.mark.parametrize("n, d", [(30, 6), (5, 12)])
def test_spread_from_numpy_eigenvalues(n, d):
    X = np.random.default_rng(3).normal(size=(n, d)) * np.linspace(0.1, 3, d)
    assert participation_ratio(X) == pytest.approx(eigen_participation(X), rel=1e-9)
    assert total_variance(X) == pytest.approx(np.trace(np.cov(X.T)), rel=1e-12)
    assert participation_ratio(np.ones((n, d))) != participation_ratio(np.ones((n, d)))  # NaN


def test_carrier_shift_by_direct_loops():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(12, 3)) + 10
    mask = np.arange(12) % 3 == 0
    c = carrier_shift(X, mask)
    mean0, meanc, mean = X[~mask].mean(0), X[mask].mean(0), X.mean(0)
    shifts = [np.sqrt(((X[i] - mean0) ** 2).sum()) / np.sqrt((mean0**2).sum()) for i in range(12) if mask[i]]
    between = mask.sum() * (~mask).sum() / 12 * ((meanc - mean0) ** 2).sum()
    assert (c.n_carriers, c.n_noncarriers) == (4, 8)
    assert c.relative_shift == pytest.approx(np.mean(shifts), rel=1e-12)
    assert c.eta_squared == pytest.approx(between / ((X - mean) ** 2).sum(), rel=1e-12)
    assert np.isnan(carrier_shift(X, np.ones(12, bool)).eta_squared)


# ------------------------------------------------------------------------------- two real small cohort jobs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, ray_session) -> SimpleNamespace:
    """One small cohort embedded by two random tiny encoders (Caduceus PS seed 0, PH seed 1), same config."""
    from neuro_caduceus.cohort.config import CohortConfig
    from neuro_caduceus.cohort.job import run_embed_cohort
    from neuro_caduceus.model.config import preset_config
    from neuro_caduceus.model.random_init import random_model
    from neuro_caduceus.synthetic import make_cohort

    d = tmp_path_factory.mktemp("compare")
    c = d / "cohort"
    make_cohort(c, n_samples=16, n_genes=2, seed=5, brain_dim=4)
    configs = []
    for name, preset, seed in (("ps", "tiny-ps", 0), ("ph", "tiny-ph", 1)):
        random_model(preset_config(preset), seed=seed).save_pretrained(d / f"ckpt_{name}")
        cfg = CohortConfig.model_validate({
            "inputs": {"vcf": str(c / "cohort.vcf.gz"), "reference_fasta": str(c / "genome.fa"),
                       "gtf": str(c / "genes.gtf.gz"), "gene_set": str(c / "geneset.yaml")},
            "model": {"checkpoint": str(d / f"ckpt_{name}"), "device": "cpu", "window": 512},
            "compute": {"actors_min": 1, "actors_max": 1, "cpus_per_actor": 1, "cpus_per_task": 0.5},
            "rc_check": {"enabled": False},
            "output": {"dir": str(d / f"emb_{name}")},
        })
        run_embed_cohort(cfg, quiet=True)
        configs.append(cfg)
    return SimpleNamespace(dir=d, cohort=c, folders=[d / "emb_ps", d / "emb_ph"], configs=configs)


@pytest.fixture(scope="module")
def compared(jobs) -> SimpleNamespace:
    from neuro_caduceus.analysis.cca import CCAConfig
    from neuro_caduceus.analysis.compare_encoders import CompareConfig, Downstream, run_compare_encoders
    from neuro_caduceus.analysis.logo import LogoConfig

    c = jobs.cohort
    downstream = Downstream(c / "phenotype.tsv", c / "brain.parquet", c / "covariates.tsv",
                            covariate_columns=["age", "sex"], numeric=["age"],
                            logo=LogoConfig(n_folds=3, inner_folds=2, n_repeats=1, n_perm=0, parallel=False),
                            cca=CCAConfig(n_folds=3, n_perm=3, reduce_dims=3, n_components=2, parallel=False,
                                          numeric=("age",)))
    out = jobs.dir / "compare"
    result = run_compare_encoders(jobs.folders, out, CompareConfig(n_perm=20, seed=3), downstream)
    return SimpleNamespace(result=result, out=out)


def _shard_blocks(folder: Path) -> dict[str, np.ndarray]:
    """gene_name -> subjects x d, rows in subject order, read straight from the Parquet shards."""
    t = pq.read_table(folder / "shards").sort_by([("gene_name", "ascending"), ("subject_id", "ascending")])
    names = t["gene_name"].to_pylist()
    E = np.stack(t["embedding"].to_numpy(zero_copy_only=False)).astype(np.float64)
    return {g: E[[i for i, n in enumerate(names) if n == g]] for g in sorted(set(names))}


def _vcf_carriers(cfg) -> dict[str, set[str]]:
    from neuro_caduceus.cohort.job import build_units

    out = {}
    with pysam.VariantFile(cfg.inputs.vcf) as f:
        for unit in build_units(cfg):
            lo = min(a for a, _ in unit.region.segments)
            hi = max(b for _, b in unit.region.segments)
            out[unit.gene_name] = {s for rec in f.fetch(unit.region.chrom, lo, hi)
                                   for s, call in rec.samples.items()
                                   if any(a is not None and a > 0 for a in (call["GT"] or ()))}
    return out


def test_report_of_two_real_jobs_against_direct_computations(jobs, compared):
    r, out = compared.result, compared.out
    subjects = sorted(json.loads((jobs.folders[0] / "_cohort.json").read_text())["subjects"])
    assert r.jobs[0].features.subject_ids == subjects  # the shards' order: the oracle's row order holds
    blocks = [_shard_blocks(f) for f in jobs.folders]
    genes = sorted(blocks[0])
    sim = {row["gene"]: row for row in r.similarity.to_dicts()}
    for g in genes:
        assert sim[g]["cka"] == pytest.approx(hsic_cka(blocks[0][g], blocks[1][g]), rel=1e-6)
    whole = [np.hstack([b[g] for g in r.jobs[0].features.blocks]) for b in blocks]
    assert sim["all genes"]["cka"] == pytest.approx(hsic_cka(*whole), rel=1e-6)
    assert all(row["n_perm"] == 20 and 0 < row["p_value"] <= 1 for row in sim.values())

    carriers = _vcf_carriers(jobs.configs[0])
    per = {(row["encoder"], row["gene"]): row for row in r.per_encoder.to_dicts()}
    for job, b in zip(r.jobs, blocks, strict=True):
        for g in genes:
            row = per[(job.label, g)]
            assert row["effective_dim"] == pytest.approx(eigen_participation(b[g]), rel=1e-6)
            mask = np.array([s in carriers[g] for s in subjects])
            assert (row["n_carriers"], row["n_noncarriers"]) == (mask.sum(), (~mask).sum())
            expect = carrier_shift(b[g], mask)
            assert row["eta_squared"] == pytest.approx(expect.eta_squared, rel=1e-6, nan_ok=True)

    manifests = [json.loads((f / "manifest.json").read_text()) for f in jobs.folders]
    for cost, m in zip(r.cost.to_dicts(), manifests, strict=True):
        assert cost["tokens_embedded"] == sum(run["tokens_embedded"] for run in m["runs"]) > 0
        assert cost["device"] == "cpu" and cost["cpu_seconds"] == pytest.approx(m["runs"][0]["model_seconds"])
        assert cost["tokens_per_model_second"] == pytest.approx(m["runs"][0]["tokens_embedded"]
                                                                / m["runs"][0]["model_seconds"])

    for job in r.jobs:  # LOGO and CCA side by side = what each encoder's own analysis folder holds
        logo = pl.read_csv(out / f"logo_{job.label}" / "logo_delta_auc.csv").sort("gene")
        mine = r.logo.filter(pl.col("encoder") == job.label).sort("gene")
        np.testing.assert_allclose(mine["delta_auc"].to_numpy(), logo["delta_auc"].to_numpy())
        cca = pl.read_csv(out / f"cca_{job.label}" / "cca_correlations.csv")
        mine = r.cca.filter(pl.col("encoder") == job.label)
        np.testing.assert_allclose(mine["heldout_r"].to_numpy(), cca["heldout_r"].to_numpy())
    assert r.extra["logo"]["same_folds"] is True

    recipe = json.loads(pq.read_schema(out / "compare_similarity.parquet").metadata[RECIPE_KEY])
    assert recipe["stage"] == "compare_encoders" and recipe["random_init"] is True
    assert [e["checkpoint_sha256"] for e in recipe["encoders"]] == [m["checkpoint_sha256"] for m in manifests]
    assert all(e["family"].startswith("caduceus") for e in recipe["encoders"])
    report = (out / "compare_report.md").read_text()
    assert "RANDOM WEIGHTS" in report and all(j.label in report for j in r.jobs)
    for name in ("similarity", "encoders", "cost", "logo", "cca"):
        assert (out / f"compare_{name}.csv").stat().st_size and (out / f"compare_{name}.parquet").is_file()
    assert (out / "compare_cka.png").stat().st_size and (out / "compare_summary.json").is_file()


def _drop_gene(src: Path, dst: Path) -> None:
    """A copy of a job folder whose shards cover one gene fewer (recipe gene list rewritten to match)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("window_store"))
    shards = sorted((dst / "shards").glob("*.parquet"))
    shards[-1].unlink()
    for f in shards[:-1]:
        t = pq.read_table(f)
        recipe = json.loads(t.schema.metadata[RECIPE_KEY])
        recipe["gene_list"], recipe["gene_names"] = recipe["gene_list"][:-1], recipe["gene_names"][:-1]
        pq.write_table(t.replace_schema_metadata({RECIPE_KEY: json.dumps(recipe).encode()}), f)


def test_refuses_jobs_that_are_not_like_for_like(jobs, tmp_path):
    a, b = jobs.folders
    fewer = tmp_path / "fewer_genes"
    _drop_gene(b, fewer)
    other = tmp_path / "other_subjects"
    shutil.copytree(b, other, ignore=shutil.ignore_patterns("window_store"))
    cohort = json.loads((other / "_cohort.json").read_text())
    (other / "_cohort.json").write_text(json.dumps({**cohort, "subjects": cohort["subjects"][:-1]}))
    cases = [([a, fewer], f"error: {fewer}: different gene list from {a}"),
             ([a, other], f"error: {other}: different subjects from {a}"),
             ([a, a], f"error: {a}: the same encoder as {a}")]
    for folders, message in cases:
        out = tmp_path / "out"
        result = runner.invoke(app, ["compare-encoders", *map(str, folders), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
        assert not out.exists()
