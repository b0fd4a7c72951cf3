"""CLI commands of the `genome` area (imports of heavy libraries stay inside the command bodies)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
