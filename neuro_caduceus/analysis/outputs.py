"""Atomic writers for the analyses' tables, figures and reports (temp name then rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path

RECIPE_KEY = "neuro_caduceus.recipe"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def write_text(path: Path, text: str) -> Path:
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_frame(df, stem: Path, recipe: dict | None = None) -> list[Path]:
    """A polars DataFrame as `stem.parquet` (the recipe in its schema metadata) and `stem.csv`."""
    import pyarrow.parquet as pq

    paths = [stem.with_suffix(".parquet"), stem.with_suffix(".csv")]
    tmp_pq, tmp_csv = _tmp(paths[0]), _tmp(paths[1])
    table = df.to_arrow()
    if recipe is not None:
        table = table.replace_schema_metadata({RECIPE_KEY: json.dumps(recipe, sort_keys=True, default=str)})
    pq.write_table(table, tmp_pq)
    df.write_csv(tmp_csv)
    os.replace(tmp_pq, paths[0])
    os.replace(tmp_csv, paths[1])
    return paths


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = _tmp(path)
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def new_figure(width: float, height: float):
    """A figure on the Agg backend (no display needed, safe in Ray workers and CI)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))
