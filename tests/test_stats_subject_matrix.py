"""Subject matrix from per-gene embedding shards, and the stats CLI round trip (CliRunner)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import DIM, GENES, write_shards
from sklearn.decomposition import PCA as SkPCA
from typer.testing import CliRunner

from neuro_caduceus.cli import app
from neuro_caduceus.io import RECIPE_KEY, STAGES_KEY, parquet_files, parquet_metadata, read_table
from neuro_caduceus.stats import features_io as fio
from neuro_caduceus.stats.subject_matrix import build_subject_matrix


def read_matrix(folder) -> dict[str, np.ndarray]:
    ids, X = fio.as_matrix(pq.read_table(str(folder)))
    return dict(zip(ids, X, strict=True))


def test_genes_concatenated_in_gene_set_order(ray_session, tmp_path):
    subjects = [f"S{i:03d}" for i in range(40)]
    truth = write_shards(tmp_path / "emb", subjects)
    s = build_subject_matrix(str(tmp_path / "emb"), str(tmp_path / "out"), batch_size=7, block_scaling="none")
    assert s["subjects_written"] == 40 and s["n_features"] == 3 * DIM and s["subjects_dropped"] == 0
    got = read_matrix(tmp_path / "out" / "matrix")
    for sid in subjects:
        np.testing.assert_array_equal(got[sid], np.concatenate([truth[(sid, g)] for g in GENES]))
    meta = parquet_metadata(parquet_files(str(tmp_path / "out" / "matrix"))[0])
    assert json.loads(meta[RECIPE_KEY])["gene_list"] == GENES


def test_missing_gene_errors_or_drops(ray_session, tmp_path):
    subjects = [f"S{i:03d}" for i in range(20)]
    n_missing = {("S001", "ENSG1"): 3, ("S001", "ENSG2"): 1, ("S007", "ENSG2"): 2, ("S004", "ENSG1"): 5,
                 ("S002", "ENSG3"): 4}  # ENSG3 is not in the gene set below: not a column
    truth = write_shards(tmp_path / "emb", subjects, skip={"ENSG2": {"S004", "S011"}}, n_missing=n_missing)
    with pytest.raises(ValueError, match=r"2 subject\(s\) cannot be assembled.*S004.*--on-missing-gene drop"):
        build_subject_matrix(str(tmp_path / "emb"), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "matrix").exists()
    # a gene set given by names (another order) reorders the blocks
    s = build_subject_matrix(str(tmp_path / "emb"), str(tmp_path / "out"), genes=["TREM2", "APOE"],
                             on_missing="drop", block_scaling="none", missing_calls=True)
    assert s["subjects_written"] == 18 and s["subjects_dropped"] == 2
    assert s["dropped_by_reason"] == {"missing": 2} and "qc.max_missing" in s["dropped_examples"][0]
    # the per-gene missing calls as a covariates table of the matrix's subjects (direct oracle)
    table = read_table(tmp_path / "out" / "missing_calls.csv")
    assert table.columns == ["subject_id", "missing_TREM2", "missing_APOE", "missing_total"]
    assert sorted(table["subject_id"].to_list()) == sorted(set(subjects) - {"S004", "S011"})
    for row in table.iter_rows(named=True):
        want = [n_missing.get((row["subject_id"], g), 0) for g in ("ENSG2", "ENSG1")]
        assert [row["missing_TREM2"], row["missing_APOE"], row["missing_total"]] == [*want, sum(want)]
    got = read_matrix(tmp_path / "out" / "matrix")
    assert set(got) == set(subjects) - {"S004", "S011"}
    want = np.concatenate([truth[("S007", "ENSG2")], truth[("S007", "ENSG1")]])
    np.testing.assert_array_equal(got["S007"], want)


def test_duplicated_subject_gene_is_an_error(ray_session, tmp_path):
    write_shards(tmp_path / "emb", [f"S{i}" for i in range(10)], dup=("S3", "ENSG1"))
    with pytest.raises(ValueError, match=r"S3: duplicated: gene\(s\) \['ENSG1'\]"):
        build_subject_matrix(str(tmp_path / "emb"), str(tmp_path / "out"), on_missing="drop")


def test_cli_round_trip(ray_session, tmp_path):
    subjects = [f"S{i:03d}" for i in range(60)]
    truth = write_shards(tmp_path / "emb", subjects)
    runner = CliRunner()
    r = runner.invoke(app, ["subject-matrix", "--input", str(tmp_path / "emb"),
                            "--out", str(tmp_path / "sm")])
    assert r.exit_code == 0, r.output
    assert "60 subjects x 12 features (3 genes x 4, block scaling total_variance)" in r.output
    r = runner.invoke(app, ["pca", "--input", str(tmp_path / "sm"), "--n-components", "5",
                            "--out", str(tmp_path / "pca"), "--batch-size", "16"])
    assert r.exit_code == 0, r.output
    raw = np.array([np.concatenate([truth[(s, g)] for g in GENES]) for s in subjects], dtype=np.float64)
    scale = np.repeat([1 / np.sqrt(raw[:, 4 * j:4 * j + 4].var(axis=0, ddof=1).sum()) for j in range(3)], 4)
    stored = read_matrix(tmp_path / "sm" / "matrix")
    X = np.array([stored[s] for s in subjects])
    np.testing.assert_allclose(X, raw * scale, rtol=1e-6)  # each gene's block scaled to total variance 1
    model = np.load(tmp_path / "pca" / "pca_model.npz")
    sk = SkPCA(n_components=5, svd_solver="full").fit(X)
    np.testing.assert_allclose(model["explained_variance"], sk.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(model["components"], sk.components_, atol=1e-8)
    rng = np.random.default_rng(1)
    cov = pl.DataFrame({"eid": subjects, "age": rng.normal(60, 8, 60), "sex": rng.integers(0, 2, 60),
                        "site": rng.choice(["A", "B"], 60)})
    cov.write_csv(tmp_path / "cov.tsv", separator="\t")
    (tmp_path / "map.yaml").write_text("subject_id: eid\nnumeric: [age, sex]\ncategorical: [site]\n")
    r = runner.invoke(app, ["residualize", "--input", str(tmp_path / "pca"), "--covariates",
                            str(tmp_path / "cov.tsv"), "--out", str(tmp_path / "res"),
                            "--config", str(tmp_path / "map.yaml")])
    assert r.exit_code == 0, r.output
    assert "60 subjects, 3 covariate columns" in r.output
    summary = json.loads((tmp_path / "res" / "residualize_summary.json").read_text())
    assert summary["design_columns"] == ["age", "sex", "site=B"] and summary["without_covariates"] == 0
    res = read_matrix(tmp_path / "res" / "residuals")
    scores = read_matrix(tmp_path / "pca" / "scores")
    Y = np.array([scores[s] for s in subjects])
    D = np.column_stack([np.ones(60), cov["age"], cov["sex"], cov["site"] == "B"]).astype(float)
    want = Y - D @ np.linalg.lstsq(D, Y, rcond=None)[0]
    np.testing.assert_allclose(np.array([res[s] for s in subjects]), want, atol=1e-5)
    bad = runner.invoke(app, ["residualize", "--input", str(tmp_path / "pca"), "--covariates",
                              str(tmp_path / "cov.tsv"), "--out", str(tmp_path / "res2")])
    assert bad.exit_code == 2 and "subject_id" in bad.output and not (tmp_path / "res2").exists()


def test_gene_list_is_read_from_the_cohort_jobs_gene_set_file(tmp_path):
    from neuro_caduceus.stats.subject_matrix import load_gene_list

    (tmp_path / "a.yaml").write_text("name: x\ngenes: [APOE, ENSG2]\n")
    (tmp_path / "c.yaml").write_text("name: x\ngenes: []\n")
    assert load_gene_list(str(tmp_path / "a.yaml")) == ["APOE", "ENSG2"]
    with pytest.raises(ValueError, match=r"c\.yaml: invalid gene set \(genes: List should have at least 1"):
        load_gene_list(str(tmp_path / "c.yaml"))


def test_block_scaling_gives_each_gene_unit_total_variance(ray_session, tmp_path):
    subjects = [f"S{i:03d}" for i in range(50)]
    truth = write_shards(tmp_path / "emb", subjects)
    for gene, factor in {"ENSG1": 30.0, "ENSG2": 0.0, "ENSG3": 0.01}.items():  # very different scales
        path = tmp_path / "emb" / "shards" / f"{gene}.parquet"
        t = pq.read_table(path)
        emb = np.asarray(t.column("embedding").combine_chunks().flatten()) * np.float32(factor) + 1
        col = pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float32)), DIM)
        pq.write_table(t.set_column(3, "embedding", col), path)  # ENSG2: constant (no variants)
    s = build_subject_matrix(str(tmp_path / "emb"), str(tmp_path / "out"), batch_size=9)
    assert s["block_scaling"] == "total_variance" and s["constant_genes"] == 1
    assert s["constant_gene_examples"] == ["ENSG2"] and s["block_scale"]["ENSG2"] == 1.0
    got = read_matrix(tmp_path / "out" / "matrix")
    X = np.array([got[sid] for sid in subjects])
    total = [X[:, j * DIM:(j + 1) * DIM].var(axis=0, ddof=1).sum() for j in range(3)]
    np.testing.assert_allclose(total, [1.0, 1.0, 0.0], atol=1e-5)  # gene-set order ENSG3, ENSG1, ENSG2
    scales = pl.read_csv(tmp_path / "out" / "block_scales.csv")
    assert scales["gene"].to_list() == GENES
    np.testing.assert_allclose(scales["scale"][:2] * np.sqrt(scales["total_variance"][:2]), 1.0, rtol=1e-9)
    meta = parquet_metadata(parquet_files(str(tmp_path / "out" / "matrix"))[0])
    stage = json.loads(meta[STAGES_KEY])[-1]
    assert stage["block_scaling"] == "total_variance" and stage["constant_genes"] == 1
    recorded = json.loads(meta[RECIPE_KEY])["block_scaling"]  # method and per-gene factors in the recipe
    assert recorded["method"] == "total_variance" and sorted(recorded["scales"]) == sorted(GENES)
    raw = {g: np.array([t for (sid, gene), t in truth.items() if gene == g]) for g in GENES}
    for gene, factor in {"ENSG1": 30.0, "ENSG3": 0.01}.items():  # oracle: 1 / sqrt(total variance), numpy
        emb = (raw[gene] * np.float32(factor) + 1).astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(recorded["scales"][gene], 1 / np.sqrt(emb.var(axis=0, ddof=1).sum()),
                                   rtol=1e-9)
    assert recorded["scales"]["ENSG2"] == 1.0
    with pytest.raises(ValueError, match="block_scaling must be"):
        build_subject_matrix(str(tmp_path / "emb"), str(tmp_path / "o2"), block_scaling="unit")
