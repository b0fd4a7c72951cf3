"""The analyses' writers: tables (Parquet with the recipe + CSV) and figures, each atomic (io)."""

from __future__ import annotations

from pathlib import Path

from neuro_caduceus.io import atomic_path, write_csv, write_parquet


def write_frame(df, stem: Path, recipe: dict | None = None) -> list[Path]:
    """A polars DataFrame as `stem.parquet` (the recipe in its schema metadata) and `stem.csv`."""
    paths = [stem.with_suffix(".parquet"), stem.with_suffix(".csv")]
    write_parquet(df.to_arrow(), paths[0], recipe)
    write_csv(df, paths[1])
    return paths


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def new_figure(width: float, height: float):
    """A figure on the Agg backend (no display needed, safe in Ray workers and CI)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))
