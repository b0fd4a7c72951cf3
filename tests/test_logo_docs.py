"""The `logo` and `cca` commands of docs/analyses.md run as written, on small files named as in the docs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from helpers import bash_commands, write_matrix
from typer.testing import CliRunner

from neuro_caduceus.analysis.simulate import make_cca_pair, make_planted_gene_blocks
from neuro_caduceus.cli import app


def test_documented_analysis_commands_run_as_written(tmp_path, monkeypatch):
    X, blocks, y, cov = make_planted_gene_blocks(n=90, genes=2, dim=4, planted_gene=1, effect=2.0, seed=4)
    ids = cov["subject_id"].to_list()
    (tmp_path / "matrix").mkdir()
    write_matrix(tmp_path / "matrix" / "part-0.parquet", ids, X,
                 {"recipe_id": "docs", "gene_list": list(blocks), "d_model": 4})
    pl.DataFrame({"subject_id": ids, "mdd": y}).write_csv(tmp_path / "phenotype.tsv", separator="\t")
    cov.write_csv(tmp_path / "covariates.tsv", separator="\t")
    rel = f"ID1 ID2 HetHet IBS0 Kinship\n{ids[0]} {ids[1]} 0.1 0.001 0.24\n{ids[2]} {ids[3]} 0.1 0.02 0.01\n"
    (tmp_path / "ukb_rel.dat").write_text(rel)
    _, Y = make_cca_pair(n=90, p=8, q=5, rho=0.6, seed=1)
    write_matrix(tmp_path / "brain.parquet", ids, Y, None)
    monkeypatch.chdir(tmp_path)
    commands = bash_commands("analyses.md")
    assert [c[0] for c in commands] == ["logo", "gene-test", "cca"]
    for args in commands:
        res = CliRunner().invoke(app, [*args] if args[0] == "gene-test" else [*args, "--serial"])
        assert res.exit_code == 0, (args, res.output)
    logo = json.loads((tmp_path / "logo_out" / "logo_summary.json").read_text())
    assert logo["relatedness"]["pairs_used"] == 1 and logo["categorical"] == ["batch"]
    assert logo["genes"][0]["gene"] == "GENE2" and logo["n_perm"] == 4
    tested = json.loads((tmp_path / "gene_test_out" / "gene_test_summary.json").read_text())
    assert tested["genes"][0]["gene"] == "GENE2" and tested["numeric"] == ["age"]
    cca = json.loads((tmp_path / "cca_out" / "cca_summary.json").read_text())
    assert cca["permutation"].startswith("Freedman-Lane") and cca["relatedness"]["related_groups"] == 1
    assert np.isfinite([c["p_fwer"] for c in cca["components"]]).all()
