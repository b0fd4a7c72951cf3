"""Which subjects an analysis uses: an ancestry (or any) restriction, counted, and their covariate rows.

Why: stratification that linear ancestry PCs miss is avoided most simply by analysing one ancestry group
at a time; the restriction is either a list of subjects or a filter on a covariates-table column, and
every analysis (LOGO, CCA, the per-gene test) applies it the same way and reports how many it removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neuro_caduceus.io import read_table


@dataclass(frozen=True)
class SubjectFilter:
    """`keep_subjects`: a table (TSV/CSV/Parquet) whose `subject_id` column lists the subjects to keep;
    `keep_where`: `COLUMN=VALUE[,VALUE...]` on the covariates table (values compared as text)."""

    keep_subjects: str | Path | None = None
    keep_where: str | None = None

    def apply(self, order: list[str], cov) -> tuple[list[str], dict | None]:
        """The subjects of `order` that pass, in order, and the counts for the report (None: no filter)."""
        if self.keep_subjects is None and self.keep_where is None:
            return order, None
        keep = set(order)
        if self.keep_subjects is not None:
            listed = read_table(self.keep_subjects)
            if "subject_id" not in listed.columns:
                raise ValueError(f"{self.keep_subjects}: --keep-subjects needs a subject_id column "
                                 f"(columns: {listed.columns})")
            keep &= {str(s) for s in listed["subject_id"].to_list()}
        if self.keep_where is not None:
            keep &= self._where(cov)
        kept = [s for s in order if s in keep]
        if not kept:
            raise ValueError(f"no subject passes the restriction ({self.describe()}); check its values")
        return kept, {"restriction": self.describe(), "before": len(order), "removed": len(order) - len(kept),
                      "after": len(kept)}

    @property
    def column(self) -> str | None:
        """The covariates-table column `keep_where` filters on (not a covariate by default)."""
        return self.keep_where.partition("=")[0].strip() if self.keep_where else None

    def _where(self, cov) -> set[str]:
        column, sep, values = (self.keep_where or "").partition("=")
        column = column.strip()
        wanted = {v.strip() for v in values.split(",") if v.strip()}
        if not sep or not column or not wanted:
            raise ValueError(f"--keep-where {self.keep_where!r}: write COLUMN=VALUE[,VALUE...] "
                             "(e.g. ancestry=EUR)")
        if cov is None:
            raise ValueError(f"--keep-where {self.keep_where!r} filters on the covariates table: give "
                             "--covariates")
        if column not in cov.columns:
            raise ValueError(f"--keep-where: column {column!r} is not in the covariates table "
                             f"(columns: {cov.columns})")
        ids = cov["subject_id"].cast(str).to_list()
        return {s for s, v in zip(ids, cov[column].cast(str).to_list(), strict=True) if v in wanted}

    def describe(self) -> str:
        parts = []
        if self.keep_subjects is not None:
            parts.append(f"subjects listed in {self.keep_subjects}")
        if self.keep_where is not None:
            parts.append(f"covariate {self.keep_where}")
        return " and ".join(parts)


def covariate_rows(order: list[str], cov, columns: list[str], source) -> object:
    """The covariate table's `columns` for the subjects in `order`, in order; missing values are an error."""
    import polars as pl

    rows = pl.DataFrame({"subject_id": order}).join(cov.select(["subject_id", *columns]), on="subject_id",
                                                    how="left")
    nulls = [c for c in columns if rows[c].null_count()]
    if nulls:
        raise ValueError(f"{source}: covariates {nulls} have missing values for matched subjects; "
                         "impute them or leave them out with --covariate-columns")
    return rows
