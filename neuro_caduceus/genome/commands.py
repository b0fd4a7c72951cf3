"""CLI commands of the `genome` area: gene regions and reference sequences, personal haplotype sequences."""

from __future__ import annotations

from pathlib import Path

import typer

from neuro_caduceus.genome import gene_regions
from neuro_caduceus.genome import personalize as run
from neuro_caduceus.genome.fasta import Reference
from neuro_caduceus.genome.regions import RegionSpec
from neuro_caduceus.genome.strategies import check_strategy
from neuro_caduceus.io import check_output_not_input, read_sample_list

MODE_HELP = "gene_body | exons | cds (canonical transcript)"
FLANK_HELP = "Bases added on both sides of every exon / CDS piece (gene_body: of the gene)"
ORIENT_HELP = "transcript (minus-strand genes reverse-complemented) | reference (+ strand)"


def _spec(mode: str, flank: int, orient: str) -> RegionSpec:
    return RegionSpec(mode=mode, flank=flank, orient=orient)  # type: ignore[arg-type]


def genes(
    gtf: Path = typer.Option(..., help="GENCODE GTF (plain or .gz)"),
    genes: Path = typer.Option(..., "--genes", help="Gene set YAML (name, genes)"),
    fasta: str = typer.Option(..., help="Reference FASTA with .fai (path or fsspec URL)"),
    out: Path = typer.Option(..., help="Output prefix: writes PREFIX.tsv and PREFIX.fa"),
    mode: str = typer.Option("gene_body", help=MODE_HELP),
    flank: int = typer.Option(0, help=FLANK_HELP, min=0),
    orient: str = typer.Option("transcript", help=ORIENT_HELP),
) -> None:
    """Gene set + GTF + FASTA -> regions table (PREFIX.tsv) and reference sequences (PREFIX.fa)."""
    inputs = [gtf, genes, fasta, f"{fasta}.fai", f"{fasta}.gzi"]
    check_output_not_input(gene_regions.output_paths(out), inputs)
    regions = gene_regions.regions_from_gene_set(gtf, genes, _spec(mode, flank, orient))
    reference = Reference(fasta)
    gene_regions.check_contigs(reference, regions)
    tsv, fa, bases = gene_regions.write_regions(reference, regions, out)
    minus = sum(r.reverse for r in regions)
    typer.echo(
        f"{len(regions)} regions ({mode}, flank {flank}, orient {orient}; {minus} reverse-complemented), "
        f"{bases:,} bases -> {tsv}, {fa}"
    )


def personalize(
    fasta: str = typer.Option(..., help="Reference FASTA with .fai (path or fsspec URL)"),
    vcf: str = typer.Option(..., help="Multi-sample bgzipped VCF (.tbi/.csi index) or BCF (.csi)"),
    regions: Path | None = typer.Option(None, help="BED regions (0-based half-open; name, strand optional)"),
    gtf: Path | None = typer.Option(None, help="GTF, with --genes, instead of --regions"),
    genes: Path | None = typer.Option(None, "--genes", help="Gene set YAML (with --gtf)"),
    strategy: str = typer.Option(..., help="reference | consensus | diploid"),
    out: Path = typer.Option(..., help="Output FASTA (P.fa); the summary goes to P.summary.json"),
    samples: Path | None = typer.Option(
        None, help="File with one sample id per line (default: all, VCF order)"
    ),
    mode: str = typer.Option("gene_body", help=MODE_HELP + " (with --gtf)"),
    flank: int = typer.Option(0, help=f"{FLANK_HELP}, with --gtf", min=0),
    orient: str = typer.Option("transcript", help=ORIENT_HELP),
    strict_ref: bool = typer.Option(
        False, "--strict-ref", help="A REF mismatch is an error, not a rejection"
    ),
    workers: int = typer.Option(1, help="Processes reading the VCF (groups of regions each)", min=1),
) -> None:
    """Each sample's haplotype sequences of each region (bcftools consensus semantics) as FASTA."""
    check_strategy(strategy, name="--strategy")
    if (regions is None) == (gtf is None and genes is None):
        raise ValueError("give either --regions BED or --gtf GTF with --genes SET (not both)")
    inputs = [fasta, f"{fasta}.fai", vcf, f"{vcf}.tbi", f"{vcf}.csi", regions, gtf, genes, samples]
    check_output_not_input([out, run.summary_path(out)], inputs)
    spec = _spec(mode, flank, orient)
    if regions is not None:
        chosen = gene_regions.read_bed(regions, spec.orient)
    elif gtf is None or genes is None:
        raise ValueError("--gtf and --genes go together")
    else:
        chosen = gene_regions.regions_from_gene_set(gtf, genes, spec)
    names = read_sample_list(samples, "samples file") if samples is not None else None
    summary = run.personalize(fasta, vcf, chosen, strategy, out, names, strict_ref, workers)
    for line in summary.lines():
        typer.echo(line, err=True)
    typer.echo(f"wrote {out} and {run.summary_path(out)}", err=True)


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
    app.command("genes")(genes)
    app.command("personalize")(personalize)
