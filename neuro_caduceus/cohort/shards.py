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

from neuro_caduceus.cohort.additive import additive_embeddings, dosages, imputed_dosages
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.plan import GenePlan
from neuro_caduceus.cohort.pooling import window_means
from neuro_caduceus.genome.genotype_counts import excluded_by_missing, n_missing_of, unit_genotype_stats
from neuro_caduceus.genome.strategies import n_haps
from neuro_caduceus.io import SHARD_FORMAT, atomic_path, format_metadata, recipe_metadata, write_atomic

SUBJECT_CHUNK = 50_000  # subjects per Parquet row group (bounds the memory of the fan-out)


REFERENCE_KEY = "reference_embedding"  # in units/<gene>.json: the gene's reference embedding (float32 values)


def shard_schema(dim: int, recipe: dict, n_missing: bool = False) -> pa.Schema:
    """The shard layout; the job's shards (`n_missing`) add the subject's missing calls in the gene and its
    `deviation` from the gene's reference embedding (`deviations`)."""
    fields = [
        ("subject_id", pa.string()),
        ("gene_id", pa.string()),
        ("gene_name", pa.string()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ]
    if n_missing:  # null where the source gave no counts (Parquet export, reference strategy)
        fields += [("n_missing", pa.int32()), ("deviation", pa.float32())]
    return pa.schema(fields, metadata={**recipe_metadata(recipe), **format_metadata(SHARD_FORMAT)})


def deviations(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """float32 [n]: ||e_s - e_ref||_2 per subject, between the float32 values stored (shard row and
    reference.parquet), computed in float64; exactly 0 for a subject whose embedding is the reference."""
    diff = embeddings.astype(np.float32).astype(np.float64) - reference.astype(np.float32).astype(np.float64)
    return np.sqrt((diff * diff).sum(axis=1)).astype(np.float32)


def read_unit_stats(folder: JobFolder, units: list) -> list[dict]:
    """Each committed unit's stats (units/<gene>.json), in `units` order: read once per job, for the
    reference table and the manifest alike."""
    stats = []
    for unit in units:
        with folder.fs.open(folder.unit_stats(unit_name(unit.gene_id)), "r") as f:
            stats.append(json.load(f))
    return stats


def reference_table(units: list, unit_stats: list[dict]) -> pa.Table | None:
    """gene_id, gene_name, embedding (float32 [d]) of each unit's reference haplotype, pooled exactly as a
    subject's gene embedding, from the committed units' stats (`read_unit_stats`, in `units` order); None
    when a unit committed by an older version has none."""
    rows = []
    for unit, stats in zip(units, unit_stats, strict=True):
        embedding = stats.get(REFERENCE_KEY)
        if embedding is None:
            return None
        rows.append((unit.gene_id, unit.gene_name, embedding))
    dim = len(rows[0][2]) if rows else 0
    values = np.array([r[2] for r in rows], dtype=np.float32).reshape(-1)
    return pa.table({"gene_id": pa.array([r[0] for r in rows], pa.string()),
                     "gene_name": pa.array([r[1] for r in rows], pa.string()),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), dim)})


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


def additive_dosages(plan: GenePlan, subjects: list[str], missing: str = "reference") -> tuple[
        np.ndarray, np.ndarray, np.ndarray, int]:
    """(subject index, plan variant index, dosage, imputed pairs) over all `subjects`: the carriers' ALT
    dosages; with `missing: impute` also 2 * p_v for each subject whose call at v's record is missing
    (`additive.imputed_dosages`, the frequency over the whole cohort, not a chunk)."""
    names = ("chrom", "pos", "ref", "alt")
    carrier_rows = pa.Table.from_pylist([
        {"variants": [dict(zip(names, plan.variants[j], strict=True)) for j in hap_variants],
         "carriers": [{"subject_id": s} for s, _ in carriers]}
        for hap_variants, carriers in zip(plan.hap_variants, plan.carriers, strict=True)
    ])
    variants, subject, variant, dosage = dosages(carrier_rows, subjects)
    index = {tuple(v): j for j, v in enumerate(plan.variants)}
    variant = np.array([index[v] for v in variants], dtype=np.int64)[variant]
    if missing != "impute":
        return subject, variant, dosage, 0
    missing_subject, missing_variant = _missing_pairs(plan, subjects)
    n_observed = len(subject)
    subject, variant, dosage, _ = imputed_dosages(subject, variant, dosage, len(subjects), missing_subject,
                                                  missing_variant)
    return subject, variant, dosage, len(subject) - n_observed


def _missing_pairs(plan: GenePlan, subjects: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(subject index, plan variant index) where the subject's call at the variant's record (POS, REF) is
    missing; an error when the source gave counts without the records (an export written before them)."""
    counts = plan.genotype_counts
    if counts is None or "missing_records" not in counts.column_names:
        raise ValueError(f"gene {plan.unit.gene_id}: missing: impute needs each subject's missing records, "
                         "which this genotype source did not give (a Parquet export written by an older "
                         "export-variants: re-export it, or set missing: reference)")
    sites: dict[tuple[int, str], list[int]] = {}
    for j, (_, pos, ref, _) in enumerate(plan.variants):
        sites.setdefault((int(pos), ref), []).append(j)
    index = {s: i for i, s in enumerate(subjects)}
    rows = counts.select(["subject_id", "missing_records"]).to_pylist()
    pairs = [(index[row["subject_id"]], j) for row in rows if row["subject_id"] in index
             for rec in row["missing_records"] or () for j in sites.get((rec["pos"], rec["ref"]), ())]
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def write_unit(
    plan: GenePlan, subjects: list[str], strategy: str, folder: JobFolder, recipe: dict, stats: dict,
    max_missing: int | None = None, missing: str = "reference",
) -> int:
    """Write the unit's shard (temp name), its stats with the shard's checksum, then commit by rename.

    Subject-genes with more than `max_missing` missing calls are not written (counted in the stats).
    `missing: impute` (additive only) replaces each missing call by its expected dosage (counted in the
    stats as `imputed_calls`).
    """
    counts = plan.genotype_counts
    stats.update(unit_genotype_stats(counts, subjects, max_missing))
    excluded = {s for s, _ in excluded_by_missing(counts, max_missing)}
    if strategy == "additive":
        ref, singles = window_means(plan.sums, plan.lengths, plan.ref_slots, plan.variant_repl)
        subject, variant, dosage, stats["imputed_calls"] = additive_dosages(plan, subjects, missing)
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
                    in_chunk = (subject >= start) & (subject < start + len(chunk))
                    emb = additive_embeddings(ref, singles, subject[in_chunk] - start, variant[in_chunk],
                                              dosage[in_chunk], len(chunk)).astype(np.float32)
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
                            "deviation": deviations(emb, ref),
                        },
                        schema=schema,
                    ).filter(keep)
                )
        size, digest = _file_digest(fs, tmp)
        rows = len(subjects) - stats["excluded_subject_genes"]
        stats = {**stats, "shard": {"rows": rows, "bytes": size, "sha256": digest},
                 REFERENCE_KEY: ref.astype(np.float32).tolist()}
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
