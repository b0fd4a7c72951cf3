"""In-memory PCA against sklearn's exact SVD PCA (the independent oracle), partial_fit, I/O, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import spectrum_data
from sklearn.decomposition import PCA as SkPCA

from neuro_caduceus.stats.pca import PCA


def assert_matches_sklearn(model: PCA, X: np.ndarray, k: int, whiten: bool = False) -> None:
    sk = SkPCA(n_components=k, svd_solver="full", whiten=whiten).fit(X)
    np.testing.assert_allclose(model.explained_variance_, sk.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(model.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-6)
    cos = np.abs(np.sum(model.components_ * sk.components_, axis=1))
    assert cos.min() > 1 - 1e-8
    np.testing.assert_allclose(model.components_, sk.components_, atol=1e-8)  # same sign convention
    np.testing.assert_allclose(model.transform(X), sk.transform(X), atol=1e-6)
    np.testing.assert_allclose(model.mean_, sk.mean_, atol=1e-10)


@pytest.mark.parametrize("whiten", [False, True])
def test_fit_equals_sklearn_full_svd(whiten):
    X = spectrum_data(400, 30)
    assert_matches_sklearn(PCA(n_components=12, whiten=whiten).fit(X), X, 12, whiten)


@pytest.mark.parametrize("chunks", [2, 7, 40])
def test_partial_fit_over_chunks_equals_fit_on_all(chunks):
    X = spectrum_data(400, 30, seed=1)
    model = PCA(n_components=10)
    for part in np.array_split(X, chunks):
        model.partial_fit(part)
    assert model.n_samples_ == 400
    assert_matches_sklearn(model, X, 10)


def test_save_load_round_trip_and_continue(tmp_path):
    X = spectrum_data(300, 20, seed=2)
    model = PCA(n_components=5).partial_fit(X[:200])
    model.recipe = {"recipe_id": "test"}
    path = model.save(tmp_path / "m.npz")
    loaded = PCA.load(path)
    np.testing.assert_array_equal(loaded.components_, model.components_)
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    assert loaded.recipe == {"recipe_id": "test"} and loaded.n_samples_ == 200
    loaded.partial_fit(X[200:])  # statistics were kept: continuing is exact
    assert_matches_sklearn(loaded, X, 5)
    small = PCA.load(model.save(tmp_path / "small.npz", keep_statistics=False))
    assert small.moments_ is None and small.components_.shape == (5, 20)


def test_fewer_subjects_than_components_caps_with_warning():
    X = spectrum_data(8, 20, seed=3)
    with pytest.warns(UserWarning, match=r"capped at 7 = min\(n_subjects - 1=7, n_features=20\)"):
        model = PCA(n_components=512).fit(X)
    assert model.components_.shape == (7, 20) and model.n_components_ == 7
    sk = SkPCA(n_components=8, svd_solver="full").fit(X)  # sklearn's full solver allows k = min(n, d)
    np.testing.assert_allclose(model.explained_variance_, sk.explained_variance_[:7], rtol=1e-6)
    np.testing.assert_allclose(model.components_, sk.components_[:7], atol=1e-8)
    assert sk.explained_variance_[7] == pytest.approx(0.0, abs=1e-9)  # sklearn's 8th: a null-space direction
    assert (model.explained_variance_ > 1e-6).all()
    assert PCA(n_components=None).fit(X).n_components_ == 7  # "all" means n - 1 too


def test_constant_columns_work_with_warning():
    X = spectrum_data(200, 10, seed=4)
    X[:, 3] = 7.0
    with pytest.warns(UserWarning, match="constant feature"):
        model = PCA(n_components=5).fit(X)
    assert_matches_sklearn(model, X, 5)
    np.testing.assert_allclose(model.components_[:, 3], 0.0, atol=1e-12)


def test_nan_and_inf_rows_are_named():
    X = spectrum_data(50, 5)
    X[3, 1], X[17, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"2 subject\(s\) have NaN/inf features \(rows \[3, 17\]"):
        PCA(2).fit(X)


def test_transform_before_fit_and_width_mismatch():
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA(2).transform(np.zeros((3, 4)))
    model = PCA(2).fit(spectrum_data(30, 6))
    with pytest.raises(ValueError, match="expected 6 features, got 5"):
        model.transform(np.zeros((3, 5)))
