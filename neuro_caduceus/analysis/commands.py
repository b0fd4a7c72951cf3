"""CLI commands of the `analysis` area (imports of heavy libraries stay inside the command bodies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuro_caduceus.analysis.relatedness import THIRD_DEGREE
from neuro_caduceus.analysis.subjects import SubjectFilter
from neuro_caduceus.cohort.config import load_config
from neuro_caduceus.io import OVERWRITE_HELP, check_output_not_input, output_dir

CATEGORICAL_HELP = ("comma-separated covariate columns to one-hot code (e.g. batch,centre,sex); types are "
                    "never guessed: a text column not listed is an error")
NUMERIC_HELP = ("comma-separated integer covariate columns with few values (<= 20) to use as one linear "
                "term; undeclared, such a column is an error (a batch code is rarely linear)")
FEATURES_HELP = ("per-gene features: pcs (the embedding, reduced to components), deviation (distance of the "
                 "subject's gene embedding from the reference's; embedding shards only), both, or auto (both "
                 "when the input has a deviation column, else pcs)")
KEEP_SUBJECTS_HELP = "analyse only the subjects listed in this table's subject_id column (e.g. one ancestry)"
KEEP_WHERE_HELP = "analyse only subjects whose covariates-table COLUMN has one of the values: COLUMN=V1[,V2]"
GENETIC_PCS_HELP = "add the top N principal components of the genetic features to the covariates (0: none)"
UNRELATED_HELP = "analyse a maximal unrelated set only (needs --kinship); removed subjects are counted"
KINSHIP_HELP = "UK Biobank relatedness file (ID1 ID2 HetHet IBS0 Kinship): related subjects share folds"


# Options several analyses share, declared once (type, help, checks); each command lists those it takes.
Features = Annotated[Path, typer.Option(help="subject matrix Parquet (file or folder) or embedding shards")]
Phenotype = Annotated[Path | None, typer.Option(help="subject_id + phenotype column (TSV/CSV/Parquet)")]
Out = Annotated[Path, typer.Option(help="output folder")]
PhenotypeColumn = Annotated[str, typer.Option(help="binary 0/1 column")]
CovariateColumns = Annotated[str | None, typer.Option(help="comma-separated (default: all but subject_id)")]
Categorical = Annotated[str | None, typer.Option(help=CATEGORICAL_HELP)]
Numeric = Annotated[str | None, typer.Option(help=NUMERIC_HELP)]
FeaturesKind = Annotated[str, typer.Option("--features-kind", help=FEATURES_HELP)]
KeepSubjects = Annotated[Path | None, typer.Option(help=KEEP_SUBJECTS_HELP)]
KeepWhere = Annotated[str | None, typer.Option(help=KEEP_WHERE_HELP)]
KinshipThreshold = Annotated[float, typer.Option(help="kinship at or above this links two subjects", min=0.0,
                                                 max=0.5)]
Unrelated = Annotated[bool, typer.Option("--unrelated", help=UNRELATED_HELP)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)]


def _columns(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def _subject_filter(keep_subjects: Path | None, keep_where: str | None) -> SubjectFilter:
    return SubjectFilter(keep_subjects, keep_where)


def logo(
    features: Features = ...,
    phenotype: Phenotype = None,
    covariates: Path = typer.Option(None, help="covariates table, residualized per fold"),
    out: Out = ...,
    phenotype_column: PhenotypeColumn = "mdd",
    covariate_columns: CovariateColumns = None,
    categorical_covariates: Categorical = None,
    numeric_covariates: Numeric = None,
    features_kind: FeaturesKind = "auto",
    keep_subjects: KeepSubjects = None,
    keep_where: KeepWhere = None,
    genetic_pcs: int = typer.Option(0, help=GENETIC_PCS_HELP + ", fitted on each training fold", min=0),
    kinship: Path = typer.Option(None, help=KINSHIP_HELP),
    kinship_threshold: KinshipThreshold = THIRD_DEGREE,
    unrelated: Unrelated = False,
    folds: int = typer.Option(5, help="outer stratified folds", min=2),
    repeats: int = typer.Option(5, help="repeats of the outer split (per-fold AUCs over repeats x folds)",
                                min=1),
    inner_folds: int = typer.Option(3, help="inner folds (choose C on the outer-training part)", min=2),
    reduce: str = typer.Option("gene", help="gene: PCA per gene block (--k-per-gene each); all: one PCA"),
    k_per_gene: int = typer.Option(3, help="components per gene block (--reduce gene)", min=1),
    k: int = typer.Option(32, help="components of the one PCA (--reduce all; capped by the training set)",
                          min=1),
    n_perm: int = typer.Option(100, help="permutations through the whole nested procedure (0: none)", min=0),
    permute: str = typer.Option("phenotype", help="what the permutation test shuffles: phenotype | block"),
    seed: int = typer.Option(0),
    serial: bool = typer.Option(False, "--serial", help="run in this process instead of Ray tasks"),
    overwrite: Overwrite = False,
) -> None:
    """Leave-one-gene-out ΔAUC with repeated nested CV and a permutation test (every step fitted in folds)."""
    from neuro_caduceus.analysis.logo import LogoConfig, logo_from_files, smallest_p

    config = LogoConfig(n_folds=folds, inner_folds=inner_folds, n_repeats=repeats, reduce=reduce,  # type: ignore[arg-type]
                        k_per_gene=k_per_gene, k=k, genetic_pcs=genetic_pcs, n_perm=n_perm,
                        permute=permute, seed=seed, parallel=not serial)  # type: ignore[arg-type]
    with output_dir(out, [features, phenotype, covariates, kinship, keep_subjects], overwrite) as tmp:
        r = logo_from_files(features, phenotype, covariates, tmp, phenotype_column,
                            _columns(covariate_columns), config, _columns(categorical_covariates),
                            kinship, kinship_threshold, unrelated, _columns(numeric_covariates),
                            features_kind, _subject_filter(keep_subjects, keep_where))
    low = smallest_p(n_perm, r.table.height)["p_fwer"]
    typer.echo(f"n={r.n} ({r.n_cases} cases), AUC all genes {r.auc_all:.3f}; smallest attainable p (FWER) "
               f"{low:.4g}; outputs in {out}")
    for row in r.table.head(10).to_dicts():
        typer.echo(f"  {row['rank']:>3} {row['gene']:<16} ΔAUC {row['delta_auc']:+.4f} "
                   f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] p {row['p_value']:.4f} "
                   f"p (FWER) {row['p_fwer']:.4f}")


def gene_test(
    features: Features = ...,
    phenotype: Phenotype = None,
    covariates: Path = typer.Option(None, help="covariates table (the null model's terms)"),
    out: Out = ...,
    phenotype_column: PhenotypeColumn = "mdd",
    covariate_columns: CovariateColumns = None,
    categorical_covariates: Categorical = None,
    numeric_covariates: Numeric = None,
    features_kind: FeaturesKind = "auto",
    keep_subjects: KeepSubjects = None,
    keep_where: KeepWhere = None,
    genetic_pcs: int = typer.Option(0, help=GENETIC_PCS_HELP, min=0),
    kinship: Path = typer.Option(None, help="UK Biobank relatedness file: a maximal unrelated set is tested"),
    kinship_threshold: KinshipThreshold = THIRD_DEGREE,
    k_per_gene: int = typer.Option(3, help="principal components per gene block", min=1),
    alpha: float = typer.Option(0.05, help="level for the significant_fwer / significant_fdr columns",
                                min=0.0, max=1.0),
    overwrite: Overwrite = False,
) -> None:
    """Per-gene score test against the phenotype given the covariates (one null fit; thousands of genes)."""
    from neuro_caduceus.analysis.gene_test import GeneTestConfig, gene_test_from_files

    config = GeneTestConfig(k_per_gene=k_per_gene, genetic_pcs=genetic_pcs, alpha=alpha)
    with output_dir(out, [features, phenotype, covariates, kinship, keep_subjects], overwrite) as tmp:
        r = gene_test_from_files(features, phenotype, covariates, tmp, phenotype_column,
                                 _columns(covariate_columns), config, _columns(categorical_covariates),
                                 _columns(numeric_covariates), features_kind,
                                 _subject_filter(keep_subjects, keep_where), kinship, kinship_threshold)
    typer.echo(f"n={r.n} ({r.n_cases} cases), {r.table.height} genes; outputs in {out}")
    for row in r.table.head(10).to_dicts():
        typer.echo(f"  {row['rank']:>3} {row['gene']:<16} score {row['score']:.3f} (df {row['df']}) "
                   f"p {row['p_value']:.3g} p (Holm) {row['p_holm']:.3g} q (BH) {row['q_bh']:.3g}")


def cca(
    genetic: Path = typer.Option(..., help="genetic features Parquet (subject_id, features): file or folder"),
    brain: Path = typer.Option(..., help="brain features Parquet (subject_id, features)"),
    out: Out = ...,
    covariates: Path = typer.Option(None, help="covariates table, residualized per fold on both sides"),
    covariate_columns: CovariateColumns = None,
    categorical_covariates: Categorical = None,
    numeric_covariates: Numeric = None,
    features_kind: str = typer.Option("pcs", "--features-kind", help=FEATURES_HELP.replace(
        "per-gene features", "genetic side")),
    keep_subjects: KeepSubjects = None,
    keep_where: KeepWhere = None,
    kinship: Path = typer.Option(None, help=KINSHIP_HELP),
    kinship_threshold: KinshipThreshold = THIRD_DEGREE,
    unrelated: Unrelated = False,
    gene_matrix: Path = typer.Option(None, help="subject matrix with gene blocks (structure coefs)"),
    n_perm: int = typer.Option(200, help="permutations (brain side; Freedman-Lane with covariates)", min=0),
    folds: int = typer.Option(5, min=2),
    reduce_dims: int = typer.Option(20, help="PCA dims per side before CCA (fitted on training folds)",
                                    min=1),
    components: int = typer.Option(5, help="canonical components reported", min=1),
    seed: int = typer.Option(0),
    serial: bool = typer.Option(False, "--serial", help="run permutations in this process instead of Ray"),
    overwrite: Overwrite = False,
) -> None:
    """Gene-brain CCA: held-out canonical correlations, permutation p-values, gene structure coefficients."""
    from neuro_caduceus.analysis.cca import CCAConfig, cca_from_files

    config = CCAConfig(n_folds=folds, reduce_dims=reduce_dims, n_components=components, n_perm=n_perm,
                       seed=seed, parallel=not serial,
                       categorical=tuple(_columns(categorical_covariates) or ()),
                       numeric=tuple(_columns(numeric_covariates) or ()))
    with output_dir(out, [genetic, brain, covariates, gene_matrix, kinship, keep_subjects], overwrite) as tmp:
        r = cca_from_files(genetic, brain, tmp, config, covariates, _columns(covariate_columns), gene_matrix,
                           kinship, kinship_threshold, unrelated, features_kind,
                           _subject_filter(keep_subjects, keep_where))
    typer.echo(f"n={r.n} matched ({r.extra['join']['unmatched']} unmatched); outputs in {out}")
    for row in r.table.to_dicts():
        typer.echo(f"  CC{row['component']}: held-out r {row['heldout_r']:+.3f}  p {row['p_value']:.4f}  "
                   f"p (FWER) {row['p_fwer']:.4f}")


def pilot(
    config: Path = typer.Option(..., help="a cohort job config (inputs, regions, strategy, QC, model)"),
    out: Out = ...,
    variants: Path = typer.Option(None, help="VCF of candidate variants (sites; effects of each ALT alone)"),
    local_flank: int = typer.Option(768, help="bases each side of a variant for the local effect", min=0),
    strand_check: bool = typer.Option(True, help="PS: rerun minus-strand genes in the other orientation"),
    overwrite: Overwrite = False,
) -> None:
    """Variant-vs-reference pilot: single-variant, haplotype and local effects on gene embeddings."""
    from neuro_caduceus.analysis.pilot import pilot_summary_line, run_pilot

    with output_dir(out, [config, variants], overwrite) as tmp:
        cfg = load_config(config)
        given = cfg.inputs
        check_output_not_input([out], [cfg.model.checkpoint, given.matrix_table, given.haplotypes_parquet,
                                       given.vcf, given.reference_fasta, given.gtf, given.gene_set])
        result = run_pilot(cfg, tmp, str(variants) if variants else None, local_flank, strand_check)
    typer.echo(f"{pilot_summary_line(result)}; outputs in {out} (report.md)")


def compare_encoders(
    jobs: list[Path] = typer.Argument(..., help="two or more cohort-job output folders (one per encoder)"),
    out: Out = ...,
    phenotype: Path = typer.Option(None, help="subject_id + phenotype column: LOGO ΔAUC per encoder"),
    brain: Path = typer.Option(None, help="brain features Parquet (subject_id, features): CCA per encoder"),
    covariates: Path = typer.Option(None, help="covariates table, residualized per fold (LOGO and CCA)"),
    phenotype_column: PhenotypeColumn = "mdd",
    covariate_columns: CovariateColumns = None,
    categorical_covariates: Categorical = None,
    numeric_covariates: Numeric = None,
    cka_perm: int = typer.Option(100, help="row permutations for the CKA baseline (0: none)", min=0),
    folds: int = typer.Option(5, help="outer folds of LOGO and folds of CCA", min=2),
    repeats: int = typer.Option(5, help="LOGO repeats of the outer split", min=1),
    logo_perm: int = typer.Option(100, help="LOGO permutations (0: none)", min=0),
    cca_perm: int = typer.Option(200, help="CCA permutations (0: none)", min=0),
    reduce_dims: int = typer.Option(20, help="CCA: PCA dims per side (fitted on training folds)", min=1),
    seed: int = typer.Option(0, help="seed of the CKA permutations and of every LOGO/CCA split and shuffle"),
    serial: bool = typer.Option(False, "--serial", help="run LOGO/CCA in this process instead of Ray tasks"),
    overwrite: Overwrite = False,
) -> None:
    """Compare encoders run on the same genes, haplotypes and subjects: CKA, spread, carrier shift, cost.

    JOBS: two or more cohort-job output folders, one per encoder, each run on the same config except
    model.checkpoint (and output.dir).
    """
    from neuro_caduceus.analysis.cca import CCAConfig
    from neuro_caduceus.analysis.compare_encoders import CompareConfig, Downstream, run_compare_encoders
    from neuro_caduceus.analysis.logo import LogoConfig

    categorical, numeric = _columns(categorical_covariates), _columns(numeric_covariates)
    downstream = Downstream(
        phenotype, brain, covariates, phenotype_column, _columns(covariate_columns), categorical, numeric,
        LogoConfig(n_folds=folds, n_repeats=repeats, n_perm=logo_perm, seed=seed, parallel=not serial),
        CCAConfig(n_folds=folds, n_perm=cca_perm, reduce_dims=reduce_dims, seed=seed, parallel=not serial,
                  categorical=tuple(categorical or ()), numeric=tuple(numeric or ())))
    with output_dir(out, [*jobs, phenotype, brain, covariates], overwrite) as tmp:
        r = run_compare_encoders(jobs, tmp, CompareConfig(n_perm=cka_perm, seed=seed), downstream)
    overall = r.similarity.filter(r.similarity["gene"] == "all genes")
    typer.echo(f"{len(r.jobs)} encoders, {r.n} subjects, {len(r.jobs[0].features.blocks)} genes; "
               f"outputs in {out} (compare_report.md)")
    for row in overall.to_dicts():
        typer.echo(f"  all genes: CKA {row['encoder_a']} vs {row['encoder_b']} {row['cka']:.3f} "
                   f"(permutation 95%: {row['null_q95']:.3f})")


COMMANDS = {"logo": logo, "gene-test": gene_test, "cca": cca, "pilot": pilot,
            "compare-encoders": compare_encoders}


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app (add new commands to COMMANDS)."""
    for name, fn in COMMANDS.items():
        app.command(name)(fn)
