"""Per gene: window sums -> haplotype embeddings -> subject embeddings -> one committed Parquet shard.

Why in a worker: the fan-out to subjects is the only stage whose size scales with the cohort, so it runs next
to the data and writes straight to the output folder; the driver only sees one small stats row per gene.
Commit protocol: the unit's stats JSON is written first, then the shard goes to a temporary name and is
renamed to `shards/<gene_id>.parquet`. A shard that exists is a finished unit (its stats exist too).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.cohort.plan import GenePlan
from neuro_caduceus.variants.genotype_counts import excluded_by_missing, n_missing_of, unit_genotype_stats

RECIPE_KEY = b"neuro_caduceus.recipe"
SUBJECT_CHUNK = 50_000  # subjects per Parquet row group (bounds the memory of the fan-out)


def shard_schema(dim: int, recipe: dict, n_missing: bool = False) -> pa.Schema:
    """The shard layout; `n_missing` (the job's shards) adds the subject's missing calls in the gene."""
    fields = [
        ("subject_id", pa.string()),
        ("gene_id", pa.string()),
        ("gene_name", pa.string()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ]
    if n_missing:  # null where the source gave no counts (Parquet export, reference strategy)
        fields.append(("n_missing", pa.int32()))
    return pa.schema(fields, metadata={RECIPE_KEY: json.dumps(recipe, sort_keys=True).encode()})


def unit_name(gene_id: str) -> str:
    """File-safe, deterministic unit id (gene ids are already safe; anything else is replaced)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", gene_id)


def haplotype_embeddings(plan: GenePlan) -> tuple[np.ndarray, np.ndarray]:
    """(reference embedding [d], haplotype embeddings [n_haps, d]) in float64, exact window pooling."""
    sums, lengths = plan.sums, plan.lengths
    ref_sum = sums[plan.ref_slots].sum(axis=0)
    ref_len = int(lengths[plan.ref_slots].sum())
    haps = np.empty((len(plan.hap_keys), sums.shape[1]))
    for h, repl in enumerate(plan.hap_repl):
        total, n = ref_sum.copy(), ref_len
        for window, slot in repl:
            ref_slot = plan.ref_slots[window]
            total += sums[slot] - sums[ref_slot]
            n += int(lengths[slot] - lengths[ref_slot])
        haps[h] = total / n
    return ref_sum / ref_len, haps


def subject_embeddings(
    plan: GenePlan, subjects: list[str], strategy: str, ref: np.ndarray, haps: np.ndarray
) -> np.ndarray:
    """float32 [n_subjects, d]: diploid = mean of hap1 and hap2, consensus = its haplotype; else reference."""
    index = {s: i for i, s in enumerate(subjects)}
    ploidy = 2 if strategy == "diploid" else 1
    which = np.full((len(subjects), ploidy), -1, dtype=np.int64)  # -1 = reference haplotype
    for h, carriers in enumerate(plan.carriers):
        for subject, hap_index in carriers:
            i = index.get(subject)
            if i is not None:
                which[i, min(hap_index, ploidy) - 1] = h
    table = np.vstack([haps, ref[None, :]])  # row -1 = reference
    return table[which].mean(axis=1).astype(np.float32)


def write_unit(
    plan: GenePlan, subjects: list[str], strategy: str, out_dir: str, recipe: dict, stats: dict,
    max_missing: int | None = None,
) -> int:
    """Write the unit's stats and its shard (temp name, then rename); returns rows written.

    Subject-genes with more than `max_missing` missing calls are not written (counted in the stats).
    """
    counts = getattr(plan, "genotype_counts", None)  # hook (variants/genotype_counts.py)
    stats.update(unit_genotype_stats(counts, subjects, max_missing))
    excluded = {s for s, _ in excluded_by_missing(counts, max_missing)}
    ref, haps = haplotype_embeddings(plan)
    name = unit_name(plan.unit.gene_id)
    fs, root = fsspec.core.url_to_fs(out_dir)
    _write_text(fs, f"{root}/units/{name}.json", json.dumps(stats, indent=1, sort_keys=True))
    schema = shard_schema(haps.shape[1] if haps.size else ref.shape[0], recipe, n_missing=True)
    final = f"{root}/shards/{name}.parquet"
    tmp = f"{root}/shards/.{name}.parquet.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f, pq.ParquetWriter(f, schema) as writer:
        for start in range(0, len(subjects), SUBJECT_CHUNK):
            chunk = subjects[start : start + SUBJECT_CHUNK]
            emb = subject_embeddings(plan, chunk, strategy, ref, haps)
            n = len(chunk)
            keep = pa.array([s not in excluded for s in chunk])
            writer.write_table(
                pa.table(
                    {
                        "subject_id": pa.array(chunk, pa.string()),
                        "gene_id": pa.array([plan.unit.gene_id] * n, pa.string()),
                        "gene_name": pa.array([plan.unit.gene_name] * n, pa.string()),
                        "embedding": pa.FixedSizeListArray.from_arrays(emb.reshape(-1), emb.shape[1]),
                        "n_missing": n_missing_of(counts, chunk),
                    },
                    schema=schema,
                ).filter(keep)
            )
    fs.mv(tmp, final)
    return len(subjects) - stats["excluded_subject_genes"]


def _write_text(fs: Any, path: str, text: str) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "w") as f:
        f.write(text)
    fs.mv(tmp, path)
