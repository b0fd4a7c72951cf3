"""Per-gene association test: each gene's features against a binary phenotype, adjusted for covariates.

Why: LOGO refits a nested cross-validated model per gene and per permutation, which is right for
"how much does this gene add to prediction" but cannot scale to thousands of genes. This test asks the
GWAS-style question "is this gene associated with the phenotype beyond the covariates" with one null fit
for all genes: the logistic regression of the phenotype on intercept + covariates (+ optionally the top
principal components of the genetic features, for stratification), then for every gene the efficient
score test of adding its block (each block reduced to a few principal components, fitted without the
phenotype, and its deviation column kept as is):

    U = G^T (y - mu0),   V = G~^T W G~,   G~ = G - X0 (X0^T W X0)^-1 X0^T W G,   S = U^T V^-1 U ~ chi2(df)

with mu0 and W = diag(mu0 (1 - mu0)) from the null fit and df the block's column count. p is asymptotic;
Holm (family-wise) and Benjamini-Hochberg (false discovery rate) adjust over genes. Cost: one IRLS fit,
then a few matrix products per gene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from neuro_caduceus.analysis.folds import declared_covariates
from neuro_caduceus.analysis.gene_blocks import BlockLayout, BlockReducer
from neuro_caduceus.analysis.logo import holm
from neuro_caduceus.analysis.outputs import new_figure, save_figure
from neuro_caduceus.analysis.phenotype_inputs import read_analysis_inputs
from neuro_caduceus.analysis.result_files import report_header, write_result_files
from neuro_caduceus.analysis.subjects import SubjectFilter
from neuro_caduceus.provenance import stamp, title
from neuro_caduceus.stats.pca import PCA
from neuro_caduceus.stats.residualize import Residualizer


@dataclass(frozen=True)
class GeneTestConfig:
    """Components per gene block, genetic PCs added to the null model, and the significance level."""

    k_per_gene: int = 3
    genetic_pcs: int = 0
    alpha: float = 0.05


@dataclass
class GeneTestResult:
    table: object  # polars: rank, gene, df, score, p_value, p_holm, q_bh, significant_fwer, significant_fdr
    n: int
    n_cases: int
    null_design: list[str]
    config: GeneTestConfig
    extra: dict = field(default_factory=dict)


def fit_null_logistic(X0: np.ndarray, y: np.ndarray, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """Fitted probabilities of the unpenalized logistic regression of y on [1, X0] (Newton-Raphson / IRLS)."""
    D = np.column_stack([np.ones(len(y)), X0])
    beta = np.zeros(D.shape[1])
    beta[0] = np.log(y.mean() / (1 - y.mean()))
    for _ in range(max_iter):
        mu = 1 / (1 + np.exp(-(D @ beta)))
        w = mu * (1 - mu)
        step = np.linalg.solve(D.T @ (w[:, None] * D), D.T @ (y - mu))
        beta += step
        if np.abs(step).max() < tol:
            break
    else:
        raise ValueError("the null logistic model (phenotype on the covariates) did not converge: a "
                         "covariate separates cases from controls; drop it")
    return 1 / (1 + np.exp(-(D @ beta)))


def score_tests(G: np.ndarray, genes: list[np.ndarray], X0: np.ndarray, y: np.ndarray,
                mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score statistic, df) per gene: columns `genes[i]` of G tested given the null fit mu on [1, X0]."""
    D = np.column_stack([np.ones(len(y)), X0])
    w = mu * (1 - mu)
    Gt = G - D @ np.linalg.solve(D.T @ (w[:, None] * D), D.T @ (w[:, None] * G))
    U = G.T @ (y - mu)
    stats = np.empty(len(genes))
    for i, cols in enumerate(genes):
        V = Gt[:, cols].T @ (w[:, None] * Gt[:, cols])
        u = U[cols]
        stats[i] = float(u @ np.linalg.lstsq(V, u, rcond=None)[0])
    return stats, np.array([len(c) for c in genes])


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH q-values (false discovery rate under independence or positive dependence)."""
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    q = np.minimum.accumulate((m / np.arange(m, 0, -1)) * p[order][::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def run_gene_test(X: np.ndarray, blocks: dict[str, slice], y: np.ndarray, cov=None,
                  covariates: list[str] | None = None, config: GeneTestConfig | None = None,
                  categorical: list[str] | None = None, numeric: list[str] | None = None,
                  scalar: np.ndarray | None = None) -> GeneTestResult:
    """Score test of every gene block (X's columns `blocks[gene]`) against the 0/1 phenotype `y`."""
    from scipy.stats import chi2

    config = config or GeneTestConfig()
    y = np.asarray(y)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"phenotype must be 0/1 with both classes present; got {sorted(set(y.tolist()))}")
    y = y.astype(np.float64)
    X0, design = _null_design(X, cov, covariates, categorical, numeric, config.genetic_pcs)
    if len(y) <= X0.shape[1] + 2:
        raise ValueError(f"{len(y)} subjects cannot fit a null model with {X0.shape[1]} covariate columns")
    reducer = BlockReducer(BlockLayout.from_blocks(blocks, X.shape[1], scalar), config.k_per_gene)
    G = reducer.fit_transform(X)
    sd = G.std(axis=0)
    G = (G - G.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)
    sizes = [(0 if pca is None else pca.n_components_) + len(keep) for _, pca, keep in reducer.parts_]
    ends = np.cumsum(sizes)
    genes = [np.arange(e - s, e) for s, e in zip(sizes, ends, strict=True)]
    mu = fit_null_logistic(X0, y)
    stat, df = score_tests(G, genes, X0, y, mu)
    p = chi2.sf(stat, df)
    table = pl.DataFrame({"gene": list(blocks), "df": df, "score": stat, "p_value": p,
                          "p_holm": holm(p), "q_bh": benjamini_hochberg(p)})
    table = table.with_columns((pl.col("p_holm") <= config.alpha).alias("significant_fwer"),
                               (pl.col("q_bh") <= config.alpha).alias("significant_fdr"))
    table = table.sort("p_value", maintain_order=True)
    table = table.with_columns(pl.Series("rank", np.arange(1, table.height + 1))).select(
        ["rank", *[c for c in table.columns if c != "rank"]])
    return GeneTestResult(table, len(y), int(y.sum()), design, config)


def _null_design(X, cov, covariates, categorical, numeric, genetic_pcs) -> tuple[np.ndarray, list[str]]:
    """The null model's covariate columns (no intercept), standardized, and their names."""
    parts, names = [], []
    if cov is not None and covariates:
        r = Residualizer(declared_covariates(cov, covariates, categorical, numeric)).learn_levels(cov)
        parts.append(r.design(cov))
        names += r.design_columns_
    if genetic_pcs:
        pca = PCA(n_components=min(genetic_pcs, X.shape[0] - 2, X.shape[1])).fit(X)
        parts.append(pca.transform(X))
        names += [f"gPC{i + 1}" for i in range(pca.n_components_)]
    if not parts:
        return np.zeros((X.shape[0], 0)), names
    X0 = np.hstack(parts)
    sd = X0.std(axis=0)
    constant = [n for n, s in zip(names, sd, strict=True) if s <= 0]
    if constant:
        raise ValueError(f"covariate column(s) {constant} are constant in these subjects; drop them")
    return (X0 - X0.mean(axis=0)) / sd, names


# ------------------------------------------------------------------------------------------ files and outputs


def gene_test_from_files(features: str | Path, phenotype: str | Path | None, covariates: str | Path | None,
                         out: str | Path, phenotype_column: str = "mdd",
                         covariate_columns: list[str] | None = None, config: GeneTestConfig | None = None,
                         categorical: list[str] | None = None, numeric: list[str] | None = None,
                         feature_kind: str = "auto", subject_filter: SubjectFilter | None = None,
                         kinship: str | Path | None = None,
                         kinship_threshold: float | None = None) -> GeneTestResult:
    """Read and join like `logo` (with a kinship file, a maximal unrelated set), test, write into `out`."""
    config = config or GeneTestConfig()
    inputs = read_analysis_inputs(features, phenotype, covariates, phenotype_column, covariate_columns,
                                  feature_kind, subject_filter, kinship, kinship_threshold,
                                  unrelated=kinship is not None)
    if not inputs.features.has_gene_blocks:
        raise ValueError(f"{features}: the per-gene test needs gene blocks (a subject matrix or embedding "
                         "shards with a gene list), not PCA scores or residuals")
    result = run_gene_test(inputs.X, inputs.features.blocks, inputs.y, inputs.cov, inputs.cov_cols, config,
                           categorical, numeric, inputs.features.scalar_columns)
    recipe = stamp(inputs.features.recipe, "gene_test", [features, phenotype, covariates, kinship])
    result.extra = {"recipe": recipe, **inputs.report(features, categorical, numeric)}
    write_result_files(out, "gene_test", result, {"results": result.table}, ("qq", plot_qq), _summary,
                       _report)
    return result


def _summary(result: GeneTestResult) -> dict:
    recipe = result.extra.get("recipe") or {}
    c = result.config
    return {"analysis": "per-gene score test", "recipe_id": recipe.get("recipe_id") or recipe.get("id"),
            "features": result.extra.get("features"), "feature_kind": result.extra.get("feature_kind"),
            "n": result.n, "n_cases": result.n_cases, "join": result.extra.get("join"),
            "restriction": result.extra.get("restriction"), "relatedness": result.extra.get("relatedness"),
            "covariates": result.extra.get("covariates"), "categorical": result.extra.get("categorical"),
            "numeric": result.extra.get("numeric"), "null_design": result.null_design,
            "k_per_gene": c.k_per_gene, "genetic_pcs": c.genetic_pcs, "alpha": c.alpha,
            "test": "logistic score test of each gene block given the null model, asymptotic chi2(df); "
                    "p_holm: Holm over genes (FWER); q_bh: Benjamini-Hochberg (FDR)",
            "genes": result.table.to_dicts(), "recipe": recipe}


def _report(result: GeneTestResult, s: dict) -> str:
    n_fwer = sum(r["significant_fwer"] for r in s["genes"])
    n_fdr = sum(r["significant_fdr"] for r in s["genes"])
    lines = [
        *report_header("Per-gene association test", s, f"features `{s['features']}` ({s['feature_kind']})",
                       f"{s['n']} subjects ({s['n_cases']} cases)"),
        "- null model: logistic regression of the phenotype on intercept + "
        f"{', '.join(s['null_design']) or 'nothing else'}",
        f"- each gene block reduced to {s['k_per_gene']} principal components (fitted without the phenotype; "
        "a deviation column kept as is), standardized; score test, asymptotic chi2 with df = block columns",
        f"- {len(s['genes'])} genes: {n_fwer} with Holm p <= {s['alpha']} (family-wise), {n_fdr} with "
        f"BH q <= {s['alpha']} (false discovery rate)", "",
        "| rank | gene | df | score | p | p (Holm) | q (BH) |", "|---|---|---|---|---|---|---|",
    ]
    for r in s["genes"][:200]:
        lines.append(f"| {r['rank']} | {r['gene']} | {r['df']} | {r['score']:.3f} | {r['p_value']:.3g} | "
                     f"{r['p_holm']:.3g} | {r['q_bh']:.3g} |")
    if len(s["genes"]) > 200:
        lines.append(f"| ... | {len(s['genes']) - 200} more genes in gene_test_results.csv | | | | | |")
    lines += ["", "![QQ plot](gene_test_qq.png)", ""]
    return "\n".join(lines)


def plot_qq(result: GeneTestResult, path: Path) -> Path:
    """Observed vs expected -log10 p (a calibrated test follows the diagonal for null genes)."""
    p = np.sort(result.table["p_value"].to_numpy())
    expected = -np.log10((np.arange(1, len(p) + 1) - 0.5) / len(p))
    fig, ax = new_figure(4.5, 4.5)
    ax.scatter(expected, -np.log10(np.maximum(p, 1e-300)), s=12)
    top = max(expected.max(), 1.0)
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
    ax.set_xlabel("expected -log10 p")
    ax.set_ylabel("observed -log10 p")
    ax.set_title(title(f"Per-gene score test (n={result.n}, {len(p)} genes)", result.extra.get("recipe")))
    return save_figure(fig, path)
