"""LOGO: planted gene found, null calibrated, Ray == serial, AUC/interval oracles, no leak via the API."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy.stats import binom, t
from sklearn.metrics import roc_auc_score

from neuro_caduceus.analysis.folds import (
    FeatureTransform,
    FoldModel,
    FoldSettings,
    cap_components,
    fit_predict_fold,
    stratified_folds,
)
from neuro_caduceus.analysis.logo import ALL, LogoConfig, corrected_t_interval, holm, rank_auc, run_logo
from neuro_caduceus.analysis.simulate import make_planted_gene_blocks

COVS = ["age", "sex", "PC1", "PC2", "PC3", "batch"]
CAT = ["batch"]
FAST = dict(n_folds=3, n_repeats=2, Cs=(1.0,), parallel=False)  # one C: no inner CV (permutation tests)


@pytest.fixture(scope="module")
def planted():
    return make_planted_gene_blocks(n=240, genes=5, dim=12, planted_gene=1, effect=1.5, seed=0)


def test_planted_gene_ranked_first_with_smallest_permutation_p(planted):
    X, blocks, y, cov = planted
    r = run_logo(X, blocks, y, cov, COVS, LogoConfig(k=16, n_perm=19, seed=0, **FAST), CAT)
    top = r.table.row(0, named=True)
    assert top["gene"] == "GENE2" and top["rank"] == 1
    assert top["ci_low"] > 0.05 and top["p_value"] == pytest.approx(1 / 20), top
    assert r.auc_all > 0.7
    others = r.table.filter(r.table["gene"] != "GENE2")
    assert not others["ci_excludes_zero"].any(), others
    assert (others["p_holm"] > 0.05).all(), others
    # ΔAUC = mean over repeats x folds of per-fold AUC differences (sklearn's AUC on each fold as the oracle)
    diffs = []
    for rep in range(2):
        for f in range(3):
            te = r.fold_of[rep] == f
            s_all, s_without = r.scores[ALL][rep, te], r.scores["GENE2"][rep, te]
            diffs.append(roc_auc_score(y[te], s_all) - roc_auc_score(y[te], s_without))
    assert top["delta_auc"] == pytest.approx(np.mean(diffs), abs=1e-12)
    assert r.null.shape == (19, 5) and np.isfinite(r.null).all()


def test_shuffled_phenotype_per_fold_auc_at_chance_and_no_interval_excludes_zero(planted):
    X, blocks, y, cov = planted
    y_null = np.random.default_rng(0).permutation(y)
    r = run_logo(X, blocks, y_null, cov, COVS, LogoConfig(k=16, n_perm=0, seed=0, **FAST), CAT)
    assert not r.table["ci_excludes_zero"].any(), r.table
    assert abs(r.auc_all - 0.5) < 0.06 and r.auc_all_ci[0] < 0.5 < r.auc_all_ci[1]


@pytest.mark.parametrize("permute", ["phenotype", "block"])
def test_null_type_one_error_within_monte_carlo_bounds(permute):
    """Phenotype independent of every gene: P(p <= 0.05) must be 0.05 (exact permutation test).

    12 simulations x 2 genes, 19 permutations each; the bound is the binomial 99.9% quantile of the rejection
    count, so a calibrated test fails this with probability < 0.001 (an anti-conservative one often).
    """
    sims, rejections, tests = 12, 0, 0
    for rep in range(sims):
        X, blocks, y, cov = make_planted_gene_blocks(n=90, genes=2, dim=3, planted_gene=0, effect=0.0,
                                                     seed=100 + rep)
        cfg = LogoConfig(k=4, n_perm=19, seed=rep, permute=permute, **{**FAST, "n_repeats": 1})
        r = run_logo(X, blocks, y, cov, ["age", "batch"], cfg, CAT)
        rejections += int((r.table["p_value"] <= 0.05).sum())
        tests += r.table.height
    assert rejections <= binom.ppf(0.999, tests, 0.05), (rejections, tests)


def test_ray_tasks_equal_serial(ray_session):
    X, blocks, y, cov = make_planted_gene_blocks(n=90, genes=2, dim=6, planted_gene=0, effect=1.5, seed=3)
    for permute in ("phenotype", "block"):
        cfg = LogoConfig(n_folds=3, n_repeats=2, inner_folds=2, k=6, Cs=(0.01, 1.0), n_perm=2,
                         permute=permute, seed=5, perms_per_task=1 if permute == "block" else 2)
        par = run_logo(X, blocks, y, cov, COVS, cfg, CAT)
        ser = run_logo(X, blocks, y, cov, COVS, LogoConfig(**{**cfg.__dict__, "parallel": False}), CAT)
        assert set(par.scores) == set(ser.scores) and len(ser.scores) == 3  # all genes + each gene left out
        for m in ser.scores:
            np.testing.assert_array_equal(par.scores[m], ser.scores[m])
        np.testing.assert_array_equal(par.null, ser.null)
        assert par.chosen_C == ser.chosen_C
        assert par.table.equals(ser.table)


def test_corrected_t_interval_matches_the_nadeau_bengio_formula():
    d = np.random.default_rng(3).normal(0.02, 0.05, size=(4, 5))  # 4 repeats x 5 folds
    mean, lo, hi = corrected_t_interval(d, n_folds=5, level=0.9)
    J = 20
    se = np.sqrt((1 / J + 1 / 4) * np.var(d.reshape(-1), ddof=1))  # n_test / n_train = 1 / (5 - 1)
    q = t.ppf(0.95, J - 1)
    assert mean == pytest.approx(d.mean())
    assert lo == pytest.approx(mean - q * se) and hi == pytest.approx(mean + q * se)
    naive = t.ppf(0.95, J - 1) * np.std(d, ddof=1) / np.sqrt(J)
    assert hi - mean > 2 * naive  # the overlap correction widens the naive interval a lot


def test_holm_adjustment():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, 0.5])  # 4x0.01, max(3x0.03, .04), 2x0.04=.08->.09


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (4, 50))
    s = rng.integers(0, 5, (4, 50)).astype(float)  # many ties
    expected = [roc_auc_score(y[i], s[i]) for i in range(4)]
    np.testing.assert_allclose(rank_auc(y, s), expected, atol=1e-12)


def test_pca_dims_capped_for_small_training_sets():
    assert cap_components(32, 300, 1000) == 32
    assert cap_components(32, 60, 1000) == 20
    assert cap_components(32, 60, 5) == 5
    assert cap_components(32, 2, 5) == 1


# ---------------------------------------------------------------------------------------------- leakage


def _null_data(rep: int, n: int = 80, d: int = 500):
    rng = np.random.default_rng(100 + rep)
    return rng.normal(size=(n, d)), rng.permutation(np.repeat([0, 1], n // 2))


def _leaky_auc(X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The mistake, written with sklearn/numpy only: PCA, residualization (here: centring on the intercept)
    and a screening of the PCs by their association with y, all fitted on ALL subjects, then CV."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    Z = PCA(n_components=26).fit_transform(X)
    Z = Z - Z.mean(axis=0)  # residualize on an intercept-only design, on all subjects
    Z /= Z.std(axis=0)
    r = np.abs([np.corrcoef(Z[:, j], y)[0, 1] for j in range(Z.shape[1])])
    Z = Z[:, np.argsort(r)[::-1][:10]]
    s = np.empty(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(Z, y):
        s[te] = LogisticRegression(C=1.0).fit(Z[tr], y[tr]).decision_function(Z[te])
    return roc_auc_score(y, s)


def _within_fold_auc(X: np.ndarray, y: np.ndarray, seed: int) -> float:
    s = np.empty(len(y))
    settings = FoldSettings(k=26, Cs=(1.0,), inner_folds=3)
    for tr, te in stratified_folds(y, 5, seed):
        s[te] = fit_predict_fold(X, None, y, tr, te, settings, seed)[0]
    return roc_auc_score(y, s)


def test_fitting_before_cv_inflates_null_auc_but_fold_pipeline_does_not():
    leaky = [_leaky_auc(*_null_data(rep), seed=rep) for rep in range(5)]
    within = [_within_fold_auc(*_null_data(rep), seed=rep) for rep in range(5)]
    assert np.mean(leaky) > 0.6, leaky
    assert np.mean(within) < 0.56, within  # chance level (CV AUC on null data is biased slightly low)
    assert np.mean(leaky) - np.mean(within) > 0.15


def test_api_offers_no_fit_outside_the_training_rows():
    X, y = _null_data(0, n=60, d=40)
    with pytest.raises(RuntimeError, match="before fit"):
        FeatureTransform(5).transform(X, None)
    with pytest.raises(RuntimeError, match="before fit"):
        FoldModel(5, 1.0).decision_function(X, None)
    # the entry points take raw features and fold indices, never a fitted transform or transformed data
    assert list(inspect.signature(run_logo).parameters) == ["X", "blocks", "y", "cov", "covariates", "config",
                                                            "categorical", "groups", "numeric", "scalar"]
    assert list(inspect.signature(fit_predict_fold).parameters) == ["X", "cov", "y", "train", "test",
                                                                    "settings", "seed", "groups"]
    # what held-out rows contain cannot change the fit: scramble half of the test rows (features and
    # labels) and the other test rows' scores stay identical
    tr, te = stratified_folds(y, 3, seed=0)[0]
    settings = FoldSettings(k=5, Cs=(0.1, 1.0), inner_folds=2)
    base, _ = fit_predict_fold(X, None, y, tr, te, settings, seed=0)
    X2, y2 = X.copy(), y.copy()
    half = te[: len(te) // 2]
    X2[half] = np.random.default_rng(9).normal(50, 10, size=X2[half].shape)
    y2[half] = 1 - y2[half]
    moved, _ = fit_predict_fold(X2, None, y2, tr, te, settings, seed=0)
    keep = len(half)
    np.testing.assert_array_equal(base[keep:], moved[keep:])
    assert not np.allclose(base[:keep], moved[:keep])


def test_logo_rejects_bad_inputs(planted):
    X, blocks, y, cov = planted
    with pytest.raises(ValueError, match="0/1"):
        run_logo(X, blocks, y + 1, cov, COVS, LogoConfig(parallel=False), CAT)
    with pytest.raises(ValueError, match=">= 2 gene blocks"):
        run_logo(X, {"all": slice(0, X.shape[1])}, y, cov, COVS, LogoConfig(parallel=False), CAT)
    with pytest.raises(ValueError, match="per class"):
        run_logo(X, blocks, np.r_[np.ones(3, int), np.zeros(len(y) - 3, int)], cov, COVS,
                 LogoConfig(parallel=False), CAT)
    with pytest.raises(ValueError, match=r"\['batch'\] hold \['String'\] values; declare them categorical "
                                         "with --categorical-covariates batch"):
        run_logo(X, blocks, y, cov, COVS, LogoConfig(parallel=False))  # batch is text, not declared


def test_gene_that_only_tracks_a_covariate_is_not_credited_after_residualization():
    X, blocks, _, cov = make_planted_gene_blocks(n=240, genes=5, dim=12, planted_gene=0, effect=0.0, seed=2)
    rng = np.random.default_rng(2)
    age_z = (cov["age"].to_numpy() - 55) / 9
    X[:, blocks["GENE3"]] += 2.0 * age_z[:, None] * rng.normal(size=12)  # GENE3 carries age, nothing else
    y = (rng.random(240) < 1 / (1 + np.exp(-2.0 * age_z))).astype(np.int64)  # the phenotype depends on age
    cfg = LogoConfig(k=16, n_perm=0, seed=0, **FAST)
    naive = run_logo(X, blocks, y, None, None, cfg)
    adjusted = run_logo(X, blocks, y, cov, COVS, cfg, CAT)
    assert naive.table.row(0, named=True)["gene"] == "GENE3" and naive.table["ci_excludes_zero"][0]
    assert not adjusted.table["ci_excludes_zero"].any(), adjusted.table
