"""CLI commands of the `cohort` area (imports of heavy libraries stay inside the command bodies)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from neuro_caduceus.cohort import submit
from neuro_caduceus.cohort.config import load_config

IMPORT_ADVICE = ("run it in the project's environment (source .venv/bin/activate; for a Ray job, start the "
                 "Ray head from it) or install the package in the node image")


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
    app.command("embed-cohort")(embed_cohort)


def embed_cohort(
    config: Path = typer.Option(..., "--config", help="Cohort job YAML (see configs/demo.yaml)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace output of another config/checkpoint."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check config, inputs, checkpoint, resources; "
                                 "print genes, subjects, windows, tokens; run nothing."),
    client_dir: str | None = typer.Option(
        None, "--client-dir", help="Under `ray job submit --working-dir`: the submitting machine's folder, "
        "base of relative paths that were not uploaded and of output.dir (scripts/submit.sh passes it)."),
) -> None:
    """Embed every (subject, gene) of a cohort on Ray; re-running resumes where a crash left off.

    Local or as a Ray job (docs/cluster.md); paths and compute settings are checked on the cluster first.
    """
    try:
        from neuro_caduceus.ray_session import ray_session
    except ImportError as err:  # the head's Python without the project's dependencies
        typer.echo(f"error: {sys.executable} cannot import the project ({err}); {IMPORT_ADVICE}", err=True)
        raise typer.Exit(2) from None

    package = submit.ray_package_dir()
    try:
        cfg = submit.relocate_for_cluster(load_config(config), package, client_dir)
        with ray_session():
            code = submit.run_on_cluster(cfg, dry_run, overwrite)
    except FileNotFoundError as err:
        where = " (not in the uploaded working directory?)" if package and str(config) in str(err) else ""
        typer.echo(f"error: {err}{where}", err=True)
        raise typer.Exit(2) from None
    except (FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the job printed what was committed and how to resume
    if code:
        raise typer.Exit(code)
