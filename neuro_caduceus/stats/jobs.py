"""File-to-file stats stages (what the CLI and the `ray job submit` entrypoints run).

Each stage reads a feature folder, fits on Ray (driver holds O(d^2) only), writes its Parquet part files into
a temporary folder renamed into place on success, then its model, a PNG and a summary JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from neuro_caduceus.io import atomic_writer, read_table, write_csv, write_json
from neuro_caduceus.provenance import stamp
from neuro_caduceus.stats import features_io as fio
from neuro_caduceus.stats.distributed import (
    DEFAULT_BATCH_ROWS,
    fit_pca,
    fit_residualizer,
    share_design,
    transform_pca,
    transform_residuals,
)
from neuro_caduceus.stats.plots import r2_plot, scree_plot
from neuro_caduceus.stats.residualize import CovariateSpec, Residualizer


def run_pca(input_dir: str, out_dir: str, n_components: int = 512, whiten: bool = False,
            batch_size: int = DEFAULT_BATCH_ROWS, keep_statistics: bool = True) -> dict:
    """Fit PCA on a feature folder; write pca_model.npz, scores/, pca_scree.png, pca_summary.json."""
    folder = fio.resolve_features_dir(input_dir)
    recipe, stages = fio.read_metadata(folder)
    recipe = stamp(recipe, "pca", [folder])
    ds = fio.read_features(folder)
    model = fit_pca(ds, n_components=n_components, whiten=whiten, batch_size=batch_size)
    model.recipe = recipe
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "pca_model.npz", keep_statistics=keep_statistics)
    stage = {"stage": "pca", "n_components": model.n_components_, "n_components_requested": n_components,
             "n_components_cap": "min(n_samples - 1, n_features)", "whiten": whiten,
             "n_samples": model.n_samples_, "n_features": model.n_features_in_}
    written = fio.write_parts(transform_pca(ds, model, batch_size), str(out / "scores"),
                              fio.stage_metadata(recipe, stages, stage), batch_size)
    fio.commit_parts(written)
    scree_plot(model.explained_variance_ratio_, out / "pca_scree.png", recipe)
    summary = {**stage, "input": folder, "scores_rows": written["written"],
               "explained_variance_ratio_total": float(model.explained_variance_ratio_.sum()),
               "explained_variance_ratio_first10": model.explained_variance_ratio_[:10].tolist(),
               "fit": model.fit_info_, "recipe_id": recipe.get("recipe_id"), "recipe": recipe}
    write_json(out / "pca_summary.json", summary)
    return summary


def check_covariate_columns(cov, spec: CovariateSpec, source: str = "the covariates") -> None:
    """The subject id and covariate columns the mapping names must exist (checked before any Ray work)."""
    if spec.subject_id not in cov.columns:
        raise ValueError(f"{source} has no subject id column {spec.subject_id!r} (columns {cov.columns}); "
                         "set subject_id in the covariate mapping")
    missing_cols = [c for c in spec.columns if c not in cov.columns]
    if missing_cols:
        raise ValueError(f"covariate columns {missing_cols} not in {source} (columns {cov.columns}); "
                         "map the names with --config")


def match_covariates(ids, cov, spec: CovariateSpec) -> tuple:
    """(covariate rows of the feature subjects with complete covariates, counts + examples of the rest);
    `ids`: the feature subjects (a list, or an Arrow or polars string column)."""
    import polars as pl

    check_covariate_columns(cov, spec)
    sid = spec.subject_id
    cov = cov.with_columns(pl.col(sid).cast(pl.Utf8))
    dups = cov.filter(pl.col(sid).is_duplicated())[sid].unique().sort()
    if dups.len():
        raise ValueError(f"{dups.len()} subject id(s) appear more than once in the covariates "
                         f"(e.g. {dups.head(fio.MAX_EXAMPLES).to_list()})")
    complete = cov.filter(pl.all_horizontal([pl.col(c).is_not_null() for c in spec.columns]))
    subjects = pl.DataFrame({sid: pl.Series(sid, ids, dtype=pl.Utf8)})
    matched = complete.join(subjects, on=sid, how="semi")
    without = subjects.join(complete, on=sid, how="anti")[sid]
    counts = {"feature_subjects": subjects.height, "matched": matched.height,
              "without_covariates": without.len(),
              "without_covariates_examples": without.head(fio.MAX_EXAMPLES).to_list(),
              "covariate_rows_unused": cov.height - matched.height}
    return matched, counts


def run_residualize(input_dir: str, covariates: str, out_dir: str, spec: CovariateSpec | None = None,
                    batch_size: int = DEFAULT_BATCH_ROWS) -> dict:
    """Residualize a feature folder; write residuals/, model, coefficients, R^2, PNG and summary."""
    import polars as pl

    from neuro_caduceus.ray_session import dataset_batches  # Ray's helpers load with Ray, when a job runs

    spec = spec or CovariateSpec()
    cov = read_table(covariates, spec.subject_id, "set subject_id in the covariate mapping")
    check_covariate_columns(cov, spec, covariates)
    folder = fio.resolve_features_dir(input_dir)
    recipe, stages = fio.read_metadata(folder)
    recipe = stamp(recipe, "residualize", [folder, covariates])
    ds = fio.read_features(folder)
    id_ds = ds.select_columns(["subject_id"])
    with dataset_batches(id_ds, batch_size=None, batch_format="pyarrow") as batches:
        ids = pa.chunked_array([batch.column("subject_id") for batch in batches], pa.string())
    matched, counts = match_covariates(ids, cov, spec)
    if counts["without_covariates"] and spec.on_missing == "error":
        raise ValueError(f"{counts['without_covariates']} subject(s) have no complete covariate row in "
                         f"{covariates} (e.g. {counts['without_covariates_examples']}); set on_missing: "
                         "exclude to drop them")
    res = Residualizer(spec).learn_levels(matched)
    X = res.design(matched)
    design = share_design(pl.DataFrame({"subject_id": matched[spec.subject_id]}).with_columns(
        *[pl.Series(f"x{j}", X[:, j]) for j in range(X.shape[1])], pl.lit(True).alias("_matched")))
    del cov, matched, X  # the design now lives in the object store, once
    fit_residualizer(ds, design, res, batch_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = {"stage": "residualize", "covariates": Path(covariates).name,
             "design_columns": res.design_columns_, "spec": spec.model_dump()}
    written = fio.write_parts(transform_residuals(ds, res, design, batch_size), str(out / "residuals"),
                              fio.stage_metadata(recipe, stages, stage), batch_size)
    fio.commit_parts(written)
    save_residualizer(res, out / "residualize_model.npz")
    terms = ["intercept", *res.design_columns_]
    coef = {f"dim_{j}": res.coef_[:, j] for j in range(res.coef_.shape[1])}
    write_csv(pl.DataFrame({"term": terms, **coef}), out / "coefficients.csv")
    write_csv(pl.DataFrame({"dim": np.arange(len(res.r2_)), "r2": res.r2_}), out / "r2.csv")
    r2_plot(res.r2_, out / "residualize_r2.png", recipe)
    summary = {**{k: v for k, v in stage.items() if k != "spec"}, **counts, "input": folder,
               "residual_rows": written["written"], "n_samples": res.n_samples_,
               "r2_median": float(np.median(res.r2_)), "r2_max": float(np.max(res.r2_)),
               "levels": res.levels_, "fit": res.fit_info_, "recipe_id": recipe.get("recipe_id"),
               "recipe": recipe}
    write_json(out / "residualize_summary.json", summary)
    return summary


def save_residualizer(res: Residualizer, path: Path) -> Path:
    """npz: coef [1+p, q] (row 0 intercept), r2 [q], design_columns, levels and spec as JSON."""
    with atomic_writer(path, "wb") as f:
        np.savez(f, coef=res.coef_, r2=res.r2_, n_samples=np.int64(res.n_samples_),
                 design_columns=np.array(res.design_columns_, dtype=str),
                 levels=np.array(json.dumps(res.levels_)), spec=np.array(res.spec.model_dump_json()))
    return path
