"""The one embedding stage of the code base: window-job batches -> encoder actors -> the window store.

Why a class: loading weights once per actor, not per batch (Ray's batch-inference shape). A batch is one
Arrow row of window jobs (cohort.window_jobs); the actor rebuilds each window from its own open reference
and the job's recipe right before the forward, checks it against the content key, pools it with
the encoder's `pool_windows` (its batching rule keeps a window's result independent of the batch it came
in) and commits the batch to the store itself. Only a small stats row per batch
leaves the actor. The cohort job and the pilot both call `embed_window_batches`.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

import pyarrow as pa
import ray

from neuro_caduceus.cohort.config import ActorPlacement, CohortConfig
from neuro_caduceus.cohort.plan import content_key, open_reference
from neuro_caduceus.cohort.store import WindowStore
from neuro_caduceus.cohort.window_jobs import job_window
from neuro_caduceus.genome.haplotypes import build_sequence
from neuro_caduceus.model import encoder_class, load_encoder
from neuro_caduceus.model.encoder import recorded_with_dtype

STATS_SCHEMA = pa.schema([("batch_id", pa.string()), ("actor", pa.string()), ("windows", pa.int64()),
                          ("tokens", pa.int64()), ("bases", pa.int64()), ("genes_planned", pa.string())])


def check_window(cfg: CohortConfig) -> None:
    """model.window against the encoder's limits (config.json alone); a clear error before any work."""
    kind = encoder_class(cfg.model.checkpoint)
    kind.limits.check(cfg.model.window, kind.family, "model.window")


def model_recipe(cfg: CohortConfig) -> dict:
    """The model part of the recipe (checkpoint sha256, d_model, pooling, `encoder`: family, tokenizer and
    its hash, window, ...), built on CPU in fp32.

    Why not an encoder of the configured dtype: the driver may have no GPU (bfloat16 needs CUDA); only the
    model's identity is needed here, the actors build the real one.
    """
    check_window(cfg)
    encoder = load_encoder(cfg.model.checkpoint, device="cpu", window=cfg.model.window,
                           stride=cfg.model.effective_stride, expected_sha256=cfg.model.checkpoint_sha256)
    return recorded_with_dtype(encoder.recipe(), cfg.model.dtype)


def actor_placement(cfg: CohortConfig) -> ActorPlacement:
    """The embedding actors' GPU share and device on the connected cluster."""
    return cfg.actor_placement(ray.cluster_resources().get("GPU", 0))


class EmbedWindows:
    """map_batches callable: window-job batches in, one stats row per committed batch out."""

    def __init__(self, checkpoint: str, device: str, dtype: str, window_batch_size: int, threads: int,
                 reference_fasta: str, store_url: str, identity: dict):
        import torch

        torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(checkpoint, device=device, dtype=dtype, batch_size=window_batch_size,
                                    expected_sha256=identity["checkpoint_sha256"])  # what the driver loaded
        self.reference_fasta = reference_fasta
        self.store = WindowStore(store_url, identity)
        self.actor = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"  # new after a restart

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        cols = (batch.column(name).to_pylist() for name in ("batch_id", "jobs", "genes_planned"))
        for batch_id, jobs, genes in zip(*cols, strict=True):
            seqs = self._sequences(jobs)
            if seqs:
                sums, lengths = self.encoder.pool_windows(seqs)
                self.store.commit([j["key"] for j in jobs], lengths, sums)
            rows.append({"batch_id": batch_id, "actor": self.actor, "windows": len(seqs),
                         "tokens": int(sum(self.encoder.tokens(s) for s in seqs)),
                         "bases": int(sum(len(s) for s in seqs)), "genes_planned": json.dumps(genes)})
        return pa.Table.from_pylist(rows, schema=STATS_SCHEMA)

    def _sequences(self, jobs: list[dict[str, Any]]) -> list[str]:
        """Each job's window built from the reference and its variants; checked against the content key."""
        reference = open_reference(self.reference_fasta)
        seqs = []
        for window_job in jobs:
            window, variants = job_window(window_job)
            seq = build_sequence(reference, window, variants).sequence
            if content_key(seq) != window_job["key"] or len(seq) != window_job["length"]:
                where = f"{window_job['gene_id']}#{window_job['window']}"
                raise RuntimeError(f"window {where}: the rebuilt sequence does not match its key "
                                   f"{window_job['key']} (reference {self.reference_fasta} changed?)")
            seqs.append(seq)
        return seqs


def embed_window_batches(ds: Any, cfg: CohortConfig, store_url: str, identity: dict) -> Any:
    """Ray Data: window-job batches (BATCH_SCHEMA rows) -> stats rows; pooled results go to the store."""
    compute = cfg.compute
    placement = actor_placement(cfg)
    return ds.map_batches(
        EmbedWindows,
        fn_constructor_kwargs={
            "checkpoint": cfg.model.checkpoint, "device": placement.device, "dtype": cfg.model.dtype,
            "window_batch_size": compute.window_batch_size, "threads": int(max(1, compute.cpus_per_actor)),
            "reference_fasta": cfg.inputs.reference_fasta, "store_url": store_url, "identity": identity,
        },
        # at most 2 batches queued per actor: a gene's batches spread over the pool, and a dead actor loses
        # little; Ray Data restarts a dead actor and retries its batches
        compute=ray.data.ActorPoolStrategy(min_size=compute.actors_min, max_size=compute.actors_max,
                                           max_tasks_in_flight_per_actor=2),
        batch_size=1, batch_format="pyarrow", **placement.resources(compute.cpus_per_actor),
    )
