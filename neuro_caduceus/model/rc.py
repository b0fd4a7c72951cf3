"""Reverse-complement invariance of pooled embeddings, measured on given windows with a given encoder.

Why here: the measurement needs only the model; choosing the windows (held-out genes of a reference) is the
cohort job's part (neuro_caduceus.cohort.rc_check), reading a FASTA is `verify-rc`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RCWindow:
    gene_id: str
    chrom: str
    start: int
    sequence: str


def reverse_complement(seq: str) -> str:
    return seq.translate(str.maketrans("ACGTNacgtn", "TGCANtgcan"))[::-1]


def check_windows(encoder: Any, windows: list[RCWindow]) -> dict:
    """Embed each window and its reverse complement with the production encoder; deviations per window.

    `ph_pass_disagreement`: for an encoder that averages two strand passes (Caduceus PH, DNABERT-2), how far
    the passes alone disagree before the averaging; None when invariance is built in (Caduceus PS).
    """
    seqs = [w.sequence for w in windows]
    fwd, counts = encoder.pool_windows(seqs)
    rev, _ = encoder.pool_windows([reverse_complement(s) for s in seqs])
    fwd, rev = fwd / counts[:, None], rev / counts[:, None]
    dev = np.abs(fwd - rev).max(axis=1)
    scale = np.maximum(np.abs(fwd).max(axis=1), np.finfo(float).tiny)
    passes = encoder.pass_disagreement(seqs)
    return {
        "windows": [{"gene_id": w.gene_id, "chrom": w.chrom, "start": w.start, "length": len(w.sequence),
                     "max_abs_deviation": float(d), "relative_deviation": float(d / m),
                     "ph_pass_disagreement": None if passes is None else passes[i]}
                    for i, (w, d, m) in enumerate(zip(windows, dev, scale, strict=True))],
        "max_abs_deviation": float(dev.max()) if len(dev) else 0.0,
        "relative_deviation": float((dev / scale).max()) if len(dev) else 0.0,
        "ph_pass_disagreement": None if passes is None else max(passes, default=0.0),
    }
