"""Diagnostic PNGs of the stats stage (matplotlib Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro_caduceus.io import atomic_path
from neuro_caduceus.provenance import title


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def scree_plot(ratio: np.ndarray, path: Path, recipe: dict | None = None) -> Path:
    """Explained-variance ratio per component and its cumulative sum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(1, len(ratio) + 1)
    ax.plot(x, ratio, lw=1, label="per component")
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax2 = ax.twinx()
    ax2.plot(x, np.cumsum(ratio), color="tab:orange", lw=1, label="cumulative")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("cumulative")
    ax.set_title(title(f"PCA scree ({len(ratio)} components, {np.sum(ratio):.1%} of variance)", recipe))
    fig.legend(loc="center right")
    path = _save(fig, path)
    plt.close(fig)
    return path


def r2_plot(r2: np.ndarray, path: Path, recipe: dict | None = None) -> Path:
    """Covariate R^2 per output dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(np.arange(1, len(r2) + 1), r2, width=1.0)
    ax.set_xlabel("feature dimension")
    ax.set_ylabel("R² explained by covariates")
    ax.set_title(title(f"covariate R² (median {np.median(r2):.3f}, max {np.max(r2):.3f})", recipe))
    path = _save(fig, path)
    plt.close(fig)
    return path
