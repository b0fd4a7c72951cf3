"""Leak-free fold pipeline: PCA(k) -> residualize on covariates -> standardize -> L2 logistic regression.

Why one object: the usual way to leak is to fit PCA or the covariate regression on every subject and only
then cross-validate. Here every learned step lives inside `FoldModel`, whose only entry point is
`fit(train rows)`; predictions need a fitted model, and the LOGO/CCA functions take raw features plus
row indices, so there is no way through this API to fit a step on held-out subjects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def stratified_folds(y: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of a shuffled stratified k-fold split; errors if a class is too small."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    if counts.min() < n_folds:
        raise ValueError(f"stratified {n_folds}-fold CV needs >= {n_folds} subjects per class; "
                         f"got {counts[0]} controls and {counts[1]} cases (lower --folds)")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(y)), y)]


def kfolds(n: int, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of a shuffled k-fold split (for continuous targets such as CCA)."""
    from sklearn.model_selection import KFold

    if n < 2 * n_folds:
        raise ValueError(f"{n_folds}-fold CV needs >= {2 * n_folds} subjects; got {n} (lower --folds)")
    return list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def cap_components(k: int, n_train: int, n_features: int) -> int:
    """PCA dims actually used: at most k, the feature count, and a third of the smallest training set."""
    return int(max(1, min(k, n_features, n_train // 3)))


class FeatureTransform:
    """PCA(k) -> residualize on covariates -> standardize, every step fitted on the rows passed to fit()."""

    def __init__(self, k: int, covariates: list[str] | None = None):
        self.k = k
        self.covariates = covariates
        self._fitted = False

    def fit(self, X: np.ndarray, cov) -> FeatureTransform:
        """Learn PCA, the covariate regression and the scaling from these (training) rows only."""
        from neuro_caduceus.stats.pca import PCA

        self.pca_ = PCA(n_components=min(self.k, X.shape[0] - 1, X.shape[1]))
        Z = self.pca_.fit_transform(X)
        self.residualizer_ = None
        if cov is not None and self.covariates:
            from neuro_caduceus.stats.residualize import Residualizer

            self.residualizer_ = Residualizer(covariate_spec(cov, self.covariates))
            self.residualizer_.fit(Z, cov)
            Z = self.residualizer_.transform(Z, cov)
        self.mean_ = Z.mean(axis=0)
        sd = Z.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        self._fitted = True
        return self

    def transform(self, X: np.ndarray, cov) -> np.ndarray:
        """Apply the learned steps to any rows (e.g. held-out ones); refuses to run before fit()."""
        if not self._fitted:
            raise RuntimeError("FeatureTransform.transform() before fit(): fit on training rows first")
        Z = self.pca_.transform(X)
        if self.residualizer_ is not None:
            Z = self.residualizer_.transform(Z, cov)
        return (np.asarray(Z, dtype=np.float64) - self.mean_) / self.scale_


class FoldModel:
    """FeatureTransform + L2 logistic regression with a fixed C; fit() sees training rows only."""

    def __init__(self, k: int, C: float, covariates: list[str] | None = None):
        self.k, self.C, self.covariates = k, C, covariates
        self._fitted = False

    def fit(self, X: np.ndarray, cov, y: np.ndarray) -> FoldModel:
        self.transform_ = FeatureTransform(self.k, self.covariates).fit(X, cov)
        self.clf_ = _logistic(self.C).fit(self.transform_.transform(X, cov), y)
        self._fitted = True
        return self

    def decision_function(self, X: np.ndarray, cov) -> np.ndarray:
        if not self._fitted:
            raise RuntimeError("FoldModel.decision_function() before fit(): fit on training rows first")
        return self.clf_.decision_function(self.transform_.transform(X, cov))


def _logistic(C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, solver="lbfgs", max_iter=2000)


def covariate_spec(cov, columns: list[str]):
    """A stats CovariateSpec for these columns: strings are categorical (first sorted level = reference)."""
    import polars as pl

    from neuro_caduceus.stats.residualize import CovariateSpec

    missing = [c for c in columns if c not in cov.columns]
    if missing:
        raise ValueError(f"covariate columns {missing} not in the covariates table (has {cov.columns})")
    categorical = [c for c in columns if cov.schema[c] in (pl.Utf8, pl.Categorical, pl.Boolean)]
    numeric = [c for c in columns if c not in categorical]
    return CovariateSpec(numeric=numeric, categorical=categorical)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


@dataclass(frozen=True)
class FoldSettings:
    """Everything a fold needs besides data: PCA dims, C grid, inner folds and the fold's seed."""

    k: int
    Cs: tuple[float, ...] = DEFAULT_CS
    inner_folds: int = 3
    covariates: tuple[str, ...] = ()


def choose_C(X: np.ndarray, cov, y: np.ndarray, settings: FoldSettings, seed: int) -> float:
    """The C with the best mean inner-CV AUC on these (outer-training) rows; ties go to the smaller C."""
    covs = list(settings.covariates)
    scores = np.zeros(len(settings.Cs))
    for tr, te in stratified_folds(y, settings.inner_folds, seed):
        t = FeatureTransform(settings.k, covs).fit(X[tr], _rows(cov, tr))
        Ztr, Zte = t.transform(X[tr], _rows(cov, tr)), t.transform(X[te], _rows(cov, te))
        for j, C in enumerate(settings.Cs):
            scores[j] += _auc(y[te], _logistic(C).fit(Ztr, y[tr]).decision_function(Zte))
    return float(settings.Cs[int(np.argmax(scores))])


def _rows(cov, idx: np.ndarray):
    return None if cov is None else cov[idx]


def fit_predict_fold(X: np.ndarray, cov, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                     settings: FoldSettings, seed: int) -> tuple[np.ndarray, float]:
    """Choose C by inner CV on `train`, fit the whole pipeline on `train`, score `test` (scores, C).

    Single-threaded BLAS so the numbers are bit-identical whether this runs in-process or in a Ray worker.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        C = choose_C(X[train], _rows(cov, train), y[train], settings, seed)
        model = FoldModel(settings.k, C, list(settings.covariates)).fit(X[train], _rows(cov, train), y[train])
        return model.decision_function(X[test], _rows(cov, test)), C
