"""Leak-free fold pipeline: PCA(k) -> residualize on covariates -> standardize -> L2 logistic regression.

Why one object: the usual way to leak is to fit PCA or the covariate regression on every subject and only
then cross-validate. Here every learned step lives inside `FoldModel`, whose only entry point is
`fit(train rows)`; predictions need a fitted model, and the LOGO/CCA functions take raw features plus
row indices, so there is no way through this API to fit a step on held-out subjects.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from neuro_caduceus.analysis.gene_blocks import BlockLayout, BlockReducer
from neuro_caduceus.stats.pca import PCA
from neuro_caduceus.stats.residualize import CovariateSpec, Residualizer

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass(frozen=True)
class ResamplingSettings:
    """What LOGO and CCA share: CV folds, permutations, the seed that fixes every split and shuffle, and how
    the permutations are spread over Ray tasks (`parallel`, `perms_per_task`; results do not depend on it)."""

    n_folds: int = 5
    n_perm: int = 100
    seed: int = 0
    parallel: bool = True
    perms_per_task: int = 1

    def permutation_chunks(self) -> list[list[int]]:
        """Permutation indices 0..n_perm-1 in runs of `perms_per_task` (one Ray task each)."""
        return [list(range(a, min(a + self.perms_per_task, self.n_perm)))
                for a in range(0, self.n_perm, self.perms_per_task)]


@functools.cache
def _thread_controller():
    import sklearn.linear_model  # noqa: F401  (load sklearn's OpenMP runtime before inspecting libraries)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded():
    """Context pinning BLAS/OpenMP to one thread, so results do not depend on where they run.

    The loaded libraries are inspected once per process (threadpool_limits() does it on every call, which
    costs milliseconds per fold fit and dominated the permutation tests).
    """
    return _thread_controller().limit(limits=1)


def stratified_folds(y: np.ndarray, n_folds: int, seed: int,
                     groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of a shuffled stratified k-fold split; errors if a class is too small.

    With `groups` (related subjects share a label), StratifiedGroupKFold: a group never spans folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() < n_folds:
        raise ValueError(f"stratified {n_folds}-fold CV needs >= {n_folds} subjects per class; "
                         f"got {counts[0]} controls and {counts[1]} cases (lower --folds)")
    if groups is None:
        split = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        split = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            np.zeros(len(y)), y, groups)
    folds = [(tr, te) for tr, te in split]
    for tr, te in folds:
        if len(np.unique(y[te])) < 2 or len(np.unique(y[tr])) < 2:
            raise ValueError(f"a {n_folds}-fold split has a fold with one class only (large related groups "
                             "or few cases); lower --folds or reduce to unrelated subjects")
    return folds


def kfolds(n: int, n_folds: int, seed: int,
           groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of a shuffled k-fold split (continuous targets, e.g. CCA); grouped too."""
    from sklearn.model_selection import GroupKFold, KFold

    if n < 2 * n_folds:
        raise ValueError(f"{n_folds}-fold CV needs >= {2 * n_folds} subjects; got {n} (lower --folds)")
    if groups is None:
        return list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(n)))
    split = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(split.split(np.zeros(n), groups=groups))


def cap_components(k: int, n_train: int, n_features: int) -> int:
    """PCA dims actually used: at most k, the feature count, and a third of the smallest training set
    (so always below the n - 1 limit of a PCA fitted on that set)."""
    return int(max(1, min(k, n_features, n_train // 3)))


class FeatureTransform:
    """Reduce -> residualize on covariates -> standardize, every step fitted on the rows passed to fit().

    Reduce: one PCA(k) over all columns, or with a `layout` PCA(k) per gene block (see gene_blocks). With
    `genetic_pcs` > 0 the top principal components of the input features themselves (fitted on the same
    rows) join the covariates: stratification carried by the genetic features is regressed out.
    """

    def __init__(self, k: int, covariates: list[str] | None = None, categorical: list[str] | None = None,
                 layout: BlockLayout | None = None, genetic_pcs: int = 0):
        self.k = k
        self.covariates = list(covariates or [])
        self.categorical = categorical
        self.layout = layout
        self.genetic_pcs = genetic_pcs
        self._fitted = False

    def fit(self, X: np.ndarray, cov) -> FeatureTransform:
        """Learn the reduction, the covariate regression and the scaling from these (training) rows only."""
        if self.layout is not None:
            self.reducer_ = BlockReducer(self.layout, self.k).fit(X)
        else:
            self.reducer_ = PCA(n_components=min(self.k, X.shape[0] - 1, X.shape[1])).fit(X)
        Z = self.reducer_.transform(X)
        self.genetic_pca_ = None
        if self.genetic_pcs:
            self.genetic_pca_ = PCA(n_components=min(self.genetic_pcs, X.shape[0] - 2, X.shape[1])).fit(X)
        cov, columns = self._covariates(X, cov)
        self.residualizer_ = None
        if columns:
            self.residualizer_ = Residualizer(covariate_spec(cov, columns, self.categorical))
            self.residualizer_.fit(Z, cov)
            Z = self.residualizer_.transform(Z, cov)
        self.mean_ = Z.mean(axis=0)
        sd = Z.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        self._fitted = True
        return self

    def _covariates(self, X: np.ndarray, cov) -> tuple[object, list[str]]:
        """The covariate table and columns, with the genetic PCs (gPC1..) added when asked for."""
        import polars as pl

        columns = list(self.covariates) if cov is not None else []
        if self.genetic_pca_ is None:
            return cov, columns
        S = self.genetic_pca_.transform(X)
        names = [f"gPC{i + 1}" for i in range(S.shape[1])]
        pcs = pl.DataFrame({n: S[:, i] for i, n in enumerate(names)})
        return (pcs if cov is None else pl.concat([cov, pcs], how="horizontal")), [*columns, *names]

    def transform(self, X: np.ndarray, cov) -> np.ndarray:
        """Apply the learned steps to any rows (e.g. held-out ones); refuses to run before fit()."""
        if not self._fitted:
            raise RuntimeError("FeatureTransform.transform() before fit(): fit on training rows first")
        Z = self.reducer_.transform(X)
        if self.residualizer_ is not None:
            cov, _ = self._covariates(X, cov)
            Z = self.residualizer_.transform(Z, cov)
        return (np.asarray(Z, dtype=np.float64) - self.mean_) / self.scale_


class FoldModel:
    """FeatureTransform + L2 logistic regression with a fixed C; fit() sees training rows only."""

    def __init__(self, k: int, C: float, covariates: list[str] | None = None,
                 categorical: list[str] | None = None, layout: BlockLayout | None = None,
                 genetic_pcs: int = 0):
        self.C = C
        self.transform_ = FeatureTransform(k, covariates, categorical, layout, genetic_pcs)
        self._fitted = False

    def fit(self, X: np.ndarray, cov, y: np.ndarray) -> FoldModel:
        self.transform_.fit(X, cov)
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


MAX_CODE_LEVELS = 20  # an integer column with at most this many distinct values may be a code (batch, centre)


MAX_CODE_LEVELS = 20  # an integer column with at most this many distinct values may be a code (batch, centre)


def covariate_spec(cov, columns: list[str], categorical: list[str] | None = None):
    """A stats CovariateSpec: the declared `categorical` columns one-hot (first sorted level = reference),
    the others numeric. Types are never guessed: a text column not declared categorical is an error."""
    import polars as pl

    categorical = list(categorical or [])
    missing = [c for c in columns if c not in cov.columns]
    if missing:
        raise ValueError(f"covariate columns {missing} not in the covariates table (has {cov.columns})")
    stray = [c for c in categorical if c not in columns]
    if stray:
        raise ValueError(f"--categorical-covariates {stray} are not among the covariate columns {columns}")
    text = [c for c in columns if c not in categorical
            and not (cov.schema[c].is_numeric() or cov.schema[c] == pl.Boolean)]
    if text:
        kinds = [str(cov.schema[c]) for c in text]
        raise ValueError(f"covariate column(s) {text} hold {kinds} values; declare them categorical with "
                         f"--categorical-covariates {','.join(text)} (or drop them via --covariate-columns)")
    return CovariateSpec(numeric=[c for c in columns if c not in categorical],
                         categorical=[c for c in columns if c in categorical])


def declared_covariates(cov, columns: list[str], categorical: list[str] | None = None,
                        numeric: list[str] | None = None):
    """covariate_spec for a whole analysis (all its subjects), once, before any fold: beyond text columns,
    an integer column with 3..MAX_CODE_LEVELS distinct values declared neither categorical nor `numeric` is
    an error (a batch or centre code taken as one linear term removes almost none of a non-monotone batch
    effect). A two-valued column needs no declaration: as a number or one-hot it spans the same design."""
    categorical, numeric = list(categorical or []), list(numeric or [])
    stray = [c for c in numeric if c not in columns]
    if stray:
        raise ValueError(f"--numeric-covariates {stray} are not among the covariate columns {columns}")
    both = sorted(set(categorical) & set(numeric))
    if both:
        raise ValueError(f"covariate column(s) {both} are declared both categorical and numeric; pick one")
    spec = covariate_spec(cov, columns, categorical)
    codes = [c for c in columns if c not in categorical and c not in numeric and cov.schema[c].is_integer()
             and 2 < cov[c].drop_nulls().n_unique() <= MAX_CODE_LEVELS]
    if codes:
        levels = [cov[c].drop_nulls().n_unique() for c in codes]
        raise ValueError(f"covariate column(s) {codes} are integers with few distinct values {levels} (codes "
                         f"such as batch or centre?); declare them: --categorical-covariates "
                         f"{','.join(codes)} to one-hot code them, or --numeric-covariates {','.join(codes)} "
                         "to use them as one linear term")
    return spec


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
    categorical: tuple[str, ...] = ()
    layout: BlockLayout | None = None  # per-gene reduction (k components per gene) when set
    genetic_pcs: int = 0

    def transform(self) -> FeatureTransform:
        return FeatureTransform(self.k, list(self.covariates), list(self.categorical), self.layout,
                                self.genetic_pcs)


def choose_C(X: np.ndarray, cov, y: np.ndarray, settings: FoldSettings, seed: int,
             groups: np.ndarray | None = None) -> float:
    """The C with the best mean inner-CV AUC on these (outer-training) rows; ties go to the smaller C.

    Inner folds keep related groups together too; a one-value grid needs no inner CV.
    """
    if len(settings.Cs) == 1:
        return float(settings.Cs[0])
    scores = np.zeros(len(settings.Cs))
    for tr, te in stratified_folds(y, settings.inner_folds, seed, groups):
        t = settings.transform().fit(X[tr], _rows(cov, tr))
        Ztr, Zte = t.transform(X[tr], _rows(cov, tr)), t.transform(X[te], _rows(cov, te))
        for j, C in enumerate(settings.Cs):
            scores[j] += _auc(y[te], _logistic(C).fit(Ztr, y[tr]).decision_function(Zte))
    return float(settings.Cs[int(np.argmax(scores))])


def _rows(cov, idx: np.ndarray):
    return None if cov is None else cov[idx]


def fit_predict_fold(X: np.ndarray, cov, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                     settings: FoldSettings, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Choose C by inner CV on `train`, fit the whole pipeline on `train`, score `test` (scores, C).

    Single-threaded BLAS so the numbers are bit-identical whether this runs in-process or in a Ray worker.
    """
    with single_threaded():
        C = choose_C(X[train], _rows(cov, train), y[train], settings, seed,
                     None if groups is None else groups[train])
        model = FoldModel(settings.k, C, list(settings.covariates), list(settings.categorical),
                          settings.layout, settings.genetic_pcs).fit(X[train], _rows(cov, train), y[train])
        return model.decision_function(X[test], _rows(cov, test)), C
