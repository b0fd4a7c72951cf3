"""Ray Data fit/transform of PCA and residualization against sklearn / lstsq, on Parquet part files."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from helpers import covariates, oracle_design, spectrum_data
from sklearn.decomposition import PCA as SkPCA

from neuro_caduceus.io import RECIPE_KEY, STAGES_KEY, parquet_files, parquet_metadata
from neuro_caduceus.stats import features_io as fio
from neuro_caduceus.stats.distributed import fit_pca, merge_streamed, moments_row
from neuro_caduceus.stats.jobs import run_pca, run_residualize
from neuro_caduceus.stats.moments import Moments

RECIPE = {"recipe_id": "test_recipe", "gene_list": ["G1", "G2"]}


def write_features(folder, X: np.ndarray, ids: list[str], files: int = 3) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    meta = fio.stage_metadata(RECIPE, [], {"stage": "test"})
    for i, part in enumerate(np.array_split(np.arange(len(ids)), files)):
        pq.write_table(fio.features_table([ids[j] for j in part], X[part], meta), folder / f"p{i}.parquet")
    return str(folder)


def read_back(folder) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(str(folder))
    return fio.as_matrix(table)


def test_moments_merge_in_input_order_whatever_finishes_first(ray_session) -> None:
    """The streamed merge follows the input's order, so its bits never depend on which task ends first."""
    import ray.data

    def _slow_block_moments(batch: dict) -> object:  # local: pickled by value for the workers
        """A block's moments after a sleep that finishes later blocks first (completion order != input)."""
        import time

        i = int(batch["id"][0])
        time.sleep(0.5 if i % 3 == 0 else 0.0)
        X = np.random.default_rng(i).normal(size=(50, 6)) * 10.0 ** (i % 4)
        return moments_row([f"S{i}_{j}" for j in range(50)], X)

    ds = ray.data.range(12, override_num_blocks=12).map_batches(_slow_block_moments, batch_size=1,
                                                                batch_format="numpy")
    merged, info = merge_streamed(ds)
    serial = None
    for i in range(12):
        X = np.random.default_rng(i).normal(size=(50, 6)) * 10.0 ** (i % 4)
        part = Moments.of_block(X)
        serial = part if serial is None else serial.merge(part)
    assert info["n_rows"] == 600
    assert np.array_equal(merged.m2, serial.m2) and np.array_equal(merged.mean, serial.mean)


@pytest.mark.parametrize("batch_size", [37, 250, 10_000])
def test_distributed_fit_equals_sklearn(ray_session, tmp_path, batch_size):
    X = spectrum_data(600, 24, seed=7).astype(np.float32).astype(np.float64)  # exactly what Parquet holds
    ids = [f"S{i:04d}" for i in range(len(X))]
    ds = fio.read_features(write_features(tmp_path / "in", X, ids))
    model = fit_pca(ds, n_components=10, batch_size=batch_size)
    sk = SkPCA(n_components=10, svd_solver="full").fit(X)
    np.testing.assert_allclose(model.explained_variance_, sk.explained_variance_, rtol=1e-6)
    assert np.abs(np.sum(model.components_ * sk.components_, axis=1)).min() > 1 - 1e-8
    np.testing.assert_allclose(model.transform(X), sk.transform(X), atol=1e-6)
    info = model.fit_info_
    assert info["n_rows"] == 600 and info["max_batch_rows"] <= batch_size
    if batch_size < 600:
        assert info["n_batches"] > 1


def test_driver_never_holds_the_matrix(ray_session, tmp_path):
    n, d = 20_000, 256  # 41 MB as float64; the driver may hold ids (O(n)) and d x d moments, not this
    X = np.random.default_rng(0).normal(size=(n, d))
    ds = fio.read_features(write_features(tmp_path / "in", X, [f"S{i}" for i in range(n)], files=8))
    tracemalloc.start()
    model = fit_pca(ds, n_components=8, batch_size=2_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert model.fit_info_["n_batches"] >= 8 and model.fit_info_["max_batch_rows"] <= 2_000
    assert peak < n * d * 8 / 4, f"driver traced peak {peak / 1e6:.1f} MB"


def test_bad_subjects_are_named(ray_session, tmp_path):
    X = spectrum_data(60, 5)
    X[7, 2] = np.nan
    ids = [f"S{i}" for i in range(60)]
    ds = fio.read_features(write_features(tmp_path / "nan", X, ids))
    with pytest.raises(ValueError, match=r"1 subject\(s\) have NaN/inf features \(e.g. \['S7'\]"):
        fit_pca(ds, n_components=2, batch_size=16)
    ids[30] = "S3"
    ds = fio.read_features(write_features(tmp_path / "dup", spectrum_data(60, 5), ids))
    with pytest.raises(ValueError, match=r"1 duplicated subject id\(s\) in the input \(e.g. \['S3'\]"):
        fit_pca(ds, n_components=2, batch_size=16)


def test_pca_then_residualize_files(ray_session, tmp_path):
    X = spectrum_data(300, 16, seed=9).astype(np.float32).astype(np.float64)
    ids = [f"S{i:05d}" for i in range(300)]
    src = write_features(tmp_path / "matrix", X, ids)
    summary = run_pca(src, str(tmp_path / "pca"), n_components=6, batch_size=64)
    assert summary["n_components"] == 6 and summary["scores_rows"] == 300
    z = np.load(tmp_path / "pca" / "pca_model.npz")
    assert z["components"].shape == (6, 16) and z["mean"].shape == (16,)
    assert z["explained_variance"].shape == (6,)
    sk = SkPCA(n_components=6, svd_solver="full").fit(X)
    got_ids, scores = read_back(tmp_path / "pca" / "scores")
    order = np.argsort(got_ids)
    np.testing.assert_allclose(scores[order], sk.transform(X), rtol=1e-5, atol=1e-4)  # float32 on disk
    meta = parquet_metadata(parquet_files(str(tmp_path / "pca" / "scores"))[0])
    stored = json.loads(meta[RECIPE_KEY])  # the upstream recipe, re-stamped for this stage
    assert {k: stored[k] for k in RECIPE} == RECIPE and stored["stage"] == "pca"
    assert [s["stage"] for s in json.loads(meta[STAGES_KEY])] == ["test", "pca"]
    assert (tmp_path / "pca" / "pca_scree.png").stat().st_size > 1000

    cov = covariates(300, seed=3).with_columns(pl.Series("subject_id", ids))
    cov = cov.filter(~pl.col("subject_id").is_in(["S00005", "S00006"]))  # two subjects lack covariates
    cov = pl.concat([cov, cov.head(1).with_columns(pl.lit("EXTRA").alias("subject_id"))])  # one unused row
    cov.write_csv(tmp_path / "cov.csv")
    res = run_residualize(str(tmp_path / "pca"), str(tmp_path / "cov.csv"), str(tmp_path / "res"),
                          batch_size=50)
    assert res["without_covariates"] == 2 and res["covariate_rows_unused"] == 1
    assert res["residual_rows"] == 298
    assert res["without_covariates_examples"] == ["S00005", "S00006"]
    got_ids, resid = read_back(tmp_path / "res" / "residuals")
    keep = cov.filter(pl.col("subject_id") != "EXTRA")
    score_of = dict(zip(*read_back(tmp_path / "pca" / "scores"), strict=True))
    Y = np.array([score_of[s] for s in keep["subject_id"]])
    D = oracle_design(keep)
    want = Y - D @ np.linalg.lstsq(D, Y, rcond=None)[0]
    row = {s: i for i, s in enumerate(got_ids)}
    got = resid[[row[s] for s in keep["subject_id"]]]
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())  # residuals stored as float32
    model = np.load(tmp_path / "res" / "residualize_model.npz")
    np.testing.assert_allclose(model["coef"], np.linalg.lstsq(D, Y, rcond=None)[0], atol=1e-8)
    assert (tmp_path / "res" / "r2.csv").exists() and (tmp_path / "res" / "residualize_r2.png").exists()

    strict = tmp_path / "strict.yaml"
    strict.write_text("on_missing: error\n")
    from neuro_caduceus.stats.residualize import CovariateSpec

    with pytest.raises(ValueError, match=r"2 subject\(s\) have no complete covariate row .*S00005"):
        run_residualize(str(tmp_path / "pca"), str(tmp_path / "cov.csv"), str(tmp_path / "res2"),
                        spec=CovariateSpec.from_yaml(strict))


def test_pca_stage_records_the_components_kept(ray_session, tmp_path):
    X = spectrum_data(12, 30, seed=2)
    ids = [f"S{i:02d}" for i in range(12)]
    with pytest.warns(UserWarning, match="capped at 11"):
        summary = run_pca(write_features(tmp_path / "m", X, ids, files=2), str(tmp_path / "pca"),
                          n_components=64)
    assert summary["n_components"] == 11 and summary["n_components_requested"] == 64
    first = parquet_files(str(tmp_path / "pca" / "scores"))[0]
    stages = json.loads(parquet_metadata(first)[STAGES_KEY])
    assert stages[-1]["n_components"] == 11 and stages[-1]["n_components_requested"] == 64
    _, scores = read_back(tmp_path / "pca" / "scores")
    assert scores.shape == (12, 11) and scores.std(axis=0).min() > 1e-3  # no null-space column
