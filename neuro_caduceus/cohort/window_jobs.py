"""Window jobs: what the model must embed, as recipes (never sequences), packed into token-bounded batches.

A job names one distinct window by its content key (sha1 of the sequence) and says how to make it: the
window's reference coordinates (contig, segments, orientation) and the variants applied to it. The actor
rebuilds the sequence from the reference right before the forward and checks it against the key. A batch
travels as one Arrow row (a list of job structs plus the genes whose planning it closes), so Ray never
pickles Python objects and a batch never exceeds `tokens_per_batch` model tokens (a single longer window
aside), a window counted as its bases plus the encoder's special tokens (at most one token per base).
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Iterator
from typing import Any

import pyarrow as pa

from neuro_caduceus.genome.regions import Window
from neuro_caduceus.genome.variant_schema import Variant

VARIANT_TYPE = pa.struct([("pos", pa.int64()), ("ref", pa.string()), ("alt", pa.string())])
JOB_TYPE = pa.struct([
    ("key", pa.string()),
    ("gene_id", pa.string()),
    ("window", pa.int32()),
    ("length", pa.int64()),
    ("chrom", pa.string()),
    ("segments", pa.list_(pa.int64())),  # start0, end0, start0, end0, ...
    ("reverse", pa.bool_()),
    ("variants", pa.list_(VARIANT_TYPE)),
])
GENE_TYPE = pa.struct([("gene_id", pa.string()), ("windows", pa.int64()), ("new", pa.int64()),
                       ("stored", pa.int64()), ("tokens_new", pa.int64())])
BATCH_SCHEMA = pa.schema([("batch_id", pa.string()), ("jobs", pa.list_(JOB_TYPE)),
                          ("genes_planned", pa.list_(GENE_TYPE))])


def job(key: str, gene_id: str, window: Window, length: int, variants: list[Variant]) -> dict[str, Any]:
    """One window job (variants: those applied to this window, in position order)."""
    return {
        "key": key, "gene_id": gene_id, "window": window.index, "length": length, "chrom": window.chrom,
        "segments": [x for seg in window.segments for x in seg], "reverse": window.reverse,
        "variants": [{"pos": v.pos, "ref": v.ref, "alt": v.alt} for v in variants],
    }


def job_window(row: dict[str, Any]) -> tuple[Window, list[Variant]]:
    """The window and variants a job row describes (inverse of `job`)."""
    s = row["segments"]
    segments = tuple((s[i], s[i + 1]) for i in range(0, len(s), 2))
    window = Window(row["gene_id"], row["window"], row["chrom"], segments, row["reverse"])
    return window, [Variant(row["chrom"], v["pos"], v["ref"], v["alt"]) for v in row["variants"]]


class BatchPacker:
    """Collects jobs and gene-planned notes; hands out batches of at most `tokens` model tokens as Arrow
    rows (a window costs its bases + `special_tokens`: the most tokens any tokenizer makes of it)."""

    def __init__(self, tokens: int, special_tokens: int = 0):
        self.tokens, self.special, self.jobs, self.genes, self.size = tokens, special_tokens, [], [], 0

    def add(self, window_job: dict[str, Any]) -> Iterator[pa.Table]:
        """Add a job; yields the previous batch first when this one would overflow it."""
        cost = window_job["length"] + self.special
        if self.jobs and self.size + cost > self.tokens:
            yield self._batch()
        self.jobs.append(window_job)
        self.size += cost

    def add_gene(self, gene_id: str, jobs: list[dict[str, Any]],
                 stored: Container[str]) -> Iterator[pa.Table]:
        """Add a planned gene's jobs not in `stored` (yields batches as they fill), then its planning note
        (windows planned, new, already stored, new tokens), which travels with the batch that closes it."""
        new = [window_job for window_job in jobs if window_job["key"] not in stored]
        for window_job in new:
            yield from self.add(window_job)
        self.genes.append({"gene_id": gene_id, "windows": len(jobs), "new": len(new),
                           "stored": len(jobs) - len(new), "tokens_new": sum(j["length"] for j in new)})

    def flush(self) -> Iterator[pa.Table]:
        if self.jobs or self.genes:
            yield self._batch()

    def _batch(self) -> pa.Table:
        row = {"batch_id": [uuid.uuid4().hex], "jobs": [self.jobs], "genes_planned": [self.genes]}
        self.jobs, self.genes, self.size = [], [], 0
        return pa.Table.from_pydict(row, schema=BATCH_SCHEMA)
