"""Leave-one-gene-out attribution: ΔAUC per gene from repeated nested CV, with a permutation test.

Why: "which genes matter" = how much held-out discrimination drops when a gene's block of the concatenated
embedding is removed and the whole pipeline (PCA -> residualize -> standardize -> L2 logistic regression,
C chosen by inner CV) is refitted. AUCs are computed per outer fold (pooling scores of separately fitted
models across folds mixes their calibrations and biases a null model below 0.5), over several repeats of
the stratified split, so the spread reflects refitting as well as test-set sampling. All models share the
same folds and inner seeds, so ΔAUC is paired per fold.

Inference: the interval is the corrected repeated-CV t interval of Nadeau & Bengio (2003) / Bouckaert &
Frank (2004): variance (1/J + n_test/n_train) s^2 over the J = repeats x folds paired differences, t with J-1
df. The p-value is a permutation test through the whole nested procedure: the phenotype (default) or the
gene's block rows are permuted (whole related groups at a time), every fold refitted, ΔAUC recomputed.
Tasks run on Ray (or serially, with bit-identical results).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import ray

from neuro_caduceus.analysis.folds import (
    DEFAULT_CS,
    FoldSettings,
    ResamplingSettings,
    cap_components,
    declared_covariates,
    fit_predict_fold,
    stratified_folds,
)
from neuro_caduceus.analysis.gene_blocks import BlockLayout
from neuro_caduceus.analysis.outputs import new_figure, save_figure
from neuro_caduceus.analysis.phenotype_inputs import read_analysis_inputs
from neuro_caduceus.analysis.relatedness import block_permutation
from neuro_caduceus.analysis.result_files import report_header, write_result_files
from neuro_caduceus.analysis.subjects import SubjectFilter
from neuro_caduceus.provenance import stamp, title
from neuro_caduceus.ray_session import ensure_ray
from neuro_caduceus.stats.residualize import Residualizer

ALL = "__all_genes__"
Permute = Literal["phenotype", "block"]
Reduce = Literal["gene", "all"]


@dataclass(frozen=True)
class LogoConfig(ResamplingSettings):
    """Repeated nested-CV settings beside the shared CV/permutation ones (`seed` fixes every split, inner
    seed and permutation)."""

    inner_folds: int = 3
    n_repeats: int = 5
    reduce: Reduce = "gene"  # PCA per gene block (k_per_gene each) or one PCA(k) over all genes
    k_per_gene: int = 3
    k: int = 32
    genetic_pcs: int = 0  # top PCs of the features themselves (per training fold) added to the covariates
    Cs: tuple[float, ...] = DEFAULT_CS
    permute: Permute = "phenotype"
    ci: float = 0.95
    simultaneous: bool = True  # Bonferroni over genes: all genes' intervals hold jointly at level `ci`


@dataclass
class LogoResult:
    """Per-gene ΔAUC table plus what is needed to reproduce and report it."""

    table: object  # polars: gene, delta_auc, ci_low, ci_high, sd_folds, auc_without, p_value, p_holm, ...
    auc_all: float
    auc_all_ci: tuple[float, float]
    fold_auc: dict[str, np.ndarray]  # model -> [repeats, folds] held-out AUC
    scores: dict[str, np.ndarray]  # model -> [repeats, n] out-of-fold decision scores, subject order
    chosen_C: dict[str, list[float]]
    fold_of: np.ndarray  # [repeats, n]
    null: np.ndarray  # [n_perm, genes] permutation ΔAUC (genes in `blocks` order)
    k_used: int
    n: int
    n_cases: int
    config: LogoConfig
    extra: dict = field(default_factory=dict)


def _seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (seed, repeat, fold): independent streams, reproducible."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _model_fold(X, cols, cov, y, train, test, settings, seed, groups=None):
    """One (model, repeat, fold) task: fit on `train` rows of the kept columns, score `test` rows."""
    if settings.layout is not None:
        settings = replace(settings, layout=settings.layout.take(cols))
    return fit_predict_fold(X[:, cols], cov, y, train, test, settings, seed, groups)


def _plan(y, groups, config: LogoConfig) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """[repeat][fold] (train, test): repeat r is a stratified (grouped) split seeded by (seed, r)."""
    return [stratified_folds(y, config.n_folds, _seed(config.seed, r), groups)
            for r in range(config.n_repeats)]


def _aucs(X, kept, cov, y, groups, plan, settings, config) -> dict[str, np.ndarray]:
    """Held-out AUC [repeats, folds] of each model (columns `kept[model]` of X) over the fold plan."""
    out = {}
    for m, cols in kept.items():
        a = np.empty((len(plan), config.n_folds))
        for r, folds in enumerate(plan):
            for f, (tr, te) in enumerate(folds):
                s, _ = _model_fold(X, cols, cov, y, tr, te, settings, _seed(config.seed, r, f), groups)
                a[r, f] = float(rank_auc(y[te], s))
        out[m] = a
    return out


def _perm_chunk(X, kept, blocks, cov, y, groups, settings, config, auc_without, fitted,
                perm_ids) -> np.ndarray:
    """Mean ΔAUC per gene for these permutations, the whole nested procedure rerun each time.

    `phenotype`: y is permuted (folds re-drawn from it), every model refitted. `block`: the gene's block
    is replaced by fitted + permuted residuals of its regression on the covariates (Freedman-Lane; without
    covariates the fit is the column means, i.e. a plain row permutation), so the block keeps its covariate
    structure and loses only what it shares with y beyond the covariates; the without-gene model is
    unchanged and its AUCs are reused.
    """
    genes = list(blocks)
    grp = np.arange(len(y)) if groups is None else groups
    out = np.empty((len(perm_ids), len(genes)))
    for i, b in enumerate(perm_ids):
        perm = block_permutation(grp, np.random.default_rng([config.seed, 1_000_003, b]))
        if config.permute == "phenotype":
            yb = y[perm]
            a = _aucs(X, kept, cov, yb, groups, _plan(yb, groups, config), settings, config)
            out[i] = [(a[ALL] - a[g]).mean() for g in genes]
            continue
        plan = _plan(y, groups, config)
        for j, g in enumerate(genes):
            Xb = X.copy()
            resid = X[:, blocks[g]] - fitted[:, blocks[g]]
            Xb[:, blocks[g]] = fitted[:, blocks[g]] + resid[perm]
            a = _aucs(Xb, {ALL: kept[ALL]}, cov, y, groups, plan, settings, config)
            out[i, j] = (a[ALL] - auc_without[g]).mean()
    return out


def _covariate_fit(X, cov, covariates, categorical, numeric) -> np.ndarray:
    """Each column's OLS fit on intercept + covariates over all rows (the reduced model of Freedman-Lane)."""
    if cov is None or not covariates:
        return np.broadcast_to(X.mean(axis=0), X.shape).copy()

    return X - Residualizer(declared_covariates(cov, covariates, categorical, numeric)).fit_transform(X, cov)


def run_logo(X: np.ndarray, blocks: dict[str, slice], y: np.ndarray, cov=None,
             covariates: list[str] | None = None, config: LogoConfig | None = None,
             categorical: list[str] | None = None, groups: np.ndarray | None = None,
             numeric: list[str] | None = None, scalar: np.ndarray | None = None) -> LogoResult:
    """LOGO ΔAUC from raw (untransformed) features: `X` subjects x features, `blocks` gene -> column slice.

    `cov` is a polars DataFrame in the same row order as `X` (or None), `covariates` the columns of it to
    residualize on, `categorical` those of them to one-hot code and `numeric` integer codes declared linear.
    `groups` labels related subjects (same label = same fold, permuted together). `scalar` marks per-gene
    scalar columns (the deviation) that the per-gene reduction keeps as they are. Nothing is fitted outside
    a fold: no pre-fitted transform is taken.
    """
    config = config or LogoConfig()
    y = _binary(y)
    if len(blocks) < 2:
        raise ValueError(f"LOGO needs >= 2 gene blocks; got {list(blocks)} (recipe gene_list missing?)")
    if X.shape[0] != len(y) or (cov is not None and cov.height != len(y)):
        raise ValueError(f"row counts differ: features {X.shape[0]}, phenotype {len(y)}, "
                         f"covariates {None if cov is None else cov.height}")
    if config.permute not in ("phenotype", "block"):
        raise ValueError(f"permute must be 'phenotype' or 'block', got {config.permute!r}")
    if config.n_repeats < 1 or config.n_perm < 0:
        raise ValueError(f"need n_repeats >= 1 and n_perm >= 0; got {config.n_repeats}, {config.n_perm}")
    if config.reduce not in ("gene", "all"):
        raise ValueError(f"reduce must be 'gene' or 'all', got {config.reduce!r}")
    if cov is not None and covariates:
        declared_covariates(cov, covariates, categorical, numeric)  # undeclared text or integer codes
    plan = _plan(y, groups, config)
    n_train = min(len(tr) for folds in plan for tr, _ in folds)
    all_cols = np.arange(X.shape[1])
    kept = {ALL: all_cols}
    for g, sl in blocks.items():
        kept[g] = np.setdiff1d(all_cols, all_cols[sl])
    inner_train = n_train * (config.inner_folds - 1) // config.inner_folds
    layout = None
    if config.reduce == "gene":
        layout = BlockLayout.from_blocks(blocks, X.shape[1], scalar)
        k = cap_components(config.k_per_gene, inner_train, max(sl.stop - sl.start for sl in blocks.values()))
    else:
        k = cap_components(config.k, inner_train, min(len(c) for c in kept.values()))
    settings = FoldSettings(k=k, Cs=tuple(config.Cs), inner_folds=config.inner_folds,
                            covariates=tuple(covariates or ()) if cov is not None else (),
                            categorical=tuple(categorical or ()) if cov is not None else (),
                            layout=layout, genetic_pcs=config.genetic_pcs)
    jobs = [(m, r, f) for m in kept for r in range(config.n_repeats) for f in range(config.n_folds)]
    args = [(kept[m], cov, y, plan[r][f][0], plan[r][f][1], settings, _seed(config.seed, r, f), groups)
            for m, r, f in jobs]
    outputs = _run_tasks(_model_fold, X, args, config.parallel)

    R, n = config.n_repeats, len(y)
    fold_of = np.empty((R, n), dtype=np.int64)
    for r, folds in enumerate(plan):
        for f, (_, te) in enumerate(folds):
            fold_of[r, te] = f
    scores = {m: np.empty((R, n)) for m in kept}
    chosen = {m: [0.0] * (R * config.n_folds) for m in kept}
    fold_auc = {m: np.empty((R, config.n_folds)) for m in kept}
    for (m, r, f), (s, C) in zip(jobs, outputs, strict=True):
        te = plan[r][f][1]
        scores[m][r, te] = s
        chosen[m][r * config.n_folds + f] = C
        fold_auc[m][r, f] = float(rank_auc(y[te], s))

    chunks = config.permutation_chunks()
    fitted = _covariate_fit(X, cov, covariates, categorical, numeric) \
        if config.permute == "block" and chunks else None
    perm_args = [(kept, blocks, cov, y, groups, settings, config, fold_auc, fitted, ids) for ids in chunks]
    parts = _run_tasks(_perm_chunk, X, perm_args, config.parallel)
    null = np.concatenate(parts) if parts else np.zeros((0, len(blocks)))
    table, auc_all, auc_ci = _delta_table(fold_auc, null, list(blocks), config)
    return LogoResult(table, auc_all, auc_ci, fold_auc, scores, chosen, fold_of, null, k, n, int(y.sum()),
                      config)


def _binary(y) -> np.ndarray:
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if not values <= {0, 1} or len(values) < 2:
        raise ValueError(f"phenotype must be 0/1 with both classes present; got values {sorted(values)}")
    return y.astype(np.int64)


def _run_tasks(fn, X: np.ndarray, args: list[tuple], parallel: bool) -> list:
    """fn(X, *a) for each argument tuple: in-process, or as Ray tasks with X put in the object store once."""
    if not args:
        return []
    if not parallel:
        return [fn(X, *a) for a in args]
    ensure_ray()
    task = ray.remote(num_cpus=1)(fn)
    refs: dict[int, object] = {}

    def shared(v):  # large arguments common to many tasks (covariates, fitted values) go in the store once
        big = isinstance(v, np.ndarray) and v.nbytes > 1 << 20 or type(v).__name__ == "DataFrame"
        if not big:
            return v
        if id(v) not in refs:
            refs[id(v)] = ray.put(v)
        return refs[id(v)]

    X_ref = ray.put(X)
    return ray.get([task.remote(X_ref, *[shared(v) for v in a]) for a in args])


def rank_auc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC (Mann-Whitney, ties averaged) along the last axis; y and s shaped [..., n]."""
    from scipy.stats import rankdata

    r = rankdata(s, axis=-1)
    n1 = y.sum(axis=-1)
    n0 = y.shape[-1] - n1
    return ((r * y).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def corrected_t_interval(d: np.ndarray, n_folds: int, level: float) -> tuple[float, float, float]:
    """(mean, low, high) of paired per-fold differences `d` [repeats, folds]: Nadeau-Bengio corrected t.

    Var(mean) = (1/J + n_test/n_train) s^2 with J = repeats x folds and n_test/n_train = 1/(folds - 1): the
    correction for the overlap of training sets that makes the naive 1/J variance far too small.
    """
    from scipy.stats import t

    d = np.asarray(d, dtype=np.float64).reshape(-1)
    J = len(d)
    mean = float(d.mean())
    if J < 2:
        return mean, float("nan"), float("nan")
    se = float(np.sqrt((1 / J + 1 / (n_folds - 1)) * d.var(ddof=1)))
    half = float(t.ppf(0.5 + level / 2, J - 1)) * se
    return mean, mean - half, mean + half


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error under any dependence between genes)."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adj, 1.0)
    return out


def max_statistic_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Family-wise p per gene from one set of permutations (single-step max-T, Westfall & Young 1993):
    (1 + #{permutations whose largest ΔAUC over all genes >= the gene's observed ΔAUC}) / (1 + n_perm).

    Every gene is compared with the same null maximum, so "p_fwer <= alpha" bounds the chance of any false
    positive among all genes at alpha, and the smallest attainable value is 1 / (1 + n_perm) whatever the
    number of genes (a Holm or Bonferroni correction of per-gene permutation p needs genes / alpha
    permutations before any gene can pass).
    """
    if not len(null):
        return np.full(len(observed), np.nan)
    top = null.max(axis=1)
    return (1 + (top[:, None] >= np.asarray(observed)[None, :] - 1e-12).sum(axis=0)) / (1 + len(null))


def smallest_p(n_perm: int, n_genes: int) -> dict[str, float]:
    """The smallest p each correction can reach with this many permutations and genes."""
    if n_perm < 1:
        return {"p_fwer": float("nan"), "p_holm": float("nan")}
    return {"p_fwer": 1 / (1 + n_perm), "p_holm": min(1.0, n_genes / (1 + n_perm))}


def _delta_table(fold_auc, null, genes, config):
    level = 1 - (1 - config.ci) / (len(genes) if config.simultaneous else 1)
    rows = []
    for j, g in enumerate(genes):
        d = fold_auc[ALL] - fold_auc[g]
        mean, lo, hi = corrected_t_interval(d, config.n_folds, level)
        p = (1 + (null[:, j] >= mean - 1e-12).sum()) / (1 + len(null)) if len(null) else float("nan")
        rows.append({"gene": g, "delta_auc": mean, "ci_low": lo, "ci_high": hi,
                     "sd_folds": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
                     "sd_repeats": float(d.mean(axis=1).std(ddof=1)) if len(d) > 1 else float("nan"),
                     "auc_without": float(fold_auc[g].mean()), "p_value": float(p),
                     "ci_excludes_zero": bool(lo > 0 or hi < 0)})
    table = pl.DataFrame(rows)
    table = table.with_columns(pl.Series("p_holm", holm(table["p_value"].to_numpy())),
                               pl.Series("p_fwer", max_statistic_p(table["delta_auc"].to_numpy(), null)))
    table = table.sort("delta_auc", descending=True, maintain_order=True)
    table = table.with_columns(pl.Series("rank", np.arange(1, len(rows) + 1)))
    a = fold_auc[ALL]
    mean, lo, hi = corrected_t_interval(a - 0.5, config.n_folds, config.ci)
    return table, mean + 0.5, (lo + 0.5, hi + 0.5)


# ------------------------------------------------------------------------------------------ files and outputs


def logo_from_files(features: str | Path, phenotype: str | Path | None, covariates: str | Path | None,
                    out: str | Path, phenotype_column: str = "mdd",
                    covariate_columns: list[str] | None = None,
                    config: LogoConfig | None = None, categorical: list[str] | None = None,
                    kinship: str | Path | None = None, kinship_threshold: float | None = None,
                    unrelated: bool = False, numeric: list[str] | None = None, feature_kind: str = "auto",
                    subject_filter: SubjectFilter | None = None) -> LogoResult:
    """Read, join by subject_id, restrict and handle relatedness, run LOGO, write tables, plot and report."""
    config = config or LogoConfig()
    inputs = read_analysis_inputs(features, phenotype, covariates, phenotype_column, covariate_columns,
                                  feature_kind, subject_filter, kinship, kinship_threshold, unrelated)
    result = run_logo(inputs.X, inputs.features.blocks, inputs.y, inputs.cov, inputs.cov_cols, config,
                      categorical, inputs.groups, numeric, inputs.features.scalar_columns)
    recipe = stamp(inputs.features.recipe, "logo", [features, phenotype, covariates, kinship])
    result.extra = {"recipe": recipe, **inputs.report(features, categorical, numeric)}
    write_logo_outputs(result, out)
    return result


def write_logo_outputs(result: LogoResult, out: str | Path) -> list[Path]:
    """logo_delta_auc.{parquet,csv}, logo_fold_auc, logo_null, logo_predictions, PNG, report, summary JSON."""
    R, F = result.fold_auc[ALL].shape
    names = {m: ("all" if m == ALL else m) for m in result.fold_auc}
    fold_auc = pl.DataFrame({
        "model": [names[m] for m in result.fold_auc for _ in range(R * F)],
        "repeat": np.tile(np.repeat(np.arange(R), F), len(names)),
        "fold": np.tile(np.arange(F), R * len(names)),
        "auc": np.concatenate([a.reshape(-1) for a in result.fold_auc.values()])})
    genes = [m for m in result.fold_auc if m != ALL]
    null = pl.DataFrame({
        "perm": np.repeat(np.arange(len(result.null)), len(genes)), "gene": genes * len(result.null),
        "delta_auc": result.null.reshape(-1)})
    ids = result.extra.get("subject_ids") or [str(i) for i in range(result.n)]
    named = {("score_all" if m == ALL else f"score_without_{m}"): s.reshape(-1)
             for m, s in result.scores.items()}
    preds = pl.DataFrame({"subject_id": ids * R, "repeat": np.repeat(np.arange(R), result.n),
                          "fold": result.fold_of.reshape(-1), **named})
    tables = {"delta_auc": result.table, "fold_auc": fold_auc, "null": null, "predictions": preds}
    return write_result_files(out, "logo", result, tables, ("delta_auc", plot_delta_auc), _summary, _report)


def _summary(result: LogoResult) -> dict:
    c = result.config
    recipe = result.extra.get("recipe") or {}
    return {"analysis": "leave-one-gene-out ΔAUC", "recipe_id": recipe.get("recipe_id") or recipe.get("id"),
            "features": result.extra.get("features"), "n": result.n, "n_cases": result.n_cases,
            "join": result.extra.get("join"), "relatedness": result.extra.get("relatedness"),
            "covariates": result.extra.get("covariates"), "categorical": result.extra.get("categorical"),
            "outer_folds": c.n_folds, "inner_folds": c.inner_folds, "repeats": c.n_repeats, "seed": c.seed,
            "reduce": c.reduce, "pca_k_requested": c.k_per_gene if c.reduce == "gene" else c.k,
            "pca_k_used": result.k_used, "C_grid": list(c.Cs), "genetic_pcs": c.genetic_pcs,
            "feature_kind": result.extra.get("feature_kind", "pcs"),
            "restriction": result.extra.get("restriction"), "numeric": result.extra.get("numeric"),
            "smallest_attainable_p": smallest_p(c.n_perm, len(result.fold_auc) - 1),
            "interval": "Nadeau-Bengio corrected repeated-CV t interval over repeats x folds",
            "ci": c.ci, "simultaneous": c.simultaneous, "n_perm": c.n_perm, "permute": c.permute,
            "p_value": "one-sided permutation p = (1 + #{null mean ΔAUC >= observed}) / (1 + n_perm); "
                       "p_holm: Holm over genes; p_fwer: max ΔAUC over genes per permutation",
            "auc_all": result.auc_all, "auc_all_ci": list(result.auc_all_ci), "chosen_C": result.chosen_C,
            "genes": result.table.to_dicts(), "recipe": recipe}


def _report(result: LogoResult, s: dict) -> str:
    perm_what = "phenotype" if s["permute"] == "phenotype" else "gene's block rows"
    reduced = (f"PCA per gene block, k = {s['pca_k_used']} per gene (requested {s['pca_k_requested']})"
               if s["reduce"] == "gene" else
               f"one PCA over all genes, k = {s['pca_k_used']} (requested {s['pca_k_requested']})")
    low = s["smallest_attainable_p"]
    lines = [
        *report_header("Leave-one-gene-out ΔAUC", s, f"features `{s['features']}` ({s['feature_kind']})",
                       f"{s['n']} subjects ({s['n_cases']} cases)"),
        f"- {s['repeats']} x outer stratified {s['outer_folds']}-fold, inner {s['inner_folds']}-fold for C "
        f"in {s['C_grid']}; seed {s['seed']}; {reduced}"
        + (f"; top {s['genetic_pcs']} PCs of the genetic features (per training fold) added to the covariates"
           if s["genetic_pcs"] else ""),
        f"- AUC with all genes (mean of per-fold AUCs): {s['auc_all']:.3f} ({100 * s['ci']:.0f}% interval "
        f"{s['auc_all_ci'][0]:.3f}-{s['auc_all_ci'][1]:.3f})",
        f"- ΔAUC intervals: {s['interval']}; "
        f"{'simultaneous over genes (Bonferroni)' if s['simultaneous'] else 'per gene'}",
        f"- p: {s['n_perm']} permutations of the {perm_what} through the whole nested procedure "
        "(one-sided, ΔAUC > 0); p (FWER): each gene against the largest ΔAUC over all genes of each "
        "permutation; p_holm adjusts the per-gene p over genes",
        f"- smallest attainable p with {s['n_perm']} permutations: p (FWER) {low['p_fwer']:.4g}, "
        f"p (Holm) {low['p_holm']:.4g}", "",
        "| rank | gene | ΔAUC | CI low | CI high | AUC without | p | p (FWER) | p (Holm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["genes"]:
        lines.append(f"| {r['rank']} | {r['gene']} | {r['delta_auc']:.4f} | {r['ci_low']:.4f} | "
                     f"{r['ci_high']:.4f} | {r['auc_without']:.3f} | {r['p_value']:.4f} | "
                     f"{r['p_fwer']:.4f} | {r['p_holm']:.4f} |")
    lines += ["", "![ΔAUC per gene](logo_delta_auc.png)", ""]
    return "\n".join(lines)


def plot_delta_auc(result: LogoResult, path: Path) -> Path:
    t = result.table
    fig, ax = new_figure(6, 0.35 * t.height + 1.5)
    ypos = np.arange(t.height)[::-1]
    d = t["delta_auc"].to_numpy()
    err = np.vstack([d - t["ci_low"].to_numpy(), t["ci_high"].to_numpy() - d])
    ax.errorbar(d, ypos, xerr=np.nan_to_num(err), fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(ypos, t["gene"].to_list())
    kind = "simultaneous (Bonferroni over genes) " if result.config.simultaneous else ""
    ax.set_xlabel(f"ΔAUC = AUC(all) - AUC(without gene), {kind}{100 * result.config.ci:.0f}% corrected-t "
                  "interval")
    ax.set_title(title(f"Leave-one-gene-out (n={result.n}, {result.config.n_repeats}x{result.config.n_folds}"
                       f"-fold, AUC all={result.auc_all:.3f})", result.extra.get("recipe")))
    return save_figure(fig, path)
