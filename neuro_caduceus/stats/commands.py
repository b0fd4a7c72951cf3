"""CLI commands of the `stats` area (imports of heavy libraries stay inside the command bodies)."""

from __future__ import annotations

from pathlib import Path

import typer

from neuro_caduceus.io import OVERWRITE_HELP, output_dir
from neuro_caduceus.stats.jobs import run_pca, run_residualize
from neuro_caduceus.stats.residualize import CovariateSpec
from neuro_caduceus.stats.subject_matrix import build_subject_matrix, load_gene_list


def subject_matrix(
    input: str = typer.Option(..., "--input", help="embedding job output folder (or its shards/ folder)"),
    out: Path = typer.Option(..., "--out", help="output folder: matrix/ Parquet + summary JSON"),
    genes: Path | None = typer.Option(None, "--genes", help="gene-set YAML (default: recipe gene_list)"),
    on_missing_gene: str = typer.Option("error", "--on-missing-gene", help="error | drop"),
    block_scaling: str = typer.Option("total_variance", "--block-scaling",
                                      help="total_variance (each gene's block to total variance 1) | none"),
    missing_calls: bool = typer.Option(False, "--missing-calls",
                                       help="also write missing_calls.csv: per subject, the missing calls in "
                                            "each gene (missing_<gene>) and in all (missing_total), a "
                                            "covariates table for logo / cca / gene-test"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Concatenate each subject's gene embeddings (gene-set order) into one feature row."""
    from neuro_caduceus.ray_session import ensure_ray

    with output_dir(out, [input, genes], overwrite) as tmp:
        gene_list = load_gene_list(str(genes)) if genes else None
        ensure_ray()
        s = build_subject_matrix(input, str(tmp), gene_list, on_missing_gene, block_scaling=block_scaling,
                                 missing_calls=missing_calls)
    why = ", ".join(f"{n} {kind}" for kind, n in sorted(s["dropped_by_reason"].items()))
    why = f" ({why}: see subject_matrix_summary.json)" if why else ""
    typer.echo(f"subject matrix -> {out}/matrix: {s['subjects_written']} subjects x {s['n_features']} "
               f"features ({len(s['genes'])} genes x {s['dim_per_gene']}, "
               f"block scaling {s['block_scaling']}); "
               f"dropped {s['subjects_dropped']}{why}")
    if missing_calls:
        table = s["missing_calls_table"]
        typer.echo(f"missing calls -> {out}/{table}" if table else
                   "missing calls: the shards carry no n_missing counts; no table written")


def pca(
    input: str = typer.Option(..., "--input", help="folder of subject_id + features Parquet"),
    n_components: int = typer.Option(512, "--n-components", help="components (capped at min(n - 1, d))",
                                      min=1),
    out: Path = typer.Option(..., "--out", help="output folder: pca_model.npz, scores/, PNG, summary"),
    whiten: bool = typer.Option(False, "--whiten", help="scale scores to unit variance"),
    batch_size: int = typer.Option(4096, "--batch-size", help="rows per worker batch", min=1),
    no_statistics: bool = typer.Option(
        False, "--no-statistics",
        help="leave the d x d statistics out of pca_model.npz (no later partial_fit)"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Exact distributed PCA (merged float64 moments on Ray) and the subjects' scores."""
    from neuro_caduceus.ray_session import ensure_ray

    with output_dir(out, [input], overwrite) as tmp:
        ensure_ray()
        s = run_pca(input, str(tmp), n_components, whiten, batch_size, keep_statistics=not no_statistics)
    typer.echo(f"pca -> {out}: {s['n_samples']} subjects, {s['n_features']} -> {s['n_components']} dims "
               f"(requested {s['n_components_requested']}), "
               f"{s['explained_variance_ratio_total']:.1%} of variance; {s['fit']['n_batches']} batches "
               "merged")


def residualize(
    input: str = typer.Option(..., "--input", help="folder of subject_id + features Parquet (or a pca run)"),
    covariates: Path = typer.Option(..., "--covariates", help="covariates CSV / TSV / Parquet"),
    out: Path = typer.Option(..., "--out", help="output folder: residuals/, coefficients, R², PNG, summary"),
    config: Path | None = typer.Option(None, "--config", help="covariate mapping YAML (CovariateSpec)"),
    categorical_covariates: str | None = typer.Option(
        None, "--categorical-covariates",
        help="columns to one-hot code, e.g. batch,centre (replaces the mapping's categorical)"),
    batch_size: int = typer.Option(4096, "--batch-size", help="rows per worker batch", min=1),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """OLS residuals of every feature on intercept + covariates (batch one-hot), fitted on Ray."""
    from neuro_caduceus.ray_session import ensure_ray

    with output_dir(out, [input, covariates, config], overwrite) as tmp:
        spec = CovariateSpec.from_yaml(config) if config else CovariateSpec()
        if categorical_covariates:
            declared = [c.strip() for c in categorical_covariates.split(",") if c.strip()]
            spec = spec.declare_categorical(declared)
        ensure_ray()
        s = run_residualize(input, str(covariates), str(tmp), spec, batch_size)
    typer.echo(f"residualize -> {out}: {s['residual_rows']} subjects, {len(s['design_columns'])} covariate "
               f"columns; {s['without_covariates']} without covariates excluded; "
               f"median R² {s['r2_median']:.3f}")


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
    app.command("subject-matrix")(subject_matrix)
    app.command("pca")(pca)
    app.command("residualize")(residualize)
