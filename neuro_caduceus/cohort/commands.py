"""CLI commands of the `cohort` area (imports of heavy libraries stay inside the command bodies)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
    app.command("embed-cohort")(embed_cohort)


def embed_cohort(
    config: Path = typer.Option(..., "--config", help="Cohort job YAML (see configs/demo.yaml)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace output of another config/checkpoint."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check config, inputs, checkpoint, resources; "
                                 "print genes, subjects, windows, tokens; run nothing."),
) -> None:
    """Embed every (subject, gene) of a cohort on Ray; re-running resumes where a crash left off."""
    import ray

    from neuro_caduceus.cohort import preflight
    from neuro_caduceus.cohort.config import load_config
    from neuro_caduceus.cohort.job import run_embed_cohort

    try:
        cfg = load_config(config)
        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        if dry_run:
            report = preflight.dry_run(cfg)
            typer.echo(preflight.format_report(report))
            if report["errors"]:
                raise typer.Exit(2)
            return
        preflight.check_resources(cfg)
        run_embed_cohort(cfg, overwrite=overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the job printed what was committed and how to resume
