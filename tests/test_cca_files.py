"""The `cca` command end to end: join by subject_id with unmatched counts, tables, plot, report."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from neuro_caduceus.analysis.simulate import make_cca_pair
from neuro_caduceus.cli import app


def write_matrix(path, ids, X, recipe: dict | None) -> None:
    feats = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1).astype(np.float32)), X.shape[1])
    table = pa.table({"subject_id": ids, "features": feats})
    if recipe is not None:
        table = table.replace_schema_metadata({"neuro_caduceus.recipe": json.dumps(recipe)})
    pq.write_table(table, path)


def test_cca_command_joins_reports_and_writes_outputs(tmp_path):
    X, Y = make_cca_pair(n=400, p=12, q=6, rho=0.7, seed=3)
    ids = [f"S{i:04d}" for i in range(400)]
    recipe = {"recipe_id": "genetics_gene_fm_test", "gene_list": ["A", "B", "C"], "embedding_dim": 4}
    write_matrix(tmp_path / "gen.parquet", ids[:390], X[:390], recipe)  # 10 only on the brain side
    write_matrix(tmp_path / "brain.parquet", ids[3:][::-1], Y[3:][::-1], None)  # 3 only on the genetic side
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["cca", "--genetic", str(tmp_path / "gen.parquet"), "--brain",
                                   str(tmp_path / "brain.parquet"), "--out", str(out), "--n-perm", "19",
                                   "--reduce-dims", "10", "--components", "3", "--serial"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "cca_summary.json").read_text())
    assert summary["n"] == 387
    assert summary["join"]["unmatched"] == {"genetic": 3, "brain": 10}
    t = pl.read_parquet(out / "cca_correlations.parquet")
    assert t["heldout_r"][0] > 0.45 and t["p_value"][0] == 1 / 20 and t["p_fwer"][0] == 1 / 20
    s = pl.read_csv(out / "cca_structure.csv")
    assert sorted(set(s["gene"])) == ["A", "B", "C"] and s.height == 9
    null = pl.read_parquet(out / "cca_null.parquet")
    assert null.height == 19 * 3
    assert (out / "cca_null.png").stat().st_size > 0
    assert "genetics_gene_fm_test" in (out / "cca_report.md").read_text()
    null1 = null.filter(pl.col("component") == 1)["heldout_r"].to_numpy()
    np.testing.assert_array_less(null1, t["heldout_r"][0])


def test_cca_command_says_when_ids_do_not_match(tmp_path):
    X, Y = make_cca_pair(n=50, p=3, q=3, rho=0.5, seed=0)
    write_matrix(tmp_path / "g.parquet", [f"a{i}" for i in range(50)], X, None)
    write_matrix(tmp_path / "b.parquet", [f"b{i}" for i in range(50)], Y, None)
    res = CliRunner().invoke(app, ["cca", "--genetic", str(tmp_path / "g.parquet"), "--brain",
                                   str(tmp_path / "b.parquet"), "--out", str(tmp_path / "o"), "--serial"])
    assert res.exit_code != 0
    assert "only 0 subjects are in every input" in res.output
