"""Exome QC on a MatrixTable: sample lists, entry filters (GQ, DP, het allele balance), variant filters.

Why here and lazy: the same filters run inside every Ray read task (one gene at a time, no Hail action) and
once over the whole MatrixTable for the counted summary that goes into the recipe metadata.

Order (each step sees the output of the previous one): samples (include list, then exclude list) ->
entries (GQ, then DP, then allele balance of het calls; a failing entry becomes a missing call) ->
variants (FILTER = PASS, then call rate, then AC/AF bounds, both computed on the QC'd calls).
A missing GQ, DP or AD fails the filter that needs it. FILTER "." (not applied) counts as PASS.
Sex chromosomes: calls are kept as written (DeepVariant writes hemizygous male chrX/chrY calls as diploid
1/1), so AC/AF/call rate count every subject as diploid; see docs/variants.md (sex chromosomes).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neuro_caduceus.io import read_sample_list


class QCConfig(BaseModel):
    """QC thresholds; every key is optional and `None` disables that filter (the default is no QC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_gq: int | None = Field(None, ge=0, description="entry: GQ >= min_gq")
    min_dp: int | None = Field(None, ge=0, description="entry: DP >= min_dp")
    het_ab: tuple[float, float] | None = Field(
        None, description="entry: for het calls, min <= AD[alt] / sum(AD) <= max"
    )
    require_pass: bool = Field(False, description="variant: FILTER is PASS (or '.')")
    min_call_rate: float | None = Field(None, ge=0, le=1, description="variant: called fraction after QC")
    min_ac: int | None = Field(None, ge=0, description="variant: ALT allele count >= min_ac")
    max_ac: int | None = Field(None, ge=0, description="variant: ALT allele count <= max_ac")
    min_af: float | None = Field(None, ge=0, le=1, description="variant: ALT allele frequency >= min_af")
    max_af: float | None = Field(None, ge=0, le=1, description="variant: AF <= max_af (rare-variant studies)")
    include_samples: Path | None = Field(None, description="file, one subject id a line: keep only these")
    exclude_samples: Path | None = Field(None, description="file, one subject id a line: drop these")
    max_missing: int | None = Field(
        None, ge=0, description="subject-gene: at most this many missing calls (VCF records), else excluded"
    )

    @model_validator(mode="after")
    def _ab_range(self) -> QCConfig:
        if self.het_ab is not None and not 0 <= self.het_ab[0] <= self.het_ab[1] <= 1:
            raise ValueError(f"het_ab must be [min, max] with 0 <= min <= max <= 1, got {list(self.het_ab)}")
        for low, high in (("min_ac", "max_ac"), ("min_af", "max_af")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} {lo} > {high} {hi} would remove every variant; swap them")
        return self

    def entry_filters(self) -> bool:
        return any(v is not None for v in (self.min_gq, self.min_dp, self.het_ab))

    def variant_stats_needed(self) -> bool:
        bounds = (self.min_call_rate, self.min_ac, self.max_ac, self.min_af, self.max_af)
        return any(v is not None for v in bounds)


def sample_sets(qc: QCConfig) -> tuple[set[str] | None, set[str]]:
    include = set(read_sample_list(qc.include_samples)) if qc.include_samples else None
    exclude = set(read_sample_list(qc.exclude_samples)) if qc.exclude_samples else set()
    return include, exclude


def _require_fields(mt: Any, qc: QCConfig) -> None:
    need = {"GT": True, "GQ": qc.min_gq is not None, "DP": qc.min_dp is not None, "AD": qc.het_ab is not None}
    missing = [f for f, needed in need.items() if needed and f not in mt.entry]
    if missing:
        raise ValueError(
            f"MatrixTable has no entry field(s) {missing} (entry fields: {list(mt.entry)}); "
            "GT is required, GQ/DP/AD only for the QC keys min_gq/min_dp/het_ab"
        )
    if qc.require_pass and "filters" not in mt.row:
        raise ValueError("QC require_pass needs the row field 'filters' (as hl.import_vcf writes it)")


def entry_keep(mt: Any, qc: QCConfig):
    """Boolean expressions (gq_ok, dp_ok, ab_ok) for the entry filters; True where a filter is off."""
    import hail as hl

    gq_ok = hl.or_else(mt.GQ >= qc.min_gq, False) if qc.min_gq is not None else hl.bool(True)
    dp_ok = hl.or_else(mt.DP >= qc.min_dp, False) if qc.min_dp is not None else hl.bool(True)
    if qc.het_ab is not None:
        lo, hi = qc.het_ab
        total = hl.sum(mt.AD)
        ab = hl.or_missing(total > 0, mt.AD[1] / total)
        ab_ok = hl.if_else(mt.GT.is_het(), hl.or_else((ab >= lo) & (ab <= hi), False), True)
    else:
        ab_ok = hl.bool(True)
    return gq_ok, dp_ok, ab_ok


def apply_qc(mt: Any, qc: QCConfig | None, id_sets: tuple[set[str] | None, set[str]] | None = None) -> Any:
    """The QC'd MatrixTable (lazy: no Hail action runs here).

    `id_sets` = (include or None, exclude), read once on the driver with `sample_sets(qc)` so that
    remote workers need not see the list files.
    """
    import hail as hl

    qc = qc or QCConfig()
    _require_fields(mt, qc)
    include, exclude = id_sets if id_sets is not None else sample_sets(qc)
    if include is not None:
        mt = mt.filter_cols(hl.literal(include).contains(mt.s))
    if exclude:
        mt = mt.filter_cols(~hl.literal(exclude).contains(mt.s))
    if qc.entry_filters():
        gq_ok, dp_ok, ab_ok = entry_keep(mt, qc)
        mt = mt.annotate_entries(GT=hl.or_missing(gq_ok & dp_ok & ab_ok, mt.GT))
    if qc.require_pass:
        mt = mt.filter_rows(hl.or_else(hl.len(mt.filters) == 0, True))
    if qc.variant_stats_needed():
        mt = mt.annotate_rows(_qc=_variant_stats(mt))
        mt = mt.filter_rows(_variant_keep(mt._qc, qc)).drop("_qc")
    return mt


def _variant_stats(mt: Any):
    import hail as hl

    n_called = hl.agg.count_where(hl.is_defined(mt.GT))
    ac = hl.agg.sum(hl.or_else(mt.GT.n_alt_alleles(), 0))
    an = hl.agg.sum(hl.or_else(mt.GT.ploidy, 0))
    return hl.struct(call_rate=n_called / hl.agg.count(), ac=ac, af=hl.or_missing(an > 0, ac / an))


def _variant_keep(stats: Any, qc: QCConfig):
    """(call_rate_ok, ac_af_ok) combined; `_variant_checks` keeps them apart for counting."""
    cr_ok, acaf_ok = _variant_checks(stats, qc)
    return cr_ok & acaf_ok


def _variant_checks(stats: Any, qc: QCConfig):
    import hail as hl

    cr_ok = hl.or_else(stats.call_rate >= qc.min_call_rate, False) if qc.min_call_rate is not None else True
    acaf_ok = hl.bool(True)
    if qc.min_ac is not None:
        acaf_ok &= stats.ac >= qc.min_ac
    if qc.max_ac is not None:
        acaf_ok &= stats.ac <= qc.max_ac
    if qc.min_af is not None:
        acaf_ok &= hl.or_else(stats.af >= qc.min_af, False)
    if qc.max_af is not None:
        acaf_ok &= hl.or_else(stats.af <= qc.max_af, False)
    return hl.bool(cr_ok), acaf_ok


def filter_ids(
    all_ids: list[str], qc: QCConfig, id_sets: tuple[set[str] | None, set[str]], warn: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """Apply the include then the exclude list to the MatrixTable's ids (order kept); count and warn about
    list ids that are not in the MatrixTable."""
    include, exclude = id_sets
    present = set(all_ids)
    samples: dict[str, Any] = {"in": len(all_ids)}
    kept = list(all_ids)
    if include is not None:
        unknown = sorted(include - present)
        kept = [s for s in kept if s in include]
        samples["include_list"] = {
            "path": str(qc.include_samples),
            "ids": len(include),
            "not_in_matrix_table": len(unknown),
            "dropped": len(all_ids) - len(kept),
        }
        if warn:
            _warn_unknown(qc.include_samples, unknown)
    if exclude:
        unknown = sorted(exclude - present)
        before = len(kept)
        kept = [s for s in kept if s not in exclude]
        samples["exclude_list"] = {
            "path": str(qc.exclude_samples),
            "ids": len(exclude),
            "not_in_matrix_table": len(unknown),
            "dropped": before - len(kept),
        }
        if warn:
            _warn_unknown(qc.exclude_samples, unknown)
    samples["out"] = len(kept)
    return kept, samples


def qc_summary(mt: Any, qc: QCConfig | None) -> dict:
    """Run QC with counts at every step (Hail actions over the whole MatrixTable).

    Sample-list ids absent from the MatrixTable are counted and warned about, never silently ignored.
    """
    import hail as hl

    qc = qc or QCConfig()
    _require_fields(mt, qc)
    kept, samples = filter_ids(mt.s.collect(), qc, sample_sets(qc))
    summary: dict[str, Any] = {"config": qc.model_dump(mode="json"), "samples": samples}

    keep_set = hl.literal(set(kept))
    mt = mt.filter_cols(keep_set.contains(mt.s))
    gq_ok, dp_ok, ab_ok = entry_keep(mt, qc)
    called = hl.is_defined(mt.GT)
    e = mt.aggregate_entries(
        hl.struct(
            called=hl.agg.count_where(called),
            gq=hl.agg.count_where(called & ~gq_ok),
            dp=hl.agg.count_where(called & gq_ok & ~dp_ok),
            ab=hl.agg.count_where(called & gq_ok & dp_ok & ~ab_ok),
        )
    )
    summary["entries"] = {
        "called_in": e.called,
        "set_missing": {"min_gq": e.gq, "min_dp": e.dp, "het_ab": e.ab},
        "called_out": e.called - e.gq - e.dp - e.ab,
    }
    if qc.entry_filters():
        mt = mt.annotate_entries(GT=hl.or_missing(gq_ok & dp_ok & ab_ok, mt.GT))
    mt = mt.annotate_rows(_qc=_variant_stats(mt))
    pass_ok = hl.or_else(hl.len(mt.filters) == 0, True) if qc.require_pass else hl.bool(True)
    cr_ok, acaf_ok = _variant_checks(mt._qc, qc)
    v = mt.aggregate_rows(
        hl.struct(
            n=hl.agg.count(),
            not_pass=hl.agg.count_where(~pass_ok),
            call_rate=hl.agg.count_where(pass_ok & ~cr_ok),
            ac_af=hl.agg.count_where(pass_ok & cr_ok & ~acaf_ok),
        )
    )
    summary["variants"] = {
        "in": v.n,
        "removed": {"filter_not_pass": v.not_pass, "min_call_rate": v.call_rate, "ac_af_bounds": v.ac_af},
        "out": v.n - v.not_pass - v.call_rate - v.ac_af,
    }
    return summary


def _warn_unknown(path: Path | None, unknown: list[str]) -> None:
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warnings.warn(  # stacklevel: the caller of filter_ids
            f"{path}: {len(unknown)} subject id(s) not in the MatrixTable ({shown}); see the QC summary",
            stacklevel=3,
        )
