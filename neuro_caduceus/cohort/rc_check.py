"""The reverse-complement check as a stage: run before a cohort job scales out, recorded, and gating.

Why: mean pooling of a strand-invariant embedding is only sound if the checkpoint really is invariant with
the production window, dtype and device (a half-precision kernel or a wrong complement map breaks it). The
check embeds a few reference windows of held-out genes (genes of the annotation outside the gene set, so it
says nothing about the analysed genes' data) and their reverse complements:

- `max_abs_deviation`: max |e(s) - e(rc(s))| of the pooled strand-invariant embeddings, gated by the
  tolerance (relative to the largest |e(s)| entry as `relative_deviation`, also reported);
- encoders that average two strand passes (Caduceus PH, DNABERT-2): the invariant embedding is invariant by
  construction; the stage also reports `ph_pass_disagreement`, the relative difference of the two passes
  before averaging (max |f(s) - f(rc(s))| / max |f(s)|), which shows how strand-specific the model is.
  Caduceus PS (invariance built in) reports None there.
"""

from __future__ import annotations

import json
from typing import Any

from neuro_caduceus.cohort.config import ActorPlacement
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.genome.annotation import read_genes
from neuro_caduceus.genome.fasta import Reference
from neuro_caduceus.io import write_atomic
from neuro_caduceus.model import load_encoder
from neuro_caduceus.model.rc import RCWindow, check_windows


class RCCheckFailed(RuntimeError):
    """The production setup breaks reverse-complement invariance beyond the tolerance."""


def held_out_windows(reference: Any, genes: Any, exclude: set[str], n_genes: int, n_windows: int,
                     window: int) -> tuple[list[RCWindow], bool]:
    """Up to n_windows reference windows (length `window`, clipped to the gene) of n_genes genes outside
    `exclude`, spread over the annotation in gene_id order; falls back to the excluded genes when the
    annotation has no other gene (the bool says whether the genes are held out). Windows of only N skipped.
    """
    rows = sorted(genes.iter_rows(named=True), key=lambda r: r["gene_id"])
    held = [r for r in rows if r["gene_id"] not in exclude]
    pool = held or rows
    picks = [pool[i * len(pool) // n_genes] for i in range(min(n_genes, len(pool)))]
    out = []
    for g in picks:
        length = reference.length(g["chrom"])
        for k in range(n_windows):
            start = g["start"] + k * window
            end = min(start + window, g["end"], length)
            if end - start < 2:
                break
            seq = reference.fetch(g["chrom"], start, end).upper()
            if set(seq) <= {"N"}:
                continue
            out.append(RCWindow(g["gene_id"], g["chrom"], start, seq))
    return out, bool(held)


def run_rc_check(checkpoint: str, reference_fasta: str, gtf: str, gene_ids: list[str], window: int,
                 stride: int | None, dtype: str, device: str, n_genes: int, n_windows: int,
                 tolerance: float) -> dict:
    """The stage body (runs where the embedding actors run: pass their device); returns the record."""
    encoder = load_encoder(checkpoint, device=device, dtype=dtype, window=window, stride=stride)
    windows, held_out = held_out_windows(Reference(reference_fasta), read_genes(gtf), set(gene_ids), n_genes,
                                         n_windows, window)
    record = check_windows(encoder, windows)
    record.update({"enabled": True, "held_out_genes": held_out, "window": window, "stride": stride or window,
                   "dtype": dtype, "device": str(encoder.device), "encoder": encoder.family,
                   "strand": encoder.strand,
                   "tolerance": tolerance, "passed": record["max_abs_deviation"] <= tolerance})
    return record


def check_or_raise(record: dict) -> dict:
    if record.get("enabled") and not record["passed"]:
        raise RCCheckFailed(
            f"RC check failed: max |e(s) - e(rc(s))| = {record['max_abs_deviation']:.3e} > tolerance "
            f"{record['tolerance']:.1e} (window {record['window']}, dtype {record['dtype']}, device "
            f"{record['device']}); fix the checkpoint/dtype or raise rc_check.tolerance knowingly"
        )
    return record


def rc_check_for_job(cfg: Any, folder: JobFolder, gene_ids: list[str], placement: ActorPlacement) -> dict:
    """The cohort job's hook: run once per output folder on the actors' kind of device (a Ray task with
    the actors' GPU share), store `_rc_check.json`, reuse it when resuming; raise RCCheckFailed above the
    tolerance."""
    import ray

    fs, path = folder.fs, folder.rc_check
    rc = cfg.rc_check
    if not rc.enabled:
        return {"enabled": False}
    if fs.exists(path):
        with fs.open(path, "r") as f:
            return check_or_raise(json.load(f))
    task = ray.remote(**placement.resources(1))(run_rc_check)
    record = ray.get(task.remote(cfg.model.checkpoint, cfg.inputs.reference_fasta, cfg.inputs.gtf, gene_ids,
                                 cfg.model.window, cfg.model.stride, cfg.model.dtype, placement.device,
                                 rc.genes, rc.windows, rc.tolerance))
    write_atomic(fs, path, json.dumps(record, indent=1))
    return check_or_raise(record)
