"""The variant pilot end to end: the embedding job (`cohort.pilot_job`), masked-LM scores beside its
distances, and its files (`analysis.pilot_report`).

Why two modules: the embeddings are a Ray job on the cohort job's actor pool (cohort layer); the zero-shot
scores run in this process on the pilot's few variants, and the report is analysis output.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from neuro_caduceus.analysis.pilot_report import write_outputs
from neuro_caduceus.analysis.variant_scores import SCORE_COLUMNS, add_llr_scores
from neuro_caduceus.cohort.config import CohortConfig
from neuro_caduceus.cohort.pilot_job import LOCAL_FLANK, PilotResult, run_pilot_job
from neuro_caduceus.model import load_encoder


def run_pilot(cfg: CohortConfig, out: str | Path, variants_vcf: str | None = None,
              local_flank: int = LOCAL_FLANK, strand_check: bool = True) -> PilotResult:
    """Run the pilot for a cohort config and write variants/subjects Parquet, plots, report and summary."""
    t0 = time.time()
    result = run_pilot_job(cfg, variants_vcf, local_flank, strand_check)
    # the masked-LM scores run in this process (pilot-sized)
    encoder = load_encoder(cfg.model.checkpoint, device="cpu", expected_sha256=cfg.model.checkpoint_sha256)
    masked_lm = encoder.masked_lm()
    if masked_lm is None:
        result.variants, llr_floor = absent_scores(result.variants, encoder.masked_lm_absent), None
        result.summary["llr_absent"] = encoder.masked_lm_absent
    else:
        result.variants, llr_floor = add_llr_scores(result.variants, masked_lm.model, cfg, result.genes,
                                                    local_flank)
    result.summary.update(llr_noise_floor=llr_floor, seconds=round(time.time() - t0, 1))
    write_outputs(Path(out), result.variants, result.subjects, result.summary, result.recipe)
    return result


def absent_scores(variants: pl.DataFrame, reason: str) -> pl.DataFrame:
    """The score columns of an encoder without a masked-LM score: NaN, and `llr_method` says why."""
    nan = pl.lit(float("nan"), pl.Float64)
    return variants.with_columns(*[nan.alias(c) for c, kind in SCORE_COLUMNS.items() if kind is float],
                                 pl.lit(f"absent: {reason}").alias("llr_method"))


def pilot_summary_line(result: PilotResult) -> str:
    s = result.summary
    strand = s["strand_check"]
    check = (f"strand check max |diff| {strand['max_abs_difference']:.2e}" if strand.get("run")
             else f"strand check skipped ({strand['reason']})")
    return (f"{s['variants']} variants, {s['subjects']} subjects x {s['genes']} genes in {s['seconds']} s; "
            f"{check}")
