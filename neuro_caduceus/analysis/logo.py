"""Leave-one-gene-out attribution: ΔAUC per gene with nested CV, every step fitted inside the folds.

Why: "which genes matter" = how much held-out discrimination drops when a gene's block of the concatenated
embedding is removed and the whole pipeline (PCA -> residualize -> standardize -> L2 logistic regression,
C chosen by inner CV) is refitted. All models share the same outer folds and inner seeds, so ΔAUC is paired;
its CI comes from a stratified bootstrap of the pooled out-of-fold predictions with the same resamples for
both models. Models x folds run as Ray tasks (or serially, with bit-identical results).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuro_caduceus.analysis.folds import (
    DEFAULT_CS,
    FoldSettings,
    cap_components,
    fit_predict_fold,
    stratified_folds,
)
from neuro_caduceus.provenance import report_lines, stamp, title

ALL = "__all_genes__"


@dataclass(frozen=True)
class LogoConfig:
    """Nested-CV and bootstrap settings; `seed` fixes the outer folds, the inner folds and the bootstrap."""

    n_folds: int = 5
    inner_folds: int = 3
    k: int = 32
    Cs: tuple[float, ...] = DEFAULT_CS
    n_boot: int = 500
    ci: float = 0.95
    simultaneous: bool = True  # Bonferroni over genes: all genes' CIs hold jointly at level `ci`
    seed: int = 0
    parallel: bool = True


@dataclass
class LogoResult:
    """Per-gene ΔAUC table plus what is needed to reproduce and report it."""

    table: object  # polars DataFrame: gene, delta_auc, ci_low, ci_high, auc_without, rank, ci_excludes_zero
    auc_all: float
    auc_all_ci: tuple[float, float]
    scores: dict[str, np.ndarray]  # out-of-fold decision scores per model (ALL or gene), subject order
    chosen_C: dict[str, list[float]]
    fold_of: np.ndarray
    k_used: int
    n: int
    n_cases: int
    config: LogoConfig
    extra: dict = field(default_factory=dict)


def _model_fold(X, cols, cov, y, train, test, settings, seed):
    """One (model, outer fold) task: fit on `train` rows of the kept columns, score `test` rows."""
    return fit_predict_fold(X[:, cols], cov, y, train, test, settings, seed)


def run_logo(X: np.ndarray, blocks: dict[str, slice], y: np.ndarray, cov=None,
             covariates: list[str] | None = None, config: LogoConfig | None = None) -> LogoResult:
    """LOGO ΔAUC from raw (untransformed) features: `X` subjects x features, `blocks` gene -> column slice.

    `cov` is a polars DataFrame in the same row order as `X` (or None) and `covariates` the columns of it to
    residualize on. Nothing is fitted outside a fold: this function takes no pre-fitted transform.
    """
    config = config or LogoConfig()
    y = _binary(y)
    if len(blocks) < 2:
        raise ValueError(f"LOGO needs >= 2 gene blocks; got {list(blocks)} (recipe gene_list missing?)")
    if X.shape[0] != len(y) or (cov is not None and cov.height != len(y)):
        raise ValueError(f"row counts differ: features {X.shape[0]}, phenotype {len(y)}, "
                         f"covariates {None if cov is None else cov.height}")
    folds = stratified_folds(y, config.n_folds, config.seed)
    min_inner_train = min(len(tr) for tr, _ in folds) * (config.inner_folds - 1) // config.inner_folds
    all_cols = np.arange(X.shape[1])
    kept = {ALL: all_cols}
    for g, sl in blocks.items():
        kept[g] = np.setdiff1d(all_cols, all_cols[sl])
    k = cap_components(config.k, min_inner_train, min(len(c) for c in kept.values()))
    settings = FoldSettings(k=k, Cs=tuple(config.Cs), inner_folds=config.inner_folds,
                            covariates=tuple(covariates or ()))
    jobs = [(m, f) for m in kept for f in range(len(folds))]
    args = [(kept[m], cov, y, folds[f][0], folds[f][1], settings, config.seed + 1 + f) for m, f in jobs]
    outputs = _run_tasks(X, args, config.parallel)

    fold_of = np.empty(len(y), dtype=np.int64)
    for f, (_, te) in enumerate(folds):
        fold_of[te] = f
    scores = {m: np.empty(len(y)) for m in kept}
    chosen = {m: [0.0] * len(folds) for m in kept}
    for (m, f), (s, C) in zip(jobs, outputs, strict=True):
        scores[m][folds[f][1]] = s
        chosen[m][f] = C
    table, auc_all, auc_ci = _delta_table(y, scores, list(blocks), config)
    return LogoResult(table, auc_all, auc_ci, scores, chosen, fold_of, k, len(y), int(y.sum()), config)


def _binary(y) -> np.ndarray:
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if not values <= {0, 1} or len(values) < 2:
        raise ValueError(f"phenotype must be 0/1 with both classes present; got values {sorted(values)}")
    return y.astype(np.int64)


def _run_tasks(X: np.ndarray, args: list[tuple], parallel: bool) -> list:
    if not parallel:
        return [_model_fold(X, *a) for a in args]
    import ray

    if not ray.is_initialized():
        ray.init()
    task = ray.remote(num_cpus=1)(_model_fold)
    X_ref = ray.put(X)
    return ray.get([task.remote(X_ref, *a) for a in args])


def bootstrap_indices(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] stratified resamples (cases and controls resampled separately, so both are present)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    return np.concatenate([rng.choice(pos, (n_boot, len(pos))), rng.choice(neg, (n_boot, len(neg)))], axis=1)


def rank_auc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC (Mann-Whitney, ties averaged) along the last axis; y and s shaped [..., n]."""
    from scipy.stats import rankdata

    r = rankdata(s, axis=-1)
    n1 = y.sum(axis=-1)
    n0 = y.shape[-1] - n1
    return ((r * y).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _delta_table(y, scores, genes, config):
    import polars as pl

    idx = bootstrap_indices(y, config.n_boot, config.seed)
    yb = y[idx]
    boot = {m: np.concatenate([rank_auc(yb[c:c + 50], s[idx[c:c + 50]]) for c in range(0, len(idx), 50)])
            for m, s in scores.items()}
    point = {m: float(rank_auc(y, s)) for m, s in scores.items()}
    alpha = (1 - config.ci) / (len(genes) if config.simultaneous else 1)
    lo_q, hi_q = alpha / 2, 1 - alpha / 2
    rows = []
    for g in genes:
        d = boot[ALL] - boot[g]
        lo, hi = np.quantile(d, [lo_q, hi_q])
        rows.append({"gene": g, "delta_auc": point[ALL] - point[g], "ci_low": float(lo), "ci_high": float(hi),
                     "auc_without": point[g], "ci_excludes_zero": bool(lo > 0 or hi < 0)})
    table = pl.DataFrame(rows).sort("delta_auc", descending=True, maintain_order=True)
    table = table.with_columns(pl.Series("rank", np.arange(1, len(rows) + 1)))
    ci_all = tuple(float(v) for v in np.quantile(boot[ALL], [(1 - config.ci) / 2, (1 + config.ci) / 2]))
    return table, point[ALL], ci_all


# ------------------------------------------------------------------------------------------ files and outputs


def logo_from_files(features: str | Path, phenotype: str | Path | None, covariates: str | Path | None,
                    out: str | Path, phenotype_column: str = "mdd",
                    covariate_columns: list[str] | None = None,
                    config: LogoConfig | None = None) -> LogoResult:
    """Read, join by subject_id, run LOGO and write tables, plot and report into `out`."""
    import polars as pl

    from neuro_caduceus.analysis.features import join_order, read_features, read_table

    config = config or LogoConfig()
    fm = read_features(features)
    cov = read_table(covariates) if covariates else None
    pheno = read_table(phenotype) if phenotype else cov
    if pheno is None:
        raise ValueError("give --phenotype (or a --covariates table that holds the phenotype column)")
    if phenotype_column not in pheno.columns:
        raise ValueError(f"phenotype column {phenotype_column!r} not found (columns: {pheno.columns}); "
                         "set --phenotype-column")
    pheno = pheno.filter(pl.col(phenotype_column).is_not_null())
    named = {"features": fm.subject_ids, "phenotype": pheno["subject_id"].to_list()}
    if cov is not None:
        named["covariates"] = cov["subject_id"].to_list()
    order, report = join_order(named)
    pos = {s: i for i, s in enumerate(fm.subject_ids)}
    rows = np.array([pos[s] for s in order], dtype=np.int64)
    X = fm.X[rows]
    order_df = pl.DataFrame({"subject_id": order})
    y = order_df.join(pheno, on="subject_id", how="left")[phenotype_column].to_numpy()
    cov_cols: list[str] = []
    cov_rows = None
    if cov is not None:
        cov_cols = covariate_columns or [c for c in cov.columns if c not in ("subject_id", phenotype_column)]
        cov_rows = order_df.join(cov.select(["subject_id", *cov_cols]), on="subject_id", how="left")
        nulls = [c for c in cov_cols if cov_rows[c].null_count()]
        if nulls:
            raise ValueError(f"{covariates}: covariates {nulls} have missing values for matched subjects; "
                             "impute them or leave them out with --covariate-columns")
    result = run_logo(X, fm.blocks, y, cov_rows, cov_cols, config)
    recipe = stamp(fm.recipe, "logo", [features, phenotype, covariates])  # provenance.py
    result.extra = {"recipe": recipe, "features": str(features), "join": report.__dict__,
                    "covariates": cov_cols, "subject_ids": order}
    write_logo_outputs(result, out)
    return result


def write_logo_outputs(result: LogoResult, out: str | Path) -> list[Path]:
    """logo_delta_auc.{parquet,csv}, logo_predictions.parquet, logo_delta_auc.png, logo_report.md, .json."""
    import polars as pl

    from neuro_caduceus.analysis.outputs import write_frame, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = result.extra.get("recipe")
    paths = write_frame(result.table, out / "logo_delta_auc", recipe)
    ids = result.extra.get("subject_ids") or [str(i) for i in range(result.n)]
    named = {("score_all" if m == ALL else f"score_without_{m}"): s for m, s in result.scores.items()}
    preds = pl.DataFrame({"subject_id": ids, "fold": result.fold_of, **named})
    paths += write_frame(preds, out / "logo_predictions", recipe)
    paths.append(plot_delta_auc(result, out / "logo_delta_auc.png"))
    summary = _summary(result)
    paths.append(write_text(out / "logo_summary.json", json.dumps(summary, indent=1, default=str)))
    paths.append(write_text(out / "logo_report.md", _report(result, summary)))
    return paths


def _summary(result: LogoResult) -> dict:
    c = result.config
    recipe = result.extra.get("recipe") or {}
    return {"analysis": "leave-one-gene-out ΔAUC", "recipe_id": recipe.get("recipe_id") or recipe.get("id"),
            "features": result.extra.get("features"), "n": result.n, "n_cases": result.n_cases,
            "join": result.extra.get("join"), "covariates": result.extra.get("covariates"),
            "outer_folds": c.n_folds, "inner_folds": c.inner_folds, "seed": c.seed, "pca_k_requested": c.k,
            "pca_k_used": result.k_used, "C_grid": list(c.Cs), "n_boot": c.n_boot, "ci": c.ci,
            "simultaneous": c.simultaneous,
            "auc_all": result.auc_all, "auc_all_ci": list(result.auc_all_ci), "chosen_C": result.chosen_C,
            "genes": result.table.to_dicts(), "recipe": recipe}


def _report(result: LogoResult, s: dict) -> str:
    lines = [
        "# Leave-one-gene-out ΔAUC", "", *report_lines(s.get("recipe")),
        f"- recipe: `{s['recipe_id']}` (features `{s['features']}`)",
        f"- n = {s['n']} subjects ({s['n_cases']} cases); join: {s['join']}",
        f"- covariates residualized within folds: {', '.join(s['covariates'] or []) or 'none'}",
        f"- outer stratified {s['outer_folds']}-fold, inner {s['inner_folds']}-fold for C in {s['C_grid']}; "
        f"seed {s['seed']}; PCA k = {s['pca_k_used']} (requested {s['pca_k_requested']})",
        f"- AUC with all genes: {s['auc_all']:.3f} ({100 * s['ci']:.0f}% CI {s['auc_all_ci'][0]:.3f}-"
        f"{s['auc_all_ci'][1]:.3f})",
        f"- ΔAUC CIs: {s['n_boot']} paired stratified bootstrap resamples of the pooled out-of-fold "
        f"predictions; {'simultaneous over genes (Bonferroni)' if s['simultaneous'] else 'per gene'}", "",
        "| rank | gene | ΔAUC | CI low | CI high | AUC without | CI excludes 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["genes"]:
        excl = "yes" if r["ci_excludes_zero"] else "no"
        lines.append(f"| {r['rank']} | {r['gene']} | {r['delta_auc']:.4f} | {r['ci_low']:.4f} | "
                     f"{r['ci_high']:.4f} | {r['auc_without']:.3f} | {excl} |")
    lines += ["", "![ΔAUC per gene](logo_delta_auc.png)", ""]
    return "\n".join(lines)


def plot_delta_auc(result: LogoResult, path: Path) -> Path:
    from neuro_caduceus.analysis.outputs import new_figure, save_figure

    t = result.table
    fig, ax = new_figure(6, 0.35 * t.height + 1.5)
    ypos = np.arange(t.height)[::-1]
    d = t["delta_auc"].to_numpy()
    err = np.vstack([d - t["ci_low"].to_numpy(), t["ci_high"].to_numpy() - d])
    ax.errorbar(d, ypos, xerr=err, fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(ypos, t["gene"].to_list())
    kind = "simultaneous (Bonferroni over genes) " if result.config.simultaneous else ""
    ax.set_xlabel(f"ΔAUC = AUC(all) - AUC(without gene), {kind}{100 * result.config.ci:.0f}% bootstrap CI")
    ax.set_title(title(f"Leave-one-gene-out (n={result.n}, AUC all={result.auc_all:.3f})",
                       result.extra.get("recipe")))
    return save_figure(fig, path)
