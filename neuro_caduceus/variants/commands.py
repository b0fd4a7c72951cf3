"""CLI commands of the `variants` area (imports of heavy libraries stay inside the command bodies)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
    app.command("synth")(synth)


def synth(
    out: Path = typer.Option(..., "--out", help="Output folder (created)."),
    samples: int = typer.Option(200, "--samples", help="Number of subjects."),
    genes: int = typer.Option(6, "--genes", help="Number of genes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the numpy Generator: same arguments, same files."),
    brain_dim: int = typer.Option(64, "--brain-dim", help="Width of the synthetic brain vectors."),
) -> None:
    """Write a deterministic synthetic demo cohort (FASTA, Hail reference, GTF, VCF, covariates, traits)."""
    from neuro_caduceus.synthetic import make_cohort

    manifest = make_cohort(out, n_samples=samples, n_genes=genes, seed=seed, brain_dim=brain_dim)
    typer.echo(json.dumps({"out": str(out), "variants": manifest["variants"],
                           "planted_gene": manifest["planted_gene"]["gene_name"]}))
