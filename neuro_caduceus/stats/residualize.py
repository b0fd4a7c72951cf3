"""Covariate residualization: OLS of every feature on intercept + covariates, fitted from merged moments.

Why moments: the regression with an intercept only needs the count, means and centred scatter of the joint
[covariates, features] matrix, which merge exactly across row blocks (see `moments.py`), so the same fit
runs in memory, fold by fold (fit on training subjects, transform held-out ones) or on Ray. The normal
equations are solved on centred, unit-scaled covariates (condition number of the correlation matrix, not of
raw age and an intercept), with a rank check that names the collinear or constant columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from neuro_caduceus.stats.moments import Moments
from neuro_caduceus.stats.pca import check_rows

RANK_TOL = 1e-10  # smallest eigenvalue of the covariates' correlation matrix, relative to the largest


class CovariateSpec(BaseModel):
    """Which covariate-table columns enter the regression, and how categorical ones are coded.

    Defaults match the synthetic cohort (subject_id, age, sex 0/1, PC1..PC10, batch); `ukb()` gives the UK
    Biobank field names. Categorical columns are one-hot coded against a reference level: the one given in
    `reference_levels`, else the first level among the fitting subjects (numeric order for integer codes,
    else string order). Which columns are categorical is declared here, never guessed from the data type.
    """

    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field("subject_id", description="column with the subject identifier")
    numeric: list[str] = Field(
        default_factory=lambda: ["age", "sex", *[f"PC{i}" for i in range(1, 11)]],
        description="numeric covariates used as is (sex must be coded 0/1; else list it as categorical)")
    categorical: list[str] = Field(default_factory=lambda: ["batch"],
                                   description="categorical covariates, one-hot against a reference level")
    reference_levels: dict[str, str] = Field(default_factory=dict,
                                             description="column -> reference level (default first sorted)")
    unseen_levels: Literal["error", "reference"] = Field(
        "error", description="a level met by transform but not by fit: error, or code it as the reference")
    on_missing: Literal["exclude", "error"] = Field(
        "exclude", description="subjects with features but no complete covariate row: exclude+count or error")

    @classmethod
    def ukb(cls, **overrides) -> CovariateSpec:
        """UK Biobank template: eid, 21022-0.0 age, 31-0.0 sex, 22009-0.1..0.10 PCs, 22000-0.0 batch."""
        pcs = [f"22009-0.{i}" for i in range(1, 11)]
        base = dict(subject_id="eid", numeric=["21022-0.0", "31-0.0", *pcs], categorical=["22000-0.0"])
        return cls(**(base | overrides))

    @classmethod
    def from_yaml(cls, path: str | Path) -> CovariateSpec:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of CovariateSpec fields, got {type(data).__name__}")
        data = data.get("covariates", data)
        try:
            return cls(**data)
        except Exception as e:  # pydantic's message names the offending key
            raise ValueError(f"{path}: invalid covariate mapping: {e}") from e

    def declare_categorical(self, names: list[str]) -> CovariateSpec:
        """This spec with exactly `names` categorical (moved out of `numeric`; new names are added)."""
        return self.model_copy(update={"categorical": list(names),
                                       "numeric": [c for c in self.numeric if c not in names]})

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class Residualizer:
    """Fold-aware OLS residualizer: fit(Y, cov) on training subjects, transform(Y, cov) on any subjects.

    `cov` is a polars DataFrame whose rows are aligned with the rows of `Y`. After fit: `coef_`
    [1 + p, q] (row 0 = intercept), `design_columns_` (names of the p design columns), `r2_` [q].
    """

    def __init__(self, spec: CovariateSpec | None = None):
        self.spec = spec or CovariateSpec()

    # ------------------------------------------------------------------------------------------------ design
    def learn_levels(self, cov) -> Residualizer:
        """Categorical levels and reference levels from the fitting subjects' covariates."""
        _require_columns(cov, self.spec)
        self.levels_: dict[str, list[str]] = {}
        for col in self.spec.categorical:
            present = cov[col].drop_nulls()
            if present.dtype.is_numeric():  # integer codes (e.g. UKB batch): numeric order, then as text
                values = [str(v) for v in present.unique().sort().cast(str).to_list()]
            else:
                values = sorted(set(present.cast(str).to_list()))
            ref = self.spec.reference_levels.get(col, values[0] if values else None)
            if ref not in values:
                raise ValueError(f"reference level {ref!r} of covariate {col!r} is not among its levels "
                                 f"{values}")
            self.levels_[col] = [ref, *[v for v in values if v != ref]]
        self.design_columns_ = [*self.spec.numeric,
                                *[f"{c}={lv}" for c in self.spec.categorical for lv in self.levels_[c][1:]]]
        return self

    def design(self, cov) -> np.ndarray:
        """float64 design matrix [n, p] (no intercept column) with the learned coding."""
        import polars as pl

        _require_columns(cov, self.spec)
        _check_complete(cov, self.spec)
        parts = []
        for col in self.spec.numeric:
            dtype = cov.schema[col]
            if not (dtype.is_numeric() or dtype == pl.Boolean):
                raise ValueError(f"numeric covariate {col!r} has type {dtype}; code it as numbers "
                                 "(sex as 0/1) or declare it categorical (`categorical:` in the mapping, "
                                 f"--categorical-covariates {col})")
            parts.append(cov[col].cast(pl.Float64).to_numpy()[:, None])
        for col in self.spec.categorical:
            values = np.asarray(cov[col].cast(str).to_list(), dtype=object)
            ref, *others = self.levels_[col]
            unseen = sorted(set(values) - {ref, *others})
            if unseen and self.spec.unseen_levels == "error":
                raise ValueError(f"covariate {col!r} has levels {unseen[:10]} not seen when fitting "
                                 f"(levels {self.levels_[col]}); set unseen_levels: reference to code them "
                                 f"as {ref!r}")
            parts += [(values == lv).astype(np.float64)[:, None] for lv in others]
        return np.hstack(parts) if parts else np.zeros((cov.height, 0))

    # ------------------------------------------------------------------------------------------------ fitting
    def fit(self, Y: np.ndarray, cov) -> Residualizer:
        """Learn levels and coefficients from these (training) rows."""
        ids = cov[self.spec.subject_id].to_list() if self.spec.subject_id in cov.columns else None
        Y = check_rows(Y, ids=ids)
        if Y.shape[0] != cov.height:
            raise ValueError(f"features have {Y.shape[0]} rows but covariates {cov.height}; align them first")
        self.learn_levels(cov)
        X = self.design(cov)
        return self.fit_moments(Moments.of_block(np.hstack([X, Y])), X.shape[1])

    def fit_moments(self, moments: Moments, p: int) -> Residualizer:
        """Solve the centred, scaled normal equations from joint [design, features] moments."""
        from scipy.linalg import solve

        n = moments.count
        if n <= p + 1:
            raise ValueError(f"{n} subjects cannot fit an intercept + {p} covariate columns")
        sxx, sxy, syy = moments.m2[:p, :p], moments.m2[:p, p:], np.diag(moments.m2)[p:]
        scale = np.sqrt(np.diag(sxx))
        constant = [self.design_columns_[i] for i in np.flatnonzero(scale <= 0)]
        if constant:
            raise ValueError(f"covariate column(s) {constant} are constant in these {n} subjects; drop "
                             "them from the covariate mapping (the intercept already covers a constant)")
        corr = sxx / np.outer(scale, scale)
        if p:
            evals, evecs = np.linalg.eigh(corr)
            if evals[0] < RANK_TOL * evals[-1]:
                v = evecs[:, 0]
                big = np.flatnonzero(np.abs(v) > 0.1 * np.abs(v).max())
                involved = [self.design_columns_[i] for i in big]
                raise ValueError(f"rank-deficient covariate design: columns {involved} are (nearly) "
                                 "collinear (with the intercept); drop or merge one of them")
            beta = solve(corr, sxy / scale[:, None], assume_a="pos") / scale[:, None]
        else:
            beta = np.zeros((0, sxy.shape[1]))
        mx, my = moments.mean[:p], moments.mean[p:]
        intercept = my - mx @ beta
        self.coef_ = np.vstack([intercept[None, :], beta])
        ss_res = np.clip(syy - np.einsum("pq,pq->q", beta, sxy), 0.0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.r2_ = np.where(syy > 0, 1.0 - ss_res / syy, 0.0)
        self.n_samples_ = n
        return self

    # ----------------------------------------------------------------------------------------------- applying
    def transform(self, Y: np.ndarray, cov) -> np.ndarray:
        """Residuals Y - [1, X] coef for any rows (float64), with the coding learned at fit time."""
        if not hasattr(self, "coef_"):
            raise RuntimeError("Residualizer.transform() before fit(): fit on training subjects first")
        Y = check_rows(Y, width=self.coef_.shape[1])
        if Y.shape[0] != cov.height:
            raise ValueError(f"features have {Y.shape[0]} rows but covariates {cov.height}; align them first")
        return self.residuals(Y, self.design(cov))

    def residuals(self, Y: np.ndarray, X: np.ndarray) -> np.ndarray:
        return Y - self.coef_[0] - X @ self.coef_[1:]

    def fit_transform(self, Y: np.ndarray, cov) -> np.ndarray:
        return self.fit(Y, cov).transform(Y, cov)


def _require_columns(cov, spec: CovariateSpec) -> None:
    missing = [c for c in spec.columns if c not in cov.columns]
    if missing:
        raise ValueError(f"covariate columns {missing} not in the covariates table (it has {cov.columns}); "
                         "map the names with a CovariateSpec (--config)")


def _check_complete(cov, spec: CovariateSpec) -> None:
    import polars as pl

    incomplete = cov.filter(pl.any_horizontal([pl.col(c).is_null() for c in spec.columns]))
    if incomplete.height:
        who = (incomplete[spec.subject_id].head(10).to_list() if spec.subject_id in cov.columns
               else "rows without a subject_id column")
        raise ValueError(f"{incomplete.height} subject(s) have missing covariate values (e.g. {who}); "
                         "exclude them before fitting")
