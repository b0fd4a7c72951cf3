"""Gene-level inference: the per-gene score test (vs statsmodels), per-gene block reduction (vs
scikit-learn), the family-wise max-statistic p, covariate declarations, subject restriction, genetic PCs
as covariates, and the `deviation` shard column through the readers and the `gene-test` command."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from neuro_caduceus.analysis.features import read_features
from neuro_caduceus.analysis.folds import FeatureTransform, covariate_spec, declared_covariates
from neuro_caduceus.analysis.gene_blocks import BlockLayout, BlockReducer
from neuro_caduceus.analysis.gene_test import (
    GeneTestConfig,
    benjamini_hochberg,
    run_gene_test,
)
from neuro_caduceus.analysis.logo import LogoConfig, max_statistic_p, run_logo, smallest_p
from neuro_caduceus.analysis.simulate import make_planted_gene_blocks, make_stratified_cohort
from neuro_caduceus.analysis.subjects import SubjectFilter
from neuro_caduceus.cli import app
from neuro_caduceus.stats.residualize import Residualizer

COVS = ["age", "sex", "PC1", "PC2", "PC3", "batch"]


def write_shards(folder, subjects, genes, E, deviation=None) -> None:
    """Embedding shards as the cohort job writes them (one file per gene), optionally with `deviation`."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = json.dumps({"recipe_id": "t", "gene_list": genes, "gene_names": genes})
    for j, g in enumerate(genes):
        cols = {"subject_id": subjects, "gene_id": [g] * len(subjects), "gene_name": [g] * len(subjects),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(E[:, j].reshape(-1).astype(np.float32)), E.shape[2])}
        if deviation is not None:
            cols["deviation"] = pa.array(deviation[:, j].astype(np.float32))
        t = pa.table(cols).replace_schema_metadata({"neuro_caduceus.recipe": recipe})
        pq.write_table(t, folder / f"{g}.parquet")


def _null_design(cov):
    r = Residualizer(covariate_spec(cov, COVS, ["batch"])).learn_levels(cov)
    return sm.add_constant(r.design(cov))


def test_score_test_matches_statsmodels_and_adjustments_match_multipletests():
    X, blocks, y, cov = make_planted_gene_blocks(n=200, genes=5, dim=6, planted_gene=3, effect=1.0, seed=5)
    scalar = np.zeros(X.shape[1], dtype=bool)
    scalar[blocks["GENE2"].stop - 1] = True  # GENE2's last column is a per-gene scalar, kept as is
    r = run_gene_test(X, blocks, y, cov, COVS, GeneTestConfig(k_per_gene=2), ["batch"], scalar=scalar)
    t = {row["gene"]: row for row in r.table.to_dicts()}
    null = sm.GLM(y, _null_design(cov), family=sm.families.Binomial()).fit()
    for g, sl in blocks.items():
        block = X[:, sl]
        keep = block[:, -1:] if g == "GENE2" else block[:, :0]
        pcs = block[:, :-1] if g == "GENE2" else block
        Xc = pcs - pcs.mean(axis=0)
        G = np.hstack([Xc @ np.linalg.svd(Xc, full_matrices=False)[2][:2].T, keep])
        st = null.score_test(exog_extra=G)
        assert t[g]["df"] == G.shape[1]
        np.testing.assert_allclose(t[g]["score"], float(np.ravel(st[0])[0]), rtol=1e-6)
        np.testing.assert_allclose(t[g]["p_value"], float(np.ravel(st[1])[0]), rtol=1e-5)
    assert r.table["gene"][0] == "GENE4" and r.table["significant_fwer"][0]
    p = r.table["p_value"].to_numpy()
    np.testing.assert_allclose(r.table["p_holm"], multipletests(p, method="holm")[1])
    np.testing.assert_allclose(r.table["q_bh"], multipletests(p, method="fdr_bh")[1])
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5])),
                               multipletests([0.01, 0.04, 0.03, 0.5], method="fdr_bh")[1])


def test_block_reducer_is_a_pca_per_gene_fitted_on_the_rows_given():
    from sklearn.decomposition import PCA as SkPCA

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 9)) @ rng.normal(size=(9, 9))
    blocks = {"A": slice(0, 4), "B": slice(4, 9)}
    scalar = np.zeros(9, dtype=bool)
    scalar[8] = True
    red = BlockReducer(BlockLayout.from_blocks(blocks, 9, scalar), k=2).fit(X[:30])
    Z = red.transform(X[30:])
    assert Z.shape == (10, 2 + 2 + 1)
    for cols, out in ((slice(0, 4), slice(0, 2)), (slice(4, 8), slice(2, 4))):
        ref = SkPCA(2).fit(X[:30, cols]).transform(X[30:, cols])
        np.testing.assert_allclose(np.abs(Z[:, out]), np.abs(ref), atol=1e-8)
    np.testing.assert_array_equal(Z[:, 4], X[30:, 8])
    layout = BlockLayout.from_blocks(blocks, 9, scalar).take(np.arange(4, 9))  # every gene but A
    assert len(layout.genes()) == 1 and layout.scalar.tolist() == [False] * 4 + [True]


def test_max_statistic_p_is_family_wise_and_reaches_one_over_n_perm():
    null = np.array([[0.01, 0.05, -0.02], [0.08, 0.00, 0.01], [0.02, 0.03, 0.04], [-0.01, 0.02, 0.00]])
    obs = np.array([0.06, 0.03, -0.05])
    top = null.max(axis=1)  # [0.05, 0.08, 0.04, 0.02]
    expected = [(1 + (top >= o).sum()) / 5 for o in obs]
    np.testing.assert_allclose(max_statistic_p(obs, null), expected)
    assert smallest_p(99, 600) == {"p_fwer": 0.01, "p_holm": 1.0}
    assert smallest_p(999, 20)["p_holm"] == pytest.approx(0.02)


def test_undeclared_integer_codes_are_an_error_naming_both_ways_out():
    rng = np.random.default_rng(0)
    n = 60
    cov = pl.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "age": rng.integers(40, 80, n),
                        "sex": rng.integers(0, 2, n), "centre": rng.choice([11, 12, 15, 20, 31], n)})
    with pytest.raises(ValueError, match=r"\['centre'\] are integers with few distinct values \[5\].*"
                                         r"--categorical-covariates centre.*--numeric-covariates centre"):
        declared_covariates(cov, ["age", "sex", "centre"])
    spec = declared_covariates(cov, ["age", "sex", "centre"], numeric=["centre"])  # age: 40 values, sex: 2
    assert spec.numeric == ["age", "sex", "centre"]
    assert declared_covariates(cov, ["age", "centre"], ["centre"]).categorical == ["centre"]
    with pytest.raises(ValueError, match="both categorical and numeric"):
        declared_covariates(cov, ["centre"], ["centre"], ["centre"])
    with pytest.raises(ValueError, match=r"--numeric-covariates \['site'\] are not among"):
        declared_covariates(cov, ["age"], numeric=["site"])
    X, blocks, y, cov2 = make_planted_gene_blocks(n=60, genes=2, dim=3, seed=0)
    cov2 = cov2.with_columns(pl.Series("centre", cov["centre"]))
    with pytest.raises(ValueError, match="--numeric-covariates centre"):  # before any fold is fitted
        run_logo(X, blocks, y, cov2, [*COVS, "centre"], LogoConfig(parallel=False), ["batch"])


def test_deviation_column_is_read_as_one_scalar_column_per_gene(tmp_path):
    rng = np.random.default_rng(2)
    subjects = [f"S{i}" for i in range(6)]
    E, D = rng.normal(size=(6, 2, 3)), rng.random((6, 2))
    write_shards(tmp_path / "job" / "shards", subjects, ["A", "B"], E, D)
    both = read_features(tmp_path / "job", "both")
    assert both.kind == "both" and both.blocks == {"A": slice(0, 4), "B": slice(4, 8)}
    np.testing.assert_allclose(both.X[:, 4:7], E[:, 1].astype(np.float32))
    np.testing.assert_allclose(both.X[:, 7], D[:, 1].astype(np.float32))
    assert both.scalar_columns.tolist() == [False] * 3 + [True] + [False] * 3 + [True]
    dev = read_features(tmp_path / "job", "deviation")
    np.testing.assert_allclose(dev.X, D.astype(np.float32))
    assert read_features(tmp_path / "job", "auto").kind == "both"
    assert read_features(tmp_path / "job", "pcs").X.shape == (6, 6)
    write_shards(tmp_path / "old" / "shards", subjects, ["A", "B"], E)  # shards without the column
    assert read_features(tmp_path / "old", "auto").kind == "pcs"
    with pytest.raises(ValueError, match="--features-kind deviation needs a `deviation` column"):
        read_features(tmp_path / "old", "deviation")
    with pytest.raises(ValueError, match="must be one of"):
        read_features(tmp_path / "job", "burden")


def test_subject_filter_keeps_and_counts(tmp_path):
    cov = pl.DataFrame({"subject_id": ["a", "b", "c", "d"], "ancestry": ["EUR", "AFR", "EUR", "SAS"]})
    pl.DataFrame({"subject_id": ["a", "b", "d"]}).write_csv(tmp_path / "keep.tsv", separator="\t")
    order = ["d", "c", "b", "a"]
    kept, info = SubjectFilter(keep_where="ancestry=EUR,SAS").apply(order, cov)
    assert kept == ["d", "c", "a"] and info["removed"] == 1 and info["before"] == 4
    kept, info = SubjectFilter(tmp_path / "keep.tsv", "ancestry=EUR").apply(order, cov)
    assert kept == ["a"] and info == {"restriction": f"subjects listed in {tmp_path / 'keep.tsv'} and "
                                                     "covariate ancestry=EUR", "before": 4, "removed": 3,
                                      "after": 1}
    assert SubjectFilter().apply(order, cov) == (order, None)
    for bad, msg in (("ancestry", "COLUMN=VALUE"), ("origin=EUR", "column 'origin' is not in"),
                     ("ancestry=AMR", "no subject passes")):
        with pytest.raises(ValueError, match=msg):
            SubjectFilter(keep_where=bad).apply(order, cov)


def test_genetic_pcs_are_fitted_on_training_rows_and_regressed_out():
    X, blocks, y, cov, _ = make_stratified_cohort(n=400, seed=0)
    tr = np.arange(150)
    layout = BlockLayout.from_blocks(blocks, X.shape[1])
    t = FeatureTransform(3, layout=layout, genetic_pcs=2).fit(X[tr], None)
    Z = t.transform(X[tr], None)
    Xc = X[tr] - X[tr].mean(axis=0)
    S = Xc @ np.linalg.svd(Xc, full_matrices=False)[2][:2].T  # the training rows' top-2 PCs (numpy)
    assert np.abs(S.T @ Z).max() < 1e-6 * len(tr)  # residualized on them
    assert Z.shape == (150, 3 * len(blocks))
    covs = ["age", "sex", "PC1", "PC2", "PC3", "batch"]
    naive = run_gene_test(X, blocks, y, cov, covs, GeneTestConfig(), ["batch"]).table
    adjusted = run_gene_test(X, blocks, y, cov, covs, GeneTestConfig(genetic_pcs=2), ["batch"]).table
    assert naive.filter(pl.col("gene") == "PRIVATE")["p_value"][0] < 1e-4  # stratification credited
    assert adjusted.filter(pl.col("gene") == "PRIVATE")["p_value"][0] > 0.05


def test_logo_keeps_gene_blocks_and_sees_a_planted_deviation():
    """Per-gene reduction with a scalar deviation column: the gene whose deviation drives the phenotype
    ranks first; the family-wise p is computed from the same permutations as the per-gene p."""
    rng = np.random.default_rng(3)
    n, genes, dim = 120, 4, 3
    X = rng.normal(size=(n, genes * (dim + 1)))
    blocks = {f"G{g}": slice(g * (dim + 1), (g + 1) * (dim + 1)) for g in range(genes)}
    scalar = np.tile([False] * dim + [True], genes)
    dev = X[:, blocks["G2"].stop - 1]
    y = (rng.random(n) < 1 / (1 + np.exp(-2.5 * dev))).astype(np.int64)
    cfg = LogoConfig(n_folds=3, n_repeats=1, Cs=(1.0,), n_perm=4, k_per_gene=2, parallel=False)
    r = run_logo(X, blocks, y, config=cfg, scalar=scalar)
    assert r.table["gene"][0] == "G2" and r.k_used == 2
    np.testing.assert_allclose(r.table.sort("gene")["p_fwer"],
                               max_statistic_p(r.table.sort("gene")["delta_auc"].to_numpy(), r.null))
    assert (r.table["p_fwer"] >= r.table["p_value"] - 1e-12).all()


def test_gene_test_command_on_shards_with_a_restriction(tmp_path):
    rng = np.random.default_rng(4)
    n, genes = 160, ["SYN1", "SYN2", "SYN3"]
    subjects = [f"S{i:03d}" for i in range(n)]
    E, D = rng.normal(size=(n, 3, 4)), rng.gamma(2.0, 1.0, size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * (D[:, 1] - 2)))).astype(np.int64)
    write_shards(tmp_path / "job" / "shards", subjects, genes, E, D)
    ancestry = np.where(np.arange(n) < 140, "EUR", "AFR")
    pl.DataFrame({"subject_id": subjects, "mdd": y, "age": rng.normal(55, 8, n), "ancestry": ancestry,
                  "batch": rng.choice([1, 2, 3], n)}).write_csv(tmp_path / "cov.tsv", separator="\t")
    out = tmp_path / "out"
    base = ["gene-test", "--features", str(tmp_path / "job"), "--covariates", str(tmp_path / "cov.tsv"),
            "--out", str(out)]
    bad = [*base[:-1], str(tmp_path / "bad"), "--covariate-columns", "age,batch"]
    res = CliRunner().invoke(app, bad)
    assert res.exit_code == 2 and "--numeric-covariates batch" in res.output  # batch 1/2/3 undeclared
    res = CliRunner().invoke(app, [*base, "--categorical-covariates", "batch", "--keep-where",
                                   "ancestry=EUR"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "gene_test_summary.json").read_text())
    assert summary["n"] == 140 and summary["restriction"]["removed"] == 20
    assert summary["feature_kind"] == "both" and summary["covariates"] == ["age", "batch"]
    assert "kept 140 of 160 matched subjects (20 removed)" in (out / "gene_test_report.md").read_text()
    table = pl.read_parquet(out / "gene_test_results.parquet")
    assert table["gene"][0] == "SYN2" and table["p_holm"][0] < 0.05
    cov = pl.read_csv(tmp_path / "cov.tsv", separator="\t")[:140]
    fm = read_features(tmp_path / "job", "both")
    direct = run_gene_test(fm.X[:140], fm.blocks, y[:140], cov, ["age", "batch"], GeneTestConfig(),
                           ["batch"], scalar=fm.scalar_columns)
    assert table.equals(direct.table)
    for name in ("gene_test_results.csv", "gene_test_qq.png"):
        assert (out / name).stat().st_size > 0


def test_cca_reads_the_deviation_and_applies_the_restriction(tmp_path):
    from neuro_caduceus.analysis.cca import CCAConfig, cca_from_files

    rng = np.random.default_rng(5)
    n, genes = 60, ["A", "B", "C"]
    subjects = [f"S{i:02d}" for i in range(n)]
    D = rng.gamma(2.0, 1.0, size=(n, 3))
    write_shards(tmp_path / "job" / "shards", subjects, genes, rng.normal(size=(n, 3, 2)), D)
    brain = np.column_stack([D[:, 0] + 0.1 * rng.normal(size=n), rng.normal(size=(n, 2))])
    pq.write_table(pa.table({"subject_id": subjects, "features": pa.FixedSizeListArray.from_arrays(
        pa.array(brain.reshape(-1)), 3)}), tmp_path / "brain.parquet")
    pl.DataFrame({"subject_id": subjects, "site": ["x"] * 50 + ["y"] * 10}).write_csv(
        tmp_path / "cov.tsv", separator="\t")
    cfg = CCAConfig(n_perm=0, reduce_dims=3, n_components=1, parallel=False)
    r = cca_from_files(tmp_path / "job", tmp_path / "brain.parquet", tmp_path / "out", cfg,
                       covariates=tmp_path / "cov.tsv", feature_kind="deviation",
                       subject_filter=SubjectFilter(keep_where="site=x"))
    assert r.n == 50 and r.extra["restriction"]["removed"] == 10 and r.extra["covariates"] == []
    assert r.dims["genetic_in"] == 3 and r.table["heldout_r"][0] > 0.9  # brain 1 tracks gene A's deviation
    summary = json.loads((tmp_path / "out" / "cca_summary.json").read_text())
    assert summary["feature_kind"] == "deviation"
