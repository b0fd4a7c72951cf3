"""benchmarks/gpu_check.py in its CPU smoke mode: every section runs and reports, so the GPU run is prepared."""

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


def test_flops_and_bytes_of_the_bound() -> None:
    """The bound's cost model against a hand count for d118-l4 PS (one token, both halves and directions)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import model_cost

    from neuro_caduceus.model import preset_config

    cfg = preset_config("caduceus-ps_seqlen-1k_d_model-118_n_layer-4")
    d, E, N, r = 118, 236, 16, 8
    proj = 2 * (d * 2 * E) + 2 * 2 * (E * (r + 2 * N) + r * E) + 2 * E * d
    per_dir = 2 * 4 * E + 9 * E * N + 6 * E
    flops, bytes_ = model_cost(cfg, "float32")
    assert flops == 2 * 4 * (proj + 2 * per_dir)
    assert bytes_ > 0 and model_cost(cfg, "bfloat16")[1] < bytes_
