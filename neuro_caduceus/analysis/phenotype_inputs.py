"""The inputs of a phenotype analysis (LOGO, the per-gene test), read and joined one way.

Why one function: both analyses take gene features, a binary phenotype and covariates, join them by
subject_id, apply a subject restriction and the relatedness handling, and report the same counts; doing
it once keeps their input conventions and messages identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from neuro_caduceus.analysis.features import FeatureMatrix, join_order, read_features
from neuro_caduceus.analysis.relatedness import THIRD_DEGREE, apply_relatedness
from neuro_caduceus.analysis.subjects import SubjectFilter, covariate_rows
from neuro_caduceus.io import read_table


@dataclass
class AnalysisInputs:
    """Matched subjects in analysis order: features, phenotype, covariate rows, related groups, counts."""

    features: FeatureMatrix
    X: np.ndarray
    y: np.ndarray
    cov: object | None
    cov_cols: list[str]
    groups: np.ndarray | None
    subject_ids: list[str]
    join: dict
    restriction: dict | None
    relatedness: object

    def report(self, features, categorical, numeric) -> dict:
        """The `extra` entries every phenotype analysis records (summary and report header)."""
        return {"features": str(features), "feature_kind": self.features.kind, "join": self.join,
                "restriction": self.restriction, "covariates": self.cov_cols,
                "categorical": list(categorical or []), "numeric": list(numeric or []),
                "relatedness": self.relatedness, "subject_ids": self.subject_ids}


def read_analysis_inputs(features: str | Path, phenotype: str | Path | None, covariates: str | Path | None,
                         phenotype_column: str, covariate_columns: list[str] | None, feature_kind: str,
                         subject_filter: SubjectFilter | None, kinship: str | Path | None,
                         kinship_threshold: float | None, unrelated: bool) -> AnalysisInputs:
    """Read every input, keep the subjects present in all of them that pass the restriction."""
    fm = read_features(features, feature_kind)
    cov = read_table(covariates) if covariates else None
    pheno = read_table(phenotype) if phenotype else cov
    if pheno is None:
        raise ValueError("give --phenotype (or a --covariates table that holds the phenotype column)")
    if phenotype_column not in pheno.columns:
        raise ValueError(f"phenotype column {phenotype_column!r} not found (columns: {pheno.columns}); "
                         "set --phenotype-column")
    pheno = pheno.filter(pl.col(phenotype_column).is_not_null())
    named = {"features": fm.subject_ids, "phenotype": pheno["subject_id"].to_list()}
    if cov is not None:
        named["covariates"] = cov["subject_id"].to_list()
    order, join = join_order(named)
    subject_filter = subject_filter or SubjectFilter()
    order, restriction = subject_filter.apply(order, cov)
    order, groups, related = apply_relatedness(order, kinship, kinship_threshold or THIRD_DEGREE, unrelated)
    pos = {s: i for i, s in enumerate(fm.subject_ids)}
    X = fm.X[np.array([pos[s] for s in order], dtype=np.int64)]
    order_df = pl.DataFrame({"subject_id": order})
    y = order_df.join(pheno, on="subject_id", how="left")[phenotype_column].to_numpy()
    cov_cols: list[str] = []
    cov_rows = None
    if cov is not None:
        skip = ("subject_id", phenotype_column, subject_filter.column)  # the filter's column is constant
        cov_cols = covariate_columns or [c for c in cov.columns if c not in skip]
        cov_rows = covariate_rows(order, cov, cov_cols, covariates)
    return AnalysisInputs(fm, X, y, cov_rows, cov_cols, groups, order, join.__dict__, restriction, related)
