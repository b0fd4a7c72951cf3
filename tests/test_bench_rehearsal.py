"""benchmarks/bench_rehearsal.py at a small size (4,700 subjects, 2 genes): the four real commands over an
exome cohort written as the Parquet haplotype export, with their figures checked against the files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("bench_rehearsal", ROOT / "benchmarks" / "bench_rehearsal.py")
bench_rehearsal = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_rehearsal)

SUBJECTS, GENES = 4_700, 2  # 1/100 of the subjects of the full size (470,000)


def test_rehearsal_small(tmp_path: Path, ray_session) -> None:
    figures = bench_rehearsal.rehearse(tmp_path, SUBJECTS, GENES, window=512, components=64, in_process=True)
    job, stages = figures["job"], figures["stages"]
    export = tmp_path / "cohort" / "export"
    haplotypes = [pq.read_table(f) for f in sorted((export / "haplotypes").glob("*.parquet"))]
    assert len(haplotypes) == GENES and job["genes"] == GENES and job["subjects"] == SUBJECTS
    assert job["unique_haplotypes"] == sum(t.num_rows for t in haplotypes)  # one row per distinct haplotype
    carriers = {c["subject_id"] for t in haplotypes for row in t.column("carriers").to_pylist() for c in row}
    assert len(carriers) < SUBJECTS  # some subjects carry only reference haplotypes
    counts = pq.read_table(export / "genotype_counts")
    assert 0 < sum(counts.column("n_missing").to_pylist()) < 0.01 * SUBJECTS * job["sites"] / GENES * GENES
    sites = {(v["pos"], v["ref"]) for t in haplotypes for hap in t["variants"].to_pylist() for v in hap}
    missing = zip(counts["n_missing"].to_pylist(), counts["missing_records"].to_pylist(), strict=True)
    for n, records in missing:  # each missing call names a distinct record of the export
        assert len(records) == len({(r["pos"], r["ref"]) for r in records}) == n
        assert all((r["pos"], r["ref"]) in sites for r in records)
    # naive tokens: both haplotypes of every subject over every gene's captured bases (indels aside)
    captured = 2 * SUBJECTS * GENES * 10 * 180
    assert abs(job["tokens_naive"] - captured) < 0.001 * captured
    assert 0 < job["tokens"] <= job["windows"] * 512 and job["token_reduction_x"] > 100
    assert [s["stage"] for s in stages] == ["embed-cohort", "subject-matrix", "pca", "residualize"]
    assert all(s["s"] > 0 and s["output_mb"] > 0 and s["driver_peak_mb"] >= s["driver_private_mb"] > 0
               for s in stages)
    residuals = pq.read_table(tmp_path / "resid" / "residuals")
    assert residuals.num_rows == SUBJECTS
    features = np.stack(residuals.column("features").to_numpy(zero_copy_only=False))
    assert np.abs(features.mean(axis=0)).max() < 1e-6 * max(1.0, np.abs(features).max())  # OLS: centred
