"""The stats commands of docs/stats.md run as written, on shards and covariates named as in the docs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from helpers import bash_commands, write_shards
from typer.testing import CliRunner

from neuro_caduceus.cli import app


def test_documented_stats_commands_run_as_written(ray_session, tmp_path, monkeypatch):
    subjects = [f"S{i:03d}" for i in range(40)]
    write_shards(tmp_path / "out" / "embeddings", subjects)
    rng = np.random.default_rng(0)
    cov = pl.DataFrame({"subject_id": subjects, "age": rng.normal(60, 8, 40), "sex": rng.integers(0, 2, 40),
                        **{f"PC{i}": rng.normal(size=40) for i in range(1, 11)},
                        "batch": rng.choice([-1, 3, 12], 40)})
    cov.write_csv(tmp_path / "covariates.tsv", separator="\t")
    monkeypatch.chdir(tmp_path)
    commands = bash_commands("stats.md")
    assert [c[0] for c in commands] == ["subject-matrix", "pca", "residualize"]
    for args in commands:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
    sm = json.loads((tmp_path / "out" / "sm" / "subject_matrix_summary.json").read_text())
    assert sm["block_scaling"] == "total_variance"
    pca = json.loads((tmp_path / "out" / "pca" / "pca_summary.json").read_text())
    assert pca["n_components"] == 12 and pca["n_components_requested"] == 512  # 3 genes x 4 dims
    res = json.loads((tmp_path / "out" / "resid" / "residualize_summary.json").read_text())
    assert res["design_columns"][-2:] == ["batch=3", "batch=12"]  # integer codes one-hot, reference -1
