"""Gene-brain CCA: held-out canonical correlations, a permutation test, gene-level structure coefficients.

Why held-out: in-sample canonical correlations are inflated when dimensions are not << n (the first one
approaches 1 as p+q -> n). Here each side is reduced (PCA, optional covariate residualization, scaling)
and the CCA weights are fitted on the training folds only; the reported correlation is that of the
held-out canonical variates, pooled over folds. The permutation test reruns the same cross-validated
procedure on permuted brain data, so the null includes every fitted step. With covariates it is
Freedman-Lane: the brain side's residuals from its regression on the covariates (all subjects) are
permuted and added back to the fitted values, so the permuted data keep their covariate structure (shuffling
raw rows with their covariates does not, and over-rejects). Related subjects stay in one fold and are
permuted as whole groups. p-values are given per component and family-wise over components (max statistic).
CCA itself is exact and deterministic: symmetric whitening + SVD in numpy (no iterative solver).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import ray

from neuro_caduceus.analysis.features import join_order, read_features
from neuro_caduceus.analysis.folds import (
    FeatureTransform,
    ResamplingSettings,
    cap_components,
    covariate_spec,
    declared_covariates,
    kfolds,
    single_threaded,
)
from neuro_caduceus.analysis.outputs import new_figure, save_figure
from neuro_caduceus.analysis.relatedness import THIRD_DEGREE, apply_relatedness, block_permutation
from neuro_caduceus.analysis.result_files import report_header, write_result_files
from neuro_caduceus.analysis.subjects import SubjectFilter, covariate_rows
from neuro_caduceus.io import read_table
from neuro_caduceus.provenance import stamp, title
from neuro_caduceus.ray_session import ensure_ray
from neuro_caduceus.stats.pca import PCA
from neuro_caduceus.stats.residualize import Residualizer


@dataclass(frozen=True)
class CCAConfig(ResamplingSettings):
    """Reduction and CCA settings beside the shared CV/permutation ones (`seed` fixes the folds and, with the
    permutation index, each shuffle)."""

    n_perm: int = 200
    perms_per_task: int = 10
    reduce_dims: int = 20
    n_components: int = 5
    ridge: float = 1e-6
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()  # integer covariate codes declared as one linear term


@dataclass
class CCAModel:
    """Canonical weights for centred inputs: U = (X - mx) Wx, V = (Y - my) Wy; `corr` in-sample."""

    mx: np.ndarray
    my: np.ndarray
    Wx: np.ndarray
    Wy: np.ndarray
    corr: np.ndarray

    def transform(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (X - self.mx) @ self.Wx, (Y - self.my) @ self.Wy


def _inv_sqrt(C: np.ndarray, ridge: float) -> np.ndarray:
    w, V = np.linalg.eigh(C + ridge * max(np.trace(C) / len(C), 1e-12) * np.eye(len(C)))
    return (V / np.sqrt(np.maximum(w, 1e-12))) @ V.T


def fit_cca(X: np.ndarray, Y: np.ndarray, n_components: int, ridge: float = 1e-6) -> CCAModel:
    """Exact CCA: SVD of Cxx^-1/2 Cxy Cyy^-1/2; each X weight's largest-|.| entry made positive (with Y's)."""
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    n = len(X) - 1
    Kx, Ky = _inv_sqrt(Xc.T @ Xc / n, ridge), _inv_sqrt(Yc.T @ Yc / n, ridge)
    U, s, Vt = np.linalg.svd(Kx @ (Xc.T @ Yc / n) @ Ky)
    c = min(n_components, len(s))
    Wx, Wy = Kx @ U[:, :c], Ky @ Vt[:c].T
    sign = np.sign(Wx[np.argmax(np.abs(Wx), axis=0), np.arange(c)])
    sign[sign == 0] = 1
    return CCAModel(mx, my, Wx * sign, Wy * sign, np.clip(s[:c], 0, 1))


def _corr_cols(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    den = np.sqrt((A * A).sum(axis=0) * (B * B).sum(axis=0))
    return np.where(den > 0, (A * B).sum(axis=0) / np.where(den > 0, den, 1), 0.0)


@dataclass
class _SidePart:
    train: np.ndarray
    test: np.ndarray


def _reduce(Z: np.ndarray, cov, covariates, folds, dims: int, categorical=()) -> list[_SidePart]:
    """Per fold: PCA -> residualize -> standardize fitted on the training rows, applied to both parts."""
    parts = []
    for tr, te in folds:
        k = cap_components(dims, len(tr), Z.shape[1])
        c_tr = None if cov is None else cov[tr]
        c_te = None if cov is None else cov[te]
        t = FeatureTransform(k, covariates, list(categorical)).fit(Z[tr], c_tr)
        parts.append(_SidePart(t.transform(Z[tr], c_tr), t.transform(Z[te], c_te)))
    return parts


def _heldout(xp: list[_SidePart], yp: list[_SidePart], n_comp: int, ridge: float):
    """Pooled held-out canonical variates and their per-component correlation, plus the fold models."""
    Us, Vs, models = [], [], []
    for x, y in zip(xp, yp, strict=True):
        m = fit_cca(x.train, y.train, n_comp, ridge)
        u, v = m.transform(x.test, y.test)
        Us.append(u)
        Vs.append(v)
        models.append(m)
    c = min(u.shape[1] for u in Us)
    U = np.concatenate([u[:, :c] for u in Us])
    V = np.concatenate([v[:, :c] for v in Vs])
    return _corr_cols(U, V), U, V, models


def reduced_model(Y: np.ndarray, cov, covariates, categorical=()) -> tuple[np.ndarray, np.ndarray]:
    """(fitted, residuals) of Y on intercept + covariates over all subjects: Freedman-Lane's reduced model.

    Without covariates the fit is the column means, so permuting residuals = permuting rows.
    """
    if cov is None or not covariates:
        fitted = np.broadcast_to(Y.mean(axis=0), Y.shape).copy()
        return fitted, Y - fitted

    resid = Residualizer(covariate_spec(cov, covariates, list(categorical))).fit_transform(Y, cov)
    return Y - resid, resid


def _perm_chunk(xp, fitted, resid, cov, covariates, folds, groups, config: CCAConfig,
                perm_ids: list[int]) -> np.ndarray:
    """Held-out canonical correlations for these permutations (Freedman-Lane on the brain side)."""
    grp = np.arange(len(resid)) if groups is None else groups
    out = []
    with single_threaded():
        for p in perm_ids:
            perm = block_permutation(grp, np.random.default_rng([config.seed, p]))
            yp = _reduce(fitted + resid[perm], cov, covariates, folds, config.reduce_dims, config.categorical)
            out.append(_heldout(xp, yp, config.n_components, config.ridge)[0])
    return np.array(out)


def permutation_p(obs: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-component p, family-wise p over components) with the (1 + count) / (1 + n_perm) convention.

    The family-wise p of component j compares its observed value with the permutation distribution of the
    largest null correlation over all components (max statistic), so "any p_fwer <= alpha" has error <= alpha.
    """
    if not len(null):
        return np.full(len(obs), np.nan), np.full(len(obs), np.nan)
    p = (1 + (null >= obs[None, :]).sum(axis=0)) / (1 + len(null))
    top = null.max(axis=1)
    p_fwer = (1 + (top[:, None] >= obs[None, :]).sum(axis=0)) / (1 + len(null))
    return p, p_fwer


@dataclass
class CCAResult:
    table: object  # polars: component, heldout_r, train_r, null_mean, null_q95, p_value
    null: np.ndarray  # [n_perm, n_components]
    structure: object | None  # polars: gene, component, structure_r (or None without gene blocks)
    n: int
    config: CCAConfig
    dims: dict
    extra: dict = field(default_factory=dict)


def run_cca(X: np.ndarray, Y: np.ndarray, config: CCAConfig | None = None, cov=None,
            covariates: list[str] | None = None, blocks: dict[str, slice] | None = None,
            block_X: np.ndarray | None = None, groups: np.ndarray | None = None) -> CCAResult:
    """Cross-validated CCA of raw genetic `X` vs brain `Y` (same subject order) with a permutation test.

    With gene `blocks` (column slices of `block_X`, default `X`), also gene structure coefficients.
    `config.categorical` names the covariates to one-hot code; `groups` labels related subjects (same fold,
    permuted together).
    """
    config = config or CCAConfig()
    if len(X) != len(Y):
        raise ValueError(f"genetic and brain rows differ ({len(X)} vs {len(Y)}); join by subject_id first")
    covariates = list(covariates or []) if cov is not None else []
    if covariates:
        declared_covariates(cov, covariates, list(config.categorical), list(config.numeric))
    folds = kfolds(len(X), config.n_folds, config.seed, groups)
    with single_threaded():
        xp = _reduce(X, cov, covariates, folds, config.reduce_dims, config.categorical)
        yp = _reduce(Y, cov, covariates, folds, config.reduce_dims, config.categorical)
        obs, U, V, models = _heldout(xp, yp, config.n_components, config.ridge)
        fitted, resid = reduced_model(Y, cov, covariates, config.categorical)
    args = [(xp, fitted, resid, cov, covariates, folds, groups, config, ids)
            for ids in config.permutation_chunks()]
    null = _run_chunks(args, config.parallel, len(obs))
    null = null[:, :len(obs)]
    p, p_fwer = permutation_p(obs, null)
    train_r = np.mean([m.corr[:len(obs)] for m in models], axis=0)
    table = pl.DataFrame({
        "component": np.arange(1, len(obs) + 1), "heldout_r": obs, "train_r": train_r,
        "null_mean": null.mean(axis=0) if len(null) else np.full(len(obs), np.nan),
        "null_q95": np.quantile(null, 0.95, axis=0) if len(null) else np.full(len(obs), np.nan),
        "p_value": p, "p_fwer": p_fwer,
    })
    structure = None
    if blocks and len(blocks) > 1:
        structure = _structure(X if block_X is None else block_X, blocks, folds, xp, models, len(obs))
    dims = {"genetic_in": X.shape[1], "brain_in": Y.shape[1],
            "genetic_reduced": xp[0].train.shape[1], "brain_reduced": yp[0].train.shape[1]}
    return CCAResult(table, null, structure, len(X), config, dims)


def _run_chunks(args: list[tuple], parallel: bool, n_comp: int) -> np.ndarray:
    if not args:
        return np.zeros((0, n_comp))
    if not parallel:
        parts = [_perm_chunk(*a) for a in args]
    else:
        ensure_ray()
        task = ray.remote(num_cpus=1)(_perm_chunk)
        shared = [ray.put(v) for v in args[0][:-1]]  # every chunk shares all but its permutation ids
        parts = ray.get([task.remote(*shared, a[-1]) for a in args])
    c = min(p.shape[1] for p in parts)
    return np.concatenate([p[:, :c] for p in parts])


def _structure(X, blocks, folds, xp, models, n_comp):
    """Per gene: held-out corr of the gene block's first PC (oriented on the training fold) with each U."""
    rows = []
    for g, sl in blocks.items():
        scores, variates = [], []
        for (tr, te), part, m in zip(folds, xp, models, strict=True):
            pca = PCA(n_components=1).fit(X[tr][:, sl])
            s_tr, s_te = pca.transform(X[tr][:, sl])[:, 0], pca.transform(X[te][:, sl])[:, 0]
            u_tr = (part.train - m.mx) @ m.Wx[:, :n_comp]
            u_te = (part.test - m.mx) @ m.Wx[:, :n_comp]
            # the block's PC sign is arbitrary: orient it on the training fold (per component)
            orient = np.sign(_corr_cols(np.repeat(s_tr[:, None], n_comp, axis=1), u_tr))
            orient[orient == 0] = 1
            scores.append(s_te[:, None] * orient[None, :])
            variates.append(u_te)
        r = _corr_cols(np.concatenate(scores), np.concatenate(variates))
        rows += [{"gene": g, "component": j + 1, "structure_r": float(r[j])} for j in range(n_comp)]
    return pl.DataFrame(rows)


# ------------------------------------------------------------------------------------------ files and outputs


def cca_from_files(genetic: str | Path, brain: str | Path, out: str | Path, config: CCAConfig | None = None,
                   covariates: str | Path | None = None, covariate_columns: list[str] | None = None,
                   gene_matrix: str | Path | None = None, kinship: str | Path | None = None,
                   kinship_threshold: float | None = None, unrelated: bool = False,
                   feature_kind: str = "pcs", subject_filter: SubjectFilter | None = None) -> CCAResult:
    """Read both sides, join by subject_id (unmatched counts reported), restrict, run CCA, write into `out`.

    Gene structure coefficients use the genetic input's gene blocks, or `gene_matrix` (a subject matrix with
    gene blocks) when the genetic input is PCA scores or residuals. `feature_kind` picks the genetic side's
    features (see read_features: pcs, deviation, both, auto).
    """
    config = config or CCAConfig()
    g, b = read_features(genetic, feature_kind), read_features(brain)
    gm = read_features(gene_matrix) if gene_matrix else (g if g.has_gene_blocks else None)
    cov = read_table(covariates) if covariates else None
    named = {"genetic": g.subject_ids, "brain": b.subject_ids}
    if cov is not None:
        named["covariates"] = cov["subject_id"].to_list()
    if gm is not None and gm is not g:
        named["gene_matrix"] = gm.subject_ids
    order, report = join_order(named)
    subject_filter = subject_filter or SubjectFilter()
    order, restriction = subject_filter.apply(order, cov)
    order, groups, related = apply_relatedness(order, kinship, kinship_threshold or THIRD_DEGREE, unrelated)
    if len(order) < 2 * config.n_folds:
        raise ValueError(f"only {len(order)} subjects are in every input ({report.unmatched} unmatched); "
                         "check that subject_id values agree")

    def rows(fm):
        pos = {s: i for i, s in enumerate(fm.subject_ids)}
        return fm.X[np.array([pos[s] for s in order], dtype=np.int64)]

    cov_cols: list[str] = []
    cov_rows = None
    if cov is not None:
        skip = ("subject_id", subject_filter.column)
        cov_cols = covariate_columns or [c for c in cov.columns if c not in skip]
        cov_rows = covariate_rows(order, cov, cov_cols, covariates)
    block_X = None if gm is None or gm is g else rows(gm)
    blocks = None if gm is None else gm.blocks
    result = run_cca(rows(g), rows(b), config, cov_rows, cov_cols, blocks, block_X, groups)
    recipe = stamp(g.recipe, "cca", [genetic, brain, covariates, gene_matrix, kinship])
    result.extra = {"recipe": recipe, "genetic": str(genetic), "brain": str(brain),
                    "join": report.__dict__, "covariates": cov_cols, "relatedness": related,
                    "restriction": restriction, "feature_kind": g.kind}
    write_cca_outputs(result, out)
    return result


def write_cca_outputs(result: CCAResult, out: str | Path) -> list[Path]:
    """cca_correlations.{parquet,csv}, cca_null.parquet, cca_structure.{parquet,csv}, PNG, report, json."""
    c = result.null.shape[1] if result.null.ndim == 2 else 0
    null = pl.DataFrame({"perm": np.repeat(np.arange(len(result.null)), c),
                         "component": np.tile(np.arange(1, c + 1), len(result.null)),
                         "heldout_r": result.null.reshape(-1)})
    tables = {"correlations": result.table, "null": null}
    if result.structure is not None:
        tables["structure"] = result.structure
    return write_result_files(out, "cca", result, tables, ("null", plot_null), _summary, _report)


def _summary(result: CCAResult) -> dict:
    c = result.config
    recipe = result.extra.get("recipe") or {}
    return {"analysis": "gene-brain CCA", "recipe_id": recipe.get("recipe_id") or recipe.get("id"),
            "genetic": result.extra.get("genetic"), "brain": result.extra.get("brain"), "n": result.n,
            "join": result.extra.get("join"), "relatedness": result.extra.get("relatedness"),
            "covariates": result.extra.get("covariates"), "categorical": list(c.categorical),
            "numeric": list(c.numeric), "restriction": result.extra.get("restriction"),
            "feature_kind": result.extra.get("feature_kind", "pcs"),
            "folds": c.n_folds, "seed": c.seed, "n_perm": c.n_perm, "reduce_dims": c.reduce_dims,
            "permutation": ("Freedman-Lane (brain residuals on the covariates permuted)"
                            if result.extra.get("covariates") else "brain rows permuted"),
            "dims": result.dims, "components": result.table.to_dicts(), "recipe": recipe}


def _report(result: CCAResult, s: dict) -> str:
    lines = [
        *report_header("Gene-brain CCA", s,
                       f"genetic `{s['genetic']}` ({s['feature_kind']}), brain `{s['brain']}`",
                       f"{s['n']} matched subjects"),
        f"- {s['folds']}-fold CV, seed {s['seed']}; PCA per side fitted on training folds: "
        f"genetic {s['dims']['genetic_in']} -> {s['dims']['genetic_reduced']}, "
        f"brain {s['dims']['brain_in']} -> {s['dims']['brain_reduced']} dims",
        f"- permutation test: {s['n_perm']} permutations ({s['permutation']}), whole CV rerun; "
        "p = (1 + #null >= observed) / (1 + n_perm); p (FWER) against the maximum over components", "",
        "| component | held-out r | train r | null mean | null 95% | p | p (FWER) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["components"]:
        lines.append(f"| {r['component']} | {r['heldout_r']:.3f} | {r['train_r']:.3f} | "
                     f"{r['null_mean']:.3f} | {r['null_q95']:.3f} | {r['p_value']:.4f} | {r['p_fwer']:.4f} |")
    if result.structure is not None:
        top = result.structure.filter(result.structure["component"] == 1).sort("structure_r", descending=True)
        lines += ["", "Gene structure coefficients (component 1, held-out; block PC1 oriented on the "
                  "training folds):", "", "| gene | r |", "|---|---|"]
        lines += [f"| {r['gene']} | {r['structure_r']:.3f} |" for r in top.to_dicts()]
    lines += ["", "![canonical correlations vs permutation null](cca_null.png)", ""]
    return "\n".join(lines)


def plot_null(result: CCAResult, path: Path) -> Path:
    t = result.table
    fig, ax = new_figure(1.2 * t.height + 2.5, 3.5)
    comps = t["component"].to_numpy()
    if len(result.null):
        ax.violinplot([result.null[:, j] for j in range(t.height)], positions=comps, showextrema=False)
    ax.plot(comps, t["heldout_r"].to_numpy(), "o", color="crimson", label="held-out r")
    for x, (r, p) in enumerate(zip(t["heldout_r"].to_list(), t["p_value"].to_list(), strict=True), start=1):
        ax.annotate(f"p={p:.3g}", (x, r), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_xticks(comps)
    ax.set_xlabel("canonical component")
    ax.set_ylabel("held-out canonical correlation")
    ax.set_title(title(f"Gene-brain CCA (n={result.n}, {result.config.n_perm} permutations)",
                       result.extra.get("recipe")))
    ax.legend(loc="upper right")
    return save_figure(fig, path)
