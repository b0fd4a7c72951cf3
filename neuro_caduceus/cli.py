"""The `neuro-caduceus` command line: each area registers its own commands; heavy imports stay lazy.

Errors take one path for every command: a user error (bad input, missing file, failed validation) prints
one line, `error: ...`, and exits 2; anything else is a bug: one line and exit 1. `--debug` (or
NEURO_CADUCEUS_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
import typer

from neuro_caduceus.analysis import commands as analysis_commands
from neuro_caduceus.cohort import commands as cohort_commands
from neuro_caduceus.errors import DEBUG_ENV, INTERRUPTED, debug_requested, report
from neuro_caduceus.genome import commands as genome_commands
from neuro_caduceus.model import commands as model_commands
from neuro_caduceus.stats import commands as stats_commands
from neuro_caduceus.variants import commands as variants_commands

_state = {"debug": False}


def reporting_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with its errors reported by `errors.report` (tracebacks only under --debug)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            if _state["debug"] or debug_requested():
                raise
            typer.secho("interrupted: nothing half-written was kept; rerun the command", err=True)
            raise typer.Exit(INTERRUPTED) from None
        except Exception as err:
            if _state["debug"] or debug_requested():
                raise
            raise typer.Exit(report(err)) from None

    return run


class _App(typer.Typer):
    """A Typer app whose commands all report errors the same way."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            register(reporting_errors(fn))
            return fn

        return decorator


app = _App(
    name="neuro-caduceus",
    help="Gene-level Caduceus DNA-language-model embeddings from biobank exomes, at cohort scale.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", envvar=DEBUG_ENV, help=f"Show the traceback of a failed command (or {DEBUG_ENV}=1)."
    ),
) -> None:
    """Gene-level Caduceus DNA-language-model embeddings from biobank exomes, at cohort scale."""
    _state["debug"] = debug


for area in (
    model_commands,
    genome_commands,
    variants_commands,
    cohort_commands,
    stats_commands,
    analysis_commands,
):
    area.register(app)

if __name__ == "__main__":
    app()
