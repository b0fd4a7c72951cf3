"""Feature readers (subject matrix with gene blocks, embedding shards) and the `logo` command end to end."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import write_matrix
from typer.testing import CliRunner

from neuro_caduceus.analysis.features import read_features
from neuro_caduceus.analysis.logo import LogoConfig, run_logo
from neuro_caduceus.analysis.simulate import make_planted_gene_blocks
from neuro_caduceus.cli import app
from neuro_caduceus.io import read_table


def test_subject_matrix_blocks_follow_the_recipe(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(2, 6)
    recipe = {"recipe_id": "r1", "gene_list": ["A", "B", "C"], "embedding_dim": 2}
    write_matrix(tmp_path / "m.parquet", ["s1", "s2"], X, recipe)
    fm = read_features(tmp_path / "m.parquet")
    assert fm.gene_names == ["A", "B", "C"]
    np.testing.assert_array_equal(fm.X[:, fm.blocks["B"]], X[:, 2:4])
    # a later stage (e.g. 4 PCA scores) with the same gene list: no gene blocks
    write_matrix(tmp_path / "p.parquet", ["s1", "s2"], X[:, :4], recipe)
    assert read_features(tmp_path / "p.parquet").blocks == {"all": slice(0, 4)}


def test_stats_stage_records_decide_the_blocks(tmp_path):
    X = np.arange(16, dtype=np.float32).reshape(2, 8)
    recipe = {"recipe_id": "r", "gene_list": ["ENSG1", "ENSG2"], "gene_names": ["A", "B"], "d_model": 4}
    matrix = {"stage": "subject_matrix", "genes": ["ENSG2", "ENSG1"], "dim_per_gene": 4}
    write_matrix(tmp_path / "m.parquet", ["s1", "s2"], X, recipe, stages=[matrix])
    fm = read_features(tmp_path / "m.parquet")
    assert fm.gene_names == ["B", "A"]  # the stage's gene order, labelled with names
    np.testing.assert_array_equal(fm.X[:, fm.blocks["A"]], X[:, 4:])
    # PCA scores of the same width (2 genes x 4 = 8 components) are not gene blocks
    write_matrix(tmp_path / "s.parquet", ["s1", "s2"], X, recipe, stages=[matrix, {"stage": "pca"}])
    assert read_features(tmp_path / "s.parquet").blocks == {"all": slice(0, 8)}


def test_folder_resolution(tmp_path):
    for sub in ("matrix", "scores"):
        (tmp_path / "stats" / sub).mkdir(parents=True)
        write_matrix(tmp_path / "stats" / sub / "part-0.parquet", ["s1"], np.zeros((1, 2)), None)
    with pytest.raises(ValueError, match=r"several subfolders hold Parquet \(\['matrix', 'scores'\]\)"):
        read_features(tmp_path / "stats")
    assert read_features(tmp_path / "stats" / "scores").subject_ids == ["s1"]
    (tmp_path / "job" / "shards").mkdir(parents=True)
    (tmp_path / "job" / "units").mkdir()
    write_matrix(tmp_path / "job" / "shards" / "x.parquet", ["s9"], np.zeros((1, 2)), None)
    assert read_features(tmp_path / "job").subject_ids == ["s9"]  # the embedding job's folder


def test_shards_pivot_to_the_same_matrix_in_recipe_order(tmp_path):
    rng = np.random.default_rng(0)
    E = rng.normal(size=(3, 2, 4)).astype(np.float32)  # subjects x genes x dim
    rows = [(s, g) for g in (1, 0) for s in (2, 0, 1)]  # shuffled row order across two files
    recipe = json.dumps({"gene_list": ["ENSG1", "ENSG2"], "gene_names": ["A", "B"], "d_model": 4})
    for part, chunk in enumerate((rows[:3], rows[3:])):
        flat = pa.array(np.stack([E[s, g] for s, g in chunk]).reshape(-1))
        t = pa.table({"subject_id": [f"s{s}" for s, _ in chunk],
                      "gene_id": [f"ENSG{g + 1}" for _, g in chunk],
                      "gene_name": ["AB"[g] for _, g in chunk],
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, 4)})
        t = t.replace_schema_metadata({"neuro_caduceus.recipe": recipe})
        pq.write_table(t, tmp_path / f"p{part}.parquet")
    fm = read_features(tmp_path)
    assert fm.gene_names == ["A", "B"]
    for s in range(3):
        i = fm.subject_ids.index(f"s{s}")
        np.testing.assert_array_equal(fm.X[i], E[s].reshape(-1))
    (tmp_path / "p1.parquet").unlink()  # gene A's rows are gone
    with pytest.raises(ValueError, match=r"genes \['ENSG1'\] of the recipe's gene_list have no rows"):
        read_features(tmp_path)


def test_reader_errors_name_the_problem(tmp_path):
    write_matrix(tmp_path / "d.parquet", ["s1", "s1"], np.zeros((2, 2)), None)
    with pytest.raises(ValueError, match="'s1' appears more than once"):
        read_features(tmp_path / "d.parquet")
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="no `subject_id` column"):
        read_features(tmp_path / "x.parquet")
    with pytest.raises(FileNotFoundError):
        read_features(tmp_path / "missing")


def test_logo_command_writes_tables_plot_report(tmp_path):
    X, blocks, y, cov = make_planted_gene_blocks(n=150, genes=3, dim=6, planted_gene=2, effect=2.0, seed=1)
    ids = cov["subject_id"].to_list()
    recipe = {"recipe_id": "genetics_gene_fm_test", "gene_list": list(blocks), "embedding_dim": 6}
    write_matrix(tmp_path / "matrix.parquet", ids[5:], X[5:], recipe)  # 5 subjects lack features
    pl.DataFrame({"subject_id": ids, "mdd": y}).write_csv(tmp_path / "pheno.tsv", separator="\t")
    codes = {"batch_a": 11, "batch_b": 2, "batch_c": 7}  # integer batch codes, as UK Biobank gives them
    cov = cov.with_columns(pl.col("batch").replace_strict(codes, return_dtype=pl.Int64))
    cov.write_csv(tmp_path / "cov.tsv", separator="\t")
    out = tmp_path / "out"
    args = ["logo", "--features", str(tmp_path / "matrix.parquet"),
            "--phenotype", str(tmp_path / "pheno.tsv"),
            "--covariates", str(tmp_path / "cov.tsv"), "--out", str(out), "--folds", "3", "--repeats", "2",
            "--k", "8", "--n-perm", "2", "--categorical-covariates", "batch,sex", "--serial"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("logo_delta_auc.parquet", "logo_delta_auc.csv", "logo_predictions.parquet",
                 "logo_fold_auc.csv", "logo_null.parquet", "logo_delta_auc.png", "logo_report.md",
                 "logo_summary.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "logo_summary.json").read_text())
    assert summary["n"] == 145 and summary["join"]["unmatched"] == {"features": 0, "phenotype": 5,
                                                                    "covariates": 5}
    assert summary["recipe_id"] == "genetics_gene_fm_test" and summary["seed"] == 0
    assert summary["categorical"] == ["batch", "sex"] and summary["repeats"] == 2 and summary["n_perm"] == 2
    # the files give what the library gives on the same rows (float32 features, as stored)
    X32 = X[5:].astype(np.float32).astype(np.float64)
    direct = run_logo(X32, blocks, y[5:], read_table(tmp_path / "cov.tsv")[5:],
                      [c for c in cov.columns if c != "subject_id"],
                      LogoConfig(n_folds=3, n_repeats=2, k=8, n_perm=2, parallel=False), ["batch", "sex"])
    table = pl.read_parquet(out / "logo_delta_auc.parquet")
    assert table.equals(direct.table)
    assert table["gene"][0] == "GENE3"
    assert "GENE3" in (out / "logo_report.md").read_text()
    folds = pl.read_csv(out / "logo_fold_auc.csv")
    assert folds.height == 4 * 2 * 3 and set(folds["model"]) == {"all", "GENE1", "GENE2", "GENE3"}
    preds = pl.read_parquet(out / "logo_predictions.parquet")
    assert preds.height == 2 * 145 and preds.filter(pl.col("repeat") == 1)["fold"].n_unique() == 3


def test_categorical_covariates_are_declared_never_guessed(tmp_path):
    """Integer batch codes declared categorical are one-hot coded (not one linear term); a text column that
    is not declared is an error that says how to declare it."""
    from neuro_caduceus.analysis.folds import covariate_spec
    from neuro_caduceus.stats.residualize import Residualizer

    rng = np.random.default_rng(0)
    n = 90
    cov = pl.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "age": rng.normal(55, 8, n),
                        "batch": rng.choice([10, 2, 3], n), "centre": rng.choice(["Leeds", "Bristol"], n)})
    Y = rng.normal(size=(n, 3)) + 5.0 * (cov["batch"].to_numpy() == 3)[:, None]
    spec = covariate_spec(cov, ["age", "batch", "centre"], ["batch", "centre"])
    res = Residualizer(spec).fit(Y, cov)
    assert res.design_columns_ == ["age", "batch=3", "batch=10", "centre=Leeds"]  # reference: 2, Bristol
    D = np.column_stack([np.ones(n), cov["age"], cov["batch"] == 3, cov["batch"] == 10,
                         cov["centre"] == "Leeds"]).astype(float)
    np.testing.assert_allclose(res.transform(Y, cov), Y - D @ np.linalg.lstsq(D, Y, rcond=None)[0], atol=1e-8)
    linear = Residualizer(covariate_spec(cov, ["age", "batch"], [])).fit(Y, cov)  # the old dtype guess
    assert linear.design_columns_ == ["age", "batch"] and linear.r2_.mean() < res.r2_.mean() - 0.2
    with pytest.raises(ValueError, match=r"\['centre'\] hold \['String'\] values; declare them categorical "
                                         "with --categorical-covariates centre"):
        covariate_spec(cov, ["age", "centre"], [])
    with pytest.raises(ValueError, match=r"--categorical-covariates \['site'\] are not among"):
        covariate_spec(cov, ["age"], ["site"])


def test_logo_command_reports_a_missing_phenotype_column(tmp_path):
    write_matrix(tmp_path / "m.parquet", ["a", "b"], np.zeros((2, 4)), None)
    pl.DataFrame({"subject_id": ["a", "b"], "case": [0, 1]}).write_csv(tmp_path / "p.tsv", separator="\t")
    res = CliRunner().invoke(app, ["logo", "--features", str(tmp_path / "m.parquet"), "--phenotype",
                                   str(tmp_path / "p.tsv"), "--out", str(tmp_path / "o"), "--serial"])
    assert res.exit_code != 0
    assert "phenotype column 'mdd' not found" in res.output


def test_reads_what_the_embedding_job_and_the_stats_stages_write(tmp_path, ray_session):
    """The real producers: cohort shard schema -> stats subject matrix (gene blocks) -> stats PCA (none)."""
    from neuro_caduceus.cohort.shards import shard_schema
    from neuro_caduceus.stats.jobs import run_pca
    from neuro_caduceus.stats.subject_matrix import build_subject_matrix

    rng = np.random.default_rng(0)
    genes = [("ENSG01", "SYN1"), ("ENSG02", "SYN2"), ("ENSG03", "SYN3")]
    recipe = {"recipe_id": "t", "gene_list": [g for g, _ in genes], "gene_names": [n for _, n in genes]}
    subjects = [f"S{i:03d}" for i in range(30)]
    E = rng.normal(size=(30, 3, 4)).astype(np.float32)
    (tmp_path / "job" / "shards").mkdir(parents=True)
    for j, (gid, name) in enumerate(genes):
        order = rng.permutation(30)
        t = pa.table({"subject_id": [subjects[i] for i in order], "gene_id": [gid] * 30,
                      "gene_name": [name] * 30,
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(E[order, j].reshape(-1)), 4)},
                     schema=shard_schema(4, recipe))
        pq.write_table(t, tmp_path / "job" / "shards" / f"{gid}.parquet")
    expected = E.reshape(30, 12)

    shards = read_features(tmp_path / "job")
    build_subject_matrix(str(tmp_path / "job"), str(tmp_path / "stats"), block_scaling="none")
    matrix = read_features(tmp_path / "stats" / "matrix")
    for fm in (shards, matrix):
        assert fm.gene_names == ["SYN1", "SYN2", "SYN3"]
        assert fm.blocks["SYN2"] == slice(4, 8)
        rows = [fm.subject_ids.index(s) for s in subjects]
        np.testing.assert_array_equal(fm.X[rows], expected)
    run_pca(str(tmp_path / "stats" / "matrix"), str(tmp_path / "pca"), n_components=12)
    scores = read_features(tmp_path / "pca" / "scores")
    assert scores.X.shape == (30, 12) and scores.blocks == {"all": slice(0, 12)}  # 12 = 3 x 4, still one
