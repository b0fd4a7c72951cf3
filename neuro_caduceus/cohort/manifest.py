"""manifest.json and the one-screen summary: what was embedded, what was reused, and what it cost.

Why from the per-unit stats files: a resumed run must report the whole output (units of earlier runs
included) with the same totals an uninterrupted run reports; what this run did (store hits, windows per
actor, throughput) is appended to the `runs` list, so a resumed run never overwrites the first run's.
"""

from __future__ import annotations

import json
import time
import uuid

from neuro_caduceus.cohort.config import CohortConfig
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.shards import REFERENCE_KEY
from neuro_caduceus.cohort.store import store_identity
from neuro_caduceus.io import check_format, write_atomic

MANIFEST_FORMAT = 1  # manifest.json's layout (its `format_version`)
SUMMED = (
    "unique_haplotypes", "windows_embedded", "naive_windows", "haplotype_windows_built",
    "haplotype_windows_equal_reference", "haplotype_windows_deduplicated", "tokens_embedded", "naive_tokens",
    "variants_applied", "variants_skipped_overlap", "variants_rejected_ref_mismatch", "variants_ignored",
    "reference_iupac_as_n",
)


def new_run(damaged: dict) -> dict:
    """This run's entry of the manifest's `runs` list (filled as stats rows arrive)."""
    return {
        "run_id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "genes_planned": 0, "genes_written": 0, "batches": 0, "windows_new": 0, "store_hits": 0,
        "windows_embedded": 0, "tokens_embedded": 0, "bases_embedded": 0, "model_seconds": 0.0,
        "per_actor": {},
        "damaged_redone": {"shards": len(damaged["shards"]), "store_batches": len(damaged["store_batches"]),
                           "partial_store_batches_removed": damaged["partial_store_batches_removed"],
                           "details": damaged["shards"] + damaged["store_batches"]},
    }


def count_batch(run: dict, row: dict, genes: list[dict]) -> None:
    """Fold one actor stats row (and the planning notes of the genes it closes) into this run's counts, per
    actor and in total."""
    actor = run["per_actor"].setdefault(row["actor"], {"batches": 0, "windows": 0, "tokens": 0,
                                                       "model_seconds": 0.0, "device": row["device"]})
    actor["batches"] += 1
    actor["windows"] += row["windows"]
    actor["tokens"] += row["tokens"]
    actor["model_seconds"] += row["model_seconds"]
    run["batches"] += 1
    run["windows_embedded"] += row["windows"]
    run["tokens_embedded"] += row["tokens"]
    run["bases_embedded"] = run.get("bases_embedded", 0) + row["bases"]
    run["model_seconds"] += row["model_seconds"]
    for g in genes:
        run["genes_planned"] += 1
        run["store_hits"] += g["stored"]
        run["windows_new"] += g["new"]


def earlier_runs(folder: JobFolder) -> list[dict]:
    """The `runs` of the folder's manifest.json (none yet: []); a newer manifest format is refused."""
    if not folder.fs.exists(folder.manifest):
        return []
    with folder.fs.open(folder.manifest, "r") as f:
        manifest = json.load(f)
    check_format(manifest.get("format_version"), MANIFEST_FORMAT, folder.manifest)
    return manifest.get("runs", [])


def model_tokens(recipe: dict, runs: list[dict]) -> dict:
    """The encoder's tokens beside the bases they cover, over every run (`tokens` above counts bases)."""
    tokens = sum(r.get("tokens_embedded", 0) for r in runs)
    bases = sum(r.get("bases_embedded", r.get("tokens_embedded", 0)) for r in runs)
    encoder = recipe.get("encoder", {})
    return {"encoder": encoder.get("family"), "tokenizer": encoder.get("tokenizer"), "embedded": tokens,
            "bases_embedded": bases, "tokens_per_base": tokens / bases if bases else None}


def build_manifest(folder: JobFolder, cfg: CohortConfig, recipe: dict, units: list, unit_stats: list[dict],
                   subjects: list[str], qc: dict, n_resumed: int, new_stats: list[dict], seconds: float,
                   run: dict) -> dict:
    """`unit_stats`: every unit's committed stats (`shards.read_unit_stats`), in `units` order."""
    # the reference vector is in reference.parquet, not the manifest
    per_gene = [{k: v for k, v in stats.items() if k != REFERENCE_KEY} for stats in unit_stats]
    totals = {k: sum(int(g.get(k, 0)) for g in per_gene) for k in SUMMED}
    run_rows = sum(g["subjects"] for g in new_stats)
    run_tokens = run["tokens_embedded"]
    throughput = {
        "seconds": round(seconds, 2),
        "subject_gene_embeddings_per_s": run_rows / seconds if seconds > 0 else None,
        "tokens_per_s": run_tokens / seconds if seconds > 0 else None,
        "bases_per_s": run["bases_embedded"] / seconds if seconds > 0 else None,
    }
    run = {**run, "genes_written": len(new_stats), "throughput": throughput}
    return {
        "format_version": MANIFEST_FORMAT,
        "output": cfg.output.dir,
        "recipe_id": cfg.output.recipe_id,
        "config_hash": recipe["config_hash"],
        "checkpoint_sha256": recipe.get("checkpoint_sha256"),
        "subjects": len(subjects),
        "genes": len(units),
        "rows": len(subjects) * len(units),
        "units": {"total": len(units), "done_before": n_resumed, "done_now": len(new_stats)},
        "variants": {
            "qc": qc.get("variants"),
            "applied": totals["variants_applied"],
            "skipped_overlap": totals["variants_skipped_overlap"],
            "rejected_ref_mismatch": totals["variants_rejected_ref_mismatch"],
            "ignored": totals["variants_ignored"],
        },
        "unique_haplotypes": totals["unique_haplotypes"],
        "reference": {"iupac_bases_read_as_n": totals["reference_iupac_as_n"]},  # over the genes' windows
        "windows": {
            "embedded": totals["windows_embedded"],
            "naive": totals["naive_windows"],
            "reused": totals["naive_windows"] - totals["windows_embedded"],
            "haplotype_windows_built": totals["haplotype_windows_built"],
            "haplotype_windows_equal_reference": totals["haplotype_windows_equal_reference"],
            "haplotype_windows_deduplicated": totals["haplotype_windows_deduplicated"],
        },
        "tokens": {
            "embedded": totals["tokens_embedded"],
            "naive": totals["naive_tokens"],
            "reduction": totals["naive_tokens"] / max(1, totals["tokens_embedded"]),
        },
        "model_tokens": model_tokens(recipe, [*earlier_runs(folder), run]),
        "window_store": {"url": cfg.window_store, "identity": store_identity(recipe)},
        "throughput": throughput,
        "runs": [*earlier_runs(folder), run],
        "per_gene": per_gene,
    }


def write_manifest(folder: JobFolder, manifest: dict) -> None:
    write_atomic(folder.fs, folder.manifest, json.dumps(manifest, indent=1))


def format_summary(m: dict) -> str:
    w, t, v, u, r = m["windows"], m["tokens"], m["variants"], m["units"], m["runs"][-1]
    lines = [
        f"cohort embeddings -> {m['output']}  (recipe {m['recipe_id']}, config {m['config_hash']})",
        f"  subjects {m['subjects']:,} x genes {m['genes']:,} = {m['rows']:,} rows "
        f"(units: {u['done_now']} now, {u['done_before']} from an earlier run)",
        f"  variants applied {v['applied']:,}, skipped (overlap) {v['skipped_overlap']:,}, "
        f"rejected (REF mismatch) {v['rejected_ref_mismatch']:,}, ignored (*, symbolic) {v['ignored']:,}",
        f"  unique non-reference haplotypes {m['unique_haplotypes']:,}",
        *([f"  reference: {iupac:,} IUPAC ambiguity code(s) in the genes' windows read as N"]
          if (iupac := m.get("reference", {}).get("iupac_bases_read_as_n")) else []),
        f"  windows embedded {w['embedded']:,} of {w['naive']:,} naive (reused {w['reused']:,})",
        f"  tokens embedded {t['embedded']:,} of {t['naive']:,} naive: {t['reduction']:.1f}x fewer",
        f"  this run: {r['windows_embedded']:,} windows embedded in {r['batches']:,} batches by "
        f"{len(r['per_actor'])} actor(s), {r['store_hits']:,} window store hits",
        f"  {m['throughput']['seconds']:.1f} s this run"
        + (f", {m['throughput']['subject_gene_embeddings_per_s']:,.0f} subject-gene embeddings/s"
           if u["done_now"] else ""),
        f"  shards: {m['output']}/shards/<gene_id>.parquet; manifest: {m['output']}/manifest.json",
    ]
    return "\n".join(lines)
