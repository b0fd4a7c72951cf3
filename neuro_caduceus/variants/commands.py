"""CLI commands of the `variants` area (Hail starts only inside the command that needs it)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from neuro_caduceus.genome.gene_regions import regions_from_gene_set
from neuro_caduceus.genome.regions import RegionSpec
from neuro_caduceus.genome.strategies import STRATEGIES, check_strategy
from neuro_caduceus.io import atomic_writer, check_output_not_input, read_yaml_model
from neuro_caduceus.synthetic import make_cohort
from neuro_caduceus.variants.export import export_haplotypes
from neuro_caduceus.variants.hail_session import init_hail
from neuro_caduceus.variants.importer import import_vcf
from neuro_caduceus.variants.qc import QCConfig, qc_summary


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
    app.command("synth")(synth)
    app.command("import-vcf")(import_vcf_cmd)
    app.command("variant-qc")(qc_cmd)
    app.command("export-variants")(export_cmd)


def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    samples: int = typer.Option(200, "--samples", help="Number of subjects.", min=2),
    genes: int = typer.Option(6, "--genes", help="Number of genes.", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed of the numpy Generator: same arguments, same files."),
    brain_dim: int = typer.Option(64, "--brain-dim", help="Width of the synthetic brain vectors.", min=1),
) -> None:
    """Write a deterministic synthetic demo cohort (FASTA, Hail reference, GTF, VCF, covariates, traits)."""
    manifest = make_cohort(out, n_samples=samples, n_genes=genes, seed=seed, brain_dim=brain_dim)
    typer.echo(
        json.dumps(
            {
                "out": str(out),
                "variants": manifest["variants"],
                "planted_gene": manifest["planted_gene"]["gene_name"],
            }
        )
    )


def import_vcf_cmd(
    vcf: list[str] = typer.Option(..., "--vcf", help="bgzipped VCF(s); repeat --vcf for several files."),
    out: Path = typer.Option(..., "--out", help="Output MatrixTable folder (e.g. cohort.mt)."),
    reference: str = typer.Option("GRCh38", "--reference", help="GRCh38 or a Hail reference JSON file."),
    contig_recoding: bool = typer.Option(
        False, "--contig-recoding", help="Rename 1..22, X, Y, MT to chr1..chr22, chrX, chrY, chrM on import."
    ),
    min_partitions: int | None = typer.Option(None, "--min-partitions", help="Hail min_partitions.", min=1),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
) -> None:
    """Import VCF(s) into a Hail MatrixTable: force_bgz, split_multi_hts, written atomically."""
    recoding = None
    if contig_recoding:
        recoding = {str(i): f"chr{i}" for i in range(1, 23)} | {"X": "chrX", "Y": "chrY", "MT": "chrM"}
    summary = import_vcf(vcf, str(out), reference, recoding, min_partitions, overwrite)
    typer.echo(json.dumps(summary))


def qc_cmd(
    mt: Path = typer.Option(..., "--mt", help="MatrixTable written by import-vcf."),
    config: Path = typer.Option(..., "--config", help="YAML with the QC keys (see docs: variants)."),
    out: Path | None = typer.Option(None, "--out", help="Write the QC summary JSON here (else stdout)."),
) -> None:
    """Count every QC step (samples, entries set missing, variants removed) on a MatrixTable."""
    if out is not None:
        check_output_not_input([out], [mt, config])
    qc = read_yaml_model(config, QCConfig)
    if not (mt / "metadata.json.gz").is_file():
        raise FileNotFoundError(f"{mt} is not a MatrixTable folder (no metadata.json.gz); "
                                "write one with import-vcf")
    hl = init_hail()
    summary = json.dumps(qc_summary(hl.read_matrix_table(str(mt)), qc), indent=1)
    if out is None:
        typer.echo(summary)
    else:
        with atomic_writer(out) as fh:
            fh.write(summary)


def export_cmd(
    mt: Path = typer.Option(..., "--mt", help="MatrixTable written by import-vcf."),
    gtf: Path = typer.Option(..., "--gtf", help="GENCODE GTF (canonical transcripts)."),
    gene_set: Path = typer.Option(..., "--gene-set", help="Gene-set YAML (name + genes)."),
    out: Path = typer.Option(..., "--out", help="Output folder (haplotypes/, samples, QC summary)."),
    mode: str = typer.Option("gene_body", "--mode", help="gene_body | exons | cds (canonical transcript)."),
    flank: int = typer.Option(0, "--flank", help="Bases added to each region's outer ends.", min=0),
    strategy: str = typer.Option("diploid", "--strategy", help=" | ".join(STRATEGIES)),
    qc: Path | None = typer.Option(None, "--qc", help="QC YAML (the keys of variant-qc --config)."),
    genes_per_query: int = typer.Option(50, "--genes-per-query", help="Genes per Hail query.", min=1),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
) -> None:
    """Export each gene's unique haplotypes from a MatrixTable as Parquet (once, where Hail runs).

    The cohort job reads the folder as `inputs.haplotypes_parquet`: the same rows as reading the MatrixTable.
    """
    check_output_not_input([out], [mt, gtf, gene_set, qc])
    check_strategy(strategy, name="--strategy")
    regions = regions_from_gene_set(gtf, gene_set, RegionSpec(mode=mode, flank=flank, orient="reference"))
    qc_config = read_yaml_model(qc, QCConfig) if qc else QCConfig()
    summary = export_haplotypes(str(mt), regions, strategy, str(out), qc_config,
                                genes_per_query=genes_per_query, overwrite=overwrite)
    typer.echo(json.dumps(summary))
