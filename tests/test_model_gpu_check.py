"""benchmarks/gpu_check.py in CPU smoke mode: every section runs and reports, so the GPU run is prepared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check_smoke.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed"] == []
    assert report["device"]["backends"] == ["torch", "numba"]
    golden = report["golden"]["rows"]
    assert {r["path"] for r in golden} == {"torch", "numba"} and all(r["max_abs_diff"] < 1e-4 for r in golden)
    precision = report["precision"]["rows"]
    assert all(r["rc_rel"] < 1e-5 and r["snv_effect_rel_median"] > 0 for r in precision)
    speed = [r for r in report["speed"]["rows"] if "tokens_per_s" in r]
    assert {r["path"] for r in speed} == {"torch", "numba"} and all(r["tokens_per_s"] > 0 for r in speed)
    cohort = report["cohort"]["rows"]
    assert len(cohort) == 2 and all(r["same_keys"] and r["max_abs_diff"] <= 1e-4 for r in cohort)
    assert "| path | dtype | L | batch |" in proc.stdout  # the printed speed table

    bert = report["dnabert2"]["rows"]
    assert report["dnabert2"]["ok"] and bert[0]["value"] < 1e-4  # golden on the device
    assert any(r.get("tokens_per_s", 0) > 0 and r.get("bases_per_s", 0) > 0 for r in bert)
