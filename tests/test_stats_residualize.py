"""Residualizer against numpy.linalg.lstsq on an explicitly built design (the oracle), fold use, bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import covariates, oracle_design

from neuro_caduceus.stats.residualize import CovariateSpec, Residualizer


def features(cov: pl.DataFrame, q: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = oracle_design(cov)
    return X @ rng.normal(size=(X.shape[1], q)) + rng.normal(size=(cov.height, q)) + 100.0


def test_residuals_equal_lstsq_and_r2():
    cov = covariates(300)
    Y = features(cov, 6)
    res = Residualizer().fit(Y, cov)
    X = oracle_design(cov)
    beta = np.linalg.lstsq(X, Y, rcond=None)[0]
    want = Y - X @ beta
    np.testing.assert_allclose(res.transform(Y, cov), want, atol=1e-8)
    np.testing.assert_allclose(res.coef_, beta, atol=1e-8)
    r2 = 1 - (want**2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(res.r2_, r2, atol=1e-10)
    assert res.design_columns_[-2:] == ["batch=b1", "batch=b2"]


def test_fold_aware_fit_on_train_apply_to_test():
    cov = covariates(240, seed=2)
    Y = features(cov, 4, seed=3)
    train, test = np.arange(180), np.arange(180, 240)
    res = Residualizer().fit(Y[train], cov[train])
    X = oracle_design(cov)
    beta = np.linalg.lstsq(X[train], Y[train], rcond=None)[0]
    np.testing.assert_allclose(res.transform(Y[test], cov[test]), Y[test] - X[test] @ beta, atol=1e-8)


def test_explicit_reference_level_and_ukb_template():
    cov = covariates(120, seed=4)
    Y = features(cov, 2)
    res = Residualizer(CovariateSpec(reference_levels={"batch": "b2"})).fit(Y, cov)
    assert res.design_columns_[-2:] == ["batch=b0", "batch=b1"]
    X = oracle_design(cov, ref="b2")
    want = Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(res.transform(Y, cov), want, atol=1e-8)
    ukb = CovariateSpec.ukb()
    assert ukb.subject_id == "eid" and ukb.numeric[:2] == ["21022-0.0", "31-0.0"]
    assert ukb.categorical == ["22000-0.0"] and ukb.numeric[-1] == "22009-0.10"


def test_unseen_level_errors_or_maps_to_reference():
    cov = covariates(90, seed=5, batches=("b0", "b1"))
    Y = features(cov, 2)
    res = Residualizer().fit(Y, cov)
    new = cov.head(5).with_columns(pl.lit("b9").alias("batch"))
    with pytest.raises(ValueError, match=r"levels \['b9'\] not seen when fitting"):
        res.transform(Y[:5], new)
    lenient = Residualizer(CovariateSpec(unseen_levels="reference")).fit(Y, cov)
    as_ref = cov.head(5).with_columns(pl.lit("b0").alias("batch"))
    np.testing.assert_allclose(lenient.transform(Y[:5], new), lenient.transform(Y[:5], as_ref))


def test_rank_deficient_design_names_columns():
    cov = covariates(100, seed=6).with_columns((pl.col("PC1") * 2).alias("PC2"))
    with pytest.raises(ValueError, match=r"rank-deficient covariate design: columns \['PC1', 'PC2'\]"):
        Residualizer().fit(features(covariates(100, seed=6), 2), cov)
    const = covariates(100, seed=6).with_columns(pl.lit(1).alias("sex"))
    with pytest.raises(ValueError, match=r"\['sex'\] are constant"):
        Residualizer().fit(features(covariates(100, seed=6), 2), const)


def test_bad_covariate_input_is_explained():
    cov = covariates(50)
    Y = features(cov, 2)
    with pytest.raises(ValueError, match=r"covariate columns \['PC10'\] not in the covariates table"):
        Residualizer().fit(Y, cov.drop("PC10"))
    with pytest.raises(ValueError, match=r"1 subject\(s\) have missing covariate values \(e.g. \['S00003'\]"):
        Residualizer().fit(Y, cov.with_columns(pl.when(pl.col("subject_id") == "S00003").then(None)
                                               .otherwise(pl.col("age")).alias("age")))
    with pytest.raises(ValueError, match="sex as 0/1"):
        Residualizer().fit(Y, cov.with_columns(pl.col("sex").cast(str)))
    with pytest.raises(ValueError, match="extra"):
        CovariateSpec(numerics=["age"])
    with pytest.raises(ValueError, match="features have 49 rows but covariates 50"):
        Residualizer().fit(Y[:49], cov)


def test_spec_from_yaml(tmp_path):
    (tmp_path / "m.yaml").write_text("covariates:\n  subject_id: eid\n  numeric: [age]\n  categorical: []\n")
    spec = CovariateSpec.from_yaml(tmp_path / "m.yaml")
    assert spec.subject_id == "eid" and spec.columns == ["age"]
    (tmp_path / "bad.yaml").write_text("numeric: [age]\nreference: {batch: b1}\n")
    with pytest.raises(ValueError, match=r"(?s)bad.yaml: invalid covariate mapping.*reference.*Extra inputs"):
        CovariateSpec.from_yaml(tmp_path / "bad.yaml")


def test_declared_categorical_integer_codes_sorted_numerically():
    spec = CovariateSpec(numeric=["age", "batch"], categorical=[]).declare_categorical(["batch"])
    assert spec.numeric == ["age"] and spec.categorical == ["batch"]
    cov = pl.DataFrame({"age": [50.0, 61.0, 70.0, 44.0, 58.0, 66.0], "batch": [10, 2, 9, 2, 10, 9]})
    res = Residualizer(spec).learn_levels(cov)
    assert res.levels_["batch"] == ["2", "9", "10"]  # numeric order: reference 2 (string order would say 10)
    assert res.design_columns_ == ["age", "batch=9", "batch=10"]
    np.testing.assert_array_equal(res.design(cov)[:, 1:], [[0, 1], [0, 0], [1, 0], [0, 0], [0, 1], [1, 0]])
    bad = CovariateSpec(numeric=["age", "centre"], categorical=[])
    with pytest.raises(ValueError, match="--categorical-covariates centre"):
        Residualizer(bad).learn_levels(cov.with_columns(pl.lit("Leeds").alias("centre"))).design(
            cov.with_columns(pl.lit("Leeds").alias("centre")))
