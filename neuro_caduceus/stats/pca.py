"""Exact PCA from mergeable float64 moments; the same numbers as sklearn's PCA(svd_solver="full").

Why moments: the covariance of any number of row blocks is an exact merge of per-block (count, mean,
centred scatter), so the model can be fitted block by block (or on Ray, see `fit_pca`), updated with new
subjects (`partial_fit`) and still equal a single-machine SVD up to rounding. Components follow sklearn's
sign convention (svd_flip with u_based_decision=False: the largest-magnitude loading of each component is
positive), so results compare directly.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from neuro_caduceus.io import atomic_writer
from neuro_caduceus.stats.moments import Moments

DEFAULT_COMPONENTS = 512


class PCA:
    """sklearn-like PCA (fit, partial_fit, transform, fit_transform, save, load); exact float64 statistics."""

    def __init__(self, n_components: int | None = DEFAULT_COMPONENTS, whiten: bool = False):
        if n_components is not None and int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.whiten = whiten
        self.recipe: dict = {}
        self.moments_: Moments | None = None

    # ------------------------------------------------------------------------------------------------ fitting
    def fit(self, X: np.ndarray, y=None) -> PCA:
        """Fit on all rows of X (statistics from scratch)."""
        self.moments_ = None
        return self.partial_fit(X)

    def partial_fit(self, X: np.ndarray, y=None) -> PCA:
        """Add rows to the kept statistics and re-solve: exact, equal to fit() on all rows seen so far."""
        X = check_rows(X)
        block = Moments.of_block(X)
        if self.moments_ is None:
            self.moments_ = block
        else:
            if block.dim != self.moments_.dim:
                raise ValueError(f"partial_fit got {block.dim} features; the model has {self.moments_.dim}")
            self.moments_.merge(block)
        return self.fit_moments(self.moments_)

    def fit_moments(self, moments: Moments) -> PCA:
        """Solve from merged statistics (used by the distributed fit); keeps them for later partial_fit."""
        from scipy.linalg import eigh

        n, d = moments.count, moments.dim
        if n < 2:
            raise ValueError(f"PCA needs at least 2 subjects, got {n}")
        k = self._capped_components(n, d)
        cov = moments.covariance()
        constant = np.flatnonzero(np.diag(moments.m2) <= 0)
        if constant.size:
            warnings.warn(f"{constant.size} constant feature column(s) (e.g. {constant[:10].tolist()}); "
                          "they carry no variance and get zero loadings", stacklevel=2)
        total = float(np.trace(cov))
        evals, evecs = eigh(cov, subset_by_index=(d - k, d - 1), overwrite_a=True, check_finite=False)
        order = np.argsort(evals)[::-1]
        evals, comps = np.clip(evals[order], 0.0, None), evecs[:, order].T
        self.components_ = _flip_signs(comps)
        self.explained_variance_ = evals
        self.explained_variance_ratio_ = evals / total if total > 0 else np.zeros_like(evals)
        self.singular_values_ = np.sqrt(evals * (n - 1))
        self.mean_ = moments.mean.copy()
        self.n_samples_ = n
        self.n_features_in_ = d
        self.n_components_ = k
        self.moments_ = moments
        return self

    def _capped_components(self, n: int, d: int) -> int:
        """Requested components capped at min(n - 1, d), with a warning.

        Centred data of n rows span at most n - 1 dimensions: an n-th component would be a null-space
        direction with zero variance (held-out scores on it, whitened, blow up), so it is never kept.
        """
        limit = min(n - 1, d)
        want = self.n_components if self.n_components is not None else limit
        k = min(int(want), limit)
        if k < want:
            warnings.warn(f"n_components={want} capped at {k} = min(n_subjects - 1={n - 1}, n_features={d})",
                          stacklevel=3)
        return k

    # ----------------------------------------------------------------------------------------------- applying
    def transform(self, X: np.ndarray) -> np.ndarray:
        """Scores (X - mean) @ components^T, divided by sqrt(explained variance) when whitening."""
        self._check_fitted()
        X = check_rows(X, width=self.n_features_in_)
        scores = (X - self.mean_) @ self.components_.T
        if self.whiten:
            ev = self.explained_variance_
            scores /= np.sqrt(np.where(ev > 0, ev, 1.0))
        return scores

    def fit_transform(self, X: np.ndarray, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise RuntimeError("PCA is not fitted: call fit(), partial_fit() or fit_pca() first")

    # --------------------------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike, keep_statistics: bool = True) -> Path:
        """npz with components [k,d], mean [d], explained_variance [k], n_samples, recipe JSON (+ statistics).

        The statistics (count, mean, d x d scatter) let a loaded model continue with partial_fit; drop them
        with keep_statistics=False for a small file. Written to a temporary name, then renamed.
        """
        self._check_fitted()
        path = Path(path)
        arrays = {
            "components": self.components_,
            "mean": self.mean_,
            "explained_variance": self.explained_variance_,
            "explained_variance_ratio": self.explained_variance_ratio_,
            "n_samples": np.int64(self.n_samples_),
            "n_components": np.int64(-1 if self.n_components is None else self.n_components),
            "whiten": np.bool_(self.whiten),
            "recipe": np.array(json.dumps(self.recipe, sort_keys=True)),
        }
        if keep_statistics and self.moments_ is not None:
            arrays |= {"stat_count": np.int64(self.moments_.count), "stat_mean": self.moments_.mean,
                       "stat_m2": self.moments_.m2}
        with atomic_writer(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PCA:
        """Reload a saved model (with its statistics when they were kept)."""
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("components", "mean", "explained_variance") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: not a PCA model file (missing arrays {missing})")
            n_req = int(z["n_components"]) if "n_components" in z.files else None
            model = cls(n_components=None if n_req in (None, -1) else n_req,
                        whiten=bool(z["whiten"]) if "whiten" in z.files else False)
            model.components_ = z["components"]
            model.mean_ = z["mean"]
            model.explained_variance_ = z["explained_variance"]
            if "explained_variance_ratio" in z.files:
                model.explained_variance_ratio_ = z["explained_variance_ratio"]
            model.n_samples_ = int(z["n_samples"]) if "n_samples" in z.files else None
            model.n_components_, model.n_features_in_ = model.components_.shape
            if model.n_samples_:
                model.singular_values_ = np.sqrt(model.explained_variance_ * (model.n_samples_ - 1))
            model.recipe = json.loads(str(z["recipe"])) if "recipe" in z.files else {}
            if "stat_m2" in z.files:
                model.moments_ = Moments(int(z["stat_count"]), z["stat_mean"], z["stat_m2"])
        return model


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """sklearn's svd_flip(u_based_decision=False): each row's largest-|value| entry becomes positive."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def check_rows(X, width: int | None = None, ids=None) -> np.ndarray:
    """2-D float64 rows; NaN/inf is an error naming the subjects (or row numbers when no ids are given)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D matrix (subjects x features), got shape {X.shape}")
    if width is not None and X.shape[1] != width:
        raise ValueError(f"expected {width} features, got {X.shape[1]}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        named = [str(ids[i]) for i in rows[:10]] if ids is not None else rows[:10].tolist()
        what = "subjects" if ids is not None else "rows"
        raise ValueError(f"{rows.size} subject(s) have NaN/inf features ({what} {named}"
                         f"{' ...' if rows.size > 10 else ''}); fix or drop them upstream")
    return X
