"""The Caduceus actor of the Ray Data pipeline: a callable class that owns one model (one GPU or CPU slot).

Why a class: loading weights once per actor, not per batch (Ray's batch-inference shape). A batch holds a
few genes' plans; their distinct windows are pooled in one `Embedder.pool_windows` call, which batches
equal-length windows together (no padding), so results do not depend on how Ray forms batches.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# Test hook (read on the driver, passed to the actor): after this many batches the actor exits once (a marker
# file makes it happen only once), to prove that a killed actor's genes are redone. Never set in production.
KILL_AFTER_ENV = "NEURO_CADUCEUS_DEBUG_KILL_ACTOR_AFTER"
KILL_MARKER_ENV = "NEURO_CADUCEUS_DEBUG_KILL_MARKER"


class EmbedWindows:
    """map_batches callable: adds pooled (sum, length) per distinct window to every gene plan in the batch."""

    def __init__(
        self,
        checkpoint: str,
        device: str,
        dtype: str,
        window_batch_size: int,
        threads: int = 1,
        debug_kill: tuple[int, str] | None = None,
    ):
        import torch

        from neuro_caduceus.model import from_pretrained
        from neuro_caduceus.model.embedder import Embedder

        torch.set_num_threads(max(1, threads))
        self.embedder = Embedder(
            from_pretrained(checkpoint), device=device, dtype=dtype, batch_size=window_batch_size
        )
        self.batches = 0
        self.debug_kill = debug_kill

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        plans = [pickle.loads(p) for p in batch["plan"]]
        seqs = [s for plan in plans for s in plan.seqs]
        if seqs:
            sums, lengths = self.embedder.pool_windows(seqs)
        else:
            sums, lengths = np.zeros((0, self.embedder.dim)), np.zeros(0, dtype=np.int64)
        start = 0
        for plan in plans:
            n = len(plan.seqs)
            plan.sums, plan.lengths = sums[start : start + n], lengths[start : start + n]
            plan.seqs = []  # the sequences are no longer needed downstream
            start += n
        self.batches += 1
        self._maybe_die()
        return {"gene_id": batch["gene_id"], "plan": np.array([pickle.dumps(p) for p in plans], dtype=object)}

    def _maybe_die(self) -> None:
        if self.debug_kill is None:
            return
        after, marker = self.debug_kill
        if self.batches >= after and not Path(marker).exists():
            Path(marker).write_text("killed\n")
            os._exit(1)
