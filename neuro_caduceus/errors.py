"""How a failed command is reported: one line, the cause (not Ray's or Java's wrapper), exit 2 or 1.

Why a module of its own: the CLI and the demo (an argparse entry point beside it) report errors the same
way; a user error (bad input, missing file, failed validation) prints `error: ...` and exits 2, anything
else is a bug: `internal error: ...` and exit 1. `--debug` (or NEURO_CADUCEUS_DEBUG=1) shows the
traceback instead.
"""

from __future__ import annotations

import builtins
import os
import pickle
import re

import typer

DEBUG_ENV = "NEURO_CADUCEUS_DEBUG"
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, pickle.UnpicklingError)
JAVA_STACK_MARKERS = ("Java stack trace:", "\n\tat ", "Hail version:")
INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C


def debug_requested() -> bool:
    """NEURO_CADUCEUS_DEBUG is set (to anything but 0)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


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
    for stack in JAVA_STACK_MARKERS:  # Hail's errors carry the JVM's stack after the message
        message = message.split(stack, 1)[0]
    return " ".join(message.split())


def report(err: BaseException) -> int:
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


