"""The `neuro-caduceus` command line: each area registers its own commands; heavy imports stay lazy.

Errors take one path for every command: a user error (bad input, missing file, failed validation) prints
one line, `error: ...`, and exits 2; anything else is a bug: one line and exit 1. `--debug` (or
NEURO_CADUCEUS_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import builtins
import functools
import os
import pickle
import re
from collections.abc import Callable
from typing import Any

import click
import typer

from neuro_caduceus.analysis import commands as analysis_commands
from neuro_caduceus.cohort import commands as cohort_commands
from neuro_caduceus.genome import commands as genome_commands
from neuro_caduceus.model import commands as model_commands
from neuro_caduceus.stats import commands as stats_commands
from neuro_caduceus.variants import commands as variants_commands

DEBUG_ENV = "NEURO_CADUCEUS_DEBUG"
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, pickle.UnpicklingError)
_state = {"debug": False}


_REMOTE_ERROR = re.compile(r"^(\w+): (.+)$", re.M)


def _cause(err: BaseException) -> BaseException:
    """The error a Ray task raised, not Ray's wrapper around it.

    Ray wraps a task's error (RayTaskError, whose `cause` may itself be a wrapper such as Ray Data's
    UserCodeException) and keeps the original only as text in the remote traceback; the first
    `BuiltinError: message` line of that text is rebuilt as that built-in exception.
    """
    outer = err
    while type(err).__module__.startswith("ray") and isinstance(getattr(err, "cause", None), BaseException):
        if not type(err.cause).__module__.startswith("ray"):
            return err.cause
        err = err.cause
    if not type(err).__module__.startswith("ray"):
        return err
    for name, message in _REMOTE_ERROR.findall(str(outer)):
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    return err


def _is_user_error(err: BaseException) -> bool:
    import yaml

    name = type(err).__name__
    return isinstance(err, (*USER_ERRORS, yaml.YAMLError)) or name in ("HailUserError",)


def error_line(err: BaseException) -> str:
    """One line: the message (a KeyError's without quotes, a pydantic error's as `key: problem; ...`)."""
    errors = getattr(err, "errors", None)
    if type(err).__name__ == "ValidationError" and callable(errors):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in errors()]
        message = f"{getattr(err, 'title', 'config')}: {'; '.join(parts)}"
    elif isinstance(err, KeyError) and err.args:
        message = str(err.args[0])
    else:
        message = str(err) or type(err).__name__
    return " ".join(message.split())


def _report(err: BaseException) -> int:
    """Print the one-line report of a failed command; return its exit code."""
    err = _cause(err)
    if _is_user_error(err):
        typer.secho(f"error: {error_line(err)}", fg=typer.colors.RED, err=True)
        return 2
    typer.secho(
        f"internal error: {type(err).__name__}: {error_line(err)[:500]} (rerun with --debug or "
        f"{DEBUG_ENV}=1 for the traceback, and report it)",
        fg=typer.colors.RED,
        err=True,
    )
    return 1


def reporting_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """The command, with its errors reported by `_report` (tracebacks only under --debug)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as err:
            if _state["debug"] or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            raise typer.Exit(_report(err)) from None

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
