"""`make demo` end to end, smaller: the same module in a fresh process (its own local Ray and Hail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from neuro_caduceus.demo import SECOND_NAME

REPO = Path(__file__).parents[1]


def test_demo_runs_every_stage_and_labels_the_random_checkpoint(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run(
        [sys.executable, "-m", "neuro_caduceus.demo", "--out", str(out), "--samples", "80", "--genes", "3",
         "--perms", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("RANDOM tiny-ps checkpoint") >= 2  # said before and after the run
    assert "== demo finished" in proc.stdout
    manifest = json.loads((out / "embeddings" / "manifest.json").read_text())
    assert (manifest["subjects"], manifest["genes"], manifest["rows"]) == (80, 3, 240)
    residuals = pq.read_table(out / "residuals" / "residuals")
    assert residuals.num_rows == 80 and b"neuro_caduceus.recipe" in residuals.schema.metadata
    # the closing verdict: the planted gene found by the per-gene test, ranked first by LOGO (whose 3
    # permutations here cannot reach p < 0.05)
    verdict = next(ln for ln in proc.stdout.splitlines() if "ranked first with corrected p < 0.05?" in ln)
    assert "LOGO: no (first SYN2," in verdict and "per-gene test: yes (first SYN2," in verdict, verdict
    for path in ("pca/pca_model.npz", "logo/logo_delta_auc.csv", "gene_test/gene_test_results.csv",
                 "cca/cca_summary.json"):
        assert (out / path).stat().st_size > 0, path
    second = json.loads((out / f"embeddings_{SECOND_NAME}" / "manifest.json").read_text())
    assert (second["subjects"], second["genes"]) == (80, 3)
    assert second["checkpoint_sha256"] != manifest["checkpoint_sha256"]
    summary = json.loads((out / "compare" / "compare_summary.json").read_text())
    assert [e["folder"] for e in summary["encoders"]] == [str((out / "embeddings").resolve()),
                                                          str((out / f"embeddings_{SECOND_NAME}").resolve())]
    assert summary["n"] == 80 and summary["logo"]["same_folds"] and summary["cca"]
    assert "compare_cka_all_genes" in proc.stdout
