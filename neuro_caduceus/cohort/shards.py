"""Per gene: window sums -> haplotype embeddings -> subject embeddings -> one committed Parquet shard.

Why in a worker: the fan-out to subjects is the only stage whose size scales with the cohort, so it runs next
to the data and writes straight to the output folder; the driver only sees one small stats row per gene.
Commit protocol: the shard is written to a temporary name; its row count, size and sha256 go into the unit's
stats JSON (`units/<gene_id>.json`), written next; then the shard is renamed to `shards/<gene_id>.parquet`.
A shard that exists is a finished unit; a resumed run still verifies it against its stats (`check_unit`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.cohort.additive import additive_embeddings, dosages
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.plan import GenePlan
from neuro_caduceus.cohort.pooling import window_means
from neuro_caduceus.genome.genotype_counts import excluded_by_missing, n_missing_of, unit_genotype_stats
from neuro_caduceus.genome.strategies import n_haps
from neuro_caduceus.io import SHARD_FORMAT, atomic_path, format_metadata, recipe_metadata, write_atomic

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
    return pa.schema(fields, metadata={**recipe_metadata(recipe), **format_metadata(SHARD_FORMAT)})


def unit_name(gene_id: str) -> str:
    """File-safe, deterministic unit id (gene ids are already safe; anything else is replaced)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", gene_id)


def haplotype_embeddings(plan: GenePlan) -> tuple[np.ndarray, np.ndarray]:
    """(reference embedding [d], haplotype embeddings [n_haps, d]) in float64, exact window pooling."""
    return window_means(plan.sums, plan.lengths, plan.ref_slots, plan.hap_repl)


def subject_embeddings(
    plan: GenePlan, subjects: list[str], strategy: str, ref: np.ndarray, haps: np.ndarray
) -> np.ndarray:
    """float32 [n_subjects, d]: diploid = mean of hap1 and hap2, consensus = its haplotype; else reference."""
    index = {s: i for i, s in enumerate(subjects)}
    ploidy = n_haps(strategy)
    which = np.full((len(subjects), ploidy), -1, dtype=np.int64)  # -1 = reference haplotype
    for h, carriers in enumerate(plan.carriers):
        for subject, hap_index in carriers:
            i = index.get(subject)
            if i is not None:
                which[i, min(hap_index, ploidy) - 1] = h
    table = np.vstack([haps, ref[None, :]])  # row -1 = reference
    return table[which].mean(axis=1).astype(np.float32)


def additive_subject_embeddings(plan: GenePlan, subjects: list[str], ref: np.ndarray,
                                singles: np.ndarray) -> np.ndarray:
    """float32 [n_subjects, d]: e_ref + sum of dosage x (e_v - e_ref), dosages from the plan's carriers."""
    names = ("chrom", "pos", "ref", "alt")
    carrier_rows = pa.Table.from_pylist([
        {"variants": [dict(zip(names, plan.variants[j], strict=True)) for j in hap_variants],
         "carriers": [{"subject_id": s} for s, _ in carriers]}
        for hap_variants, carriers in zip(plan.hap_variants, plan.carriers, strict=True)
    ])
    variants, subject, variant, dosage = dosages(carrier_rows, subjects)
    index = {tuple(v): j for j, v in enumerate(plan.variants)}
    rows = np.array([index[v] for v in variants], dtype=np.int64)
    return additive_embeddings(ref, singles[rows], subject, variant, dosage, len(subjects)).astype(np.float32)


def write_unit(
    plan: GenePlan, subjects: list[str], strategy: str, folder: JobFolder, recipe: dict, stats: dict,
    max_missing: int | None = None,
) -> int:
    """Write the unit's shard (temp name), its stats with the shard's checksum, then commit by rename.

    Subject-genes with more than `max_missing` missing calls are not written (counted in the stats).
    """
    counts = plan.genotype_counts
    stats.update(unit_genotype_stats(counts, subjects, max_missing))
    excluded = {s for s, _ in excluded_by_missing(counts, max_missing)}
    if strategy == "additive":
        ref, singles = window_means(plan.sums, plan.lengths, plan.ref_slots, plan.variant_repl)
    else:
        ref, haps = haplotype_embeddings(plan)
    name = unit_name(plan.unit.gene_id)
    fs = folder.fs
    schema = shard_schema(ref.shape[0], recipe, n_missing=True)
    with atomic_path(folder.shard(name), fs) as tmp:
        with fs.open(tmp, "wb") as f, pq.ParquetWriter(f, schema) as writer:
            for start in range(0, len(subjects), SUBJECT_CHUNK):
                chunk = subjects[start : start + SUBJECT_CHUNK]
                if strategy == "additive":
                    emb = additive_subject_embeddings(plan, chunk, ref, singles)
                else:
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
        size, digest = _file_digest(fs, tmp)
        rows = len(subjects) - stats["excluded_subject_genes"]
        stats = {**stats, "shard": {"rows": rows, "bytes": size, "sha256": digest}}
        write_atomic(fs, folder.unit_stats(name), json.dumps(stats, indent=1, sort_keys=True))
    return rows


def _file_digest(fs: Any, path: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check_unit(folder: JobFolder, name: str) -> str | None:
    """None if the committed shard matches what its stats recorded at commit, else what is wrong."""
    fs = folder.fs
    try:
        with fs.open(folder.unit_stats(name), "r") as f:
            recorded = json.load(f).get("shard")
    except (OSError, ValueError) as err:
        return f"stats file unreadable ({err})"
    if not recorded:
        return "no row count or checksum recorded at commit"
    path = folder.shard(name)
    try:
        with fs.open(path, "rb") as f:
            rows = pq.read_metadata(f).num_rows
        size, digest = _file_digest(fs, path)
    except (OSError, ValueError, pa.ArrowException) as err:
        return f"footer unreadable ({err})"
    if rows != recorded["rows"]:
        return f"{rows} rows, {recorded['rows']} recorded at commit"
    if (size, digest) != (recorded["bytes"], recorded["sha256"]):
        return "size or sha256 differs from the one recorded at commit"
    return None
