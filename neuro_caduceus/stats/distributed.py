"""Ray Data passes of the stats stage: per-batch moments merged on the driver, then map_batches transforms.

Why this shape: each worker turns a batch of rows into (count, mean, centred scatter) in float64 and ships
only that O(d^2) summary; the driver merges the summaries one at a time as they stream in, so it never holds
more than two d x d matrices and never any n x d block. The second pass applies the fitted linear map
batch by batch and writes part files (see `features_io.write_parts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from neuro_caduceus.stats.features_io import MAX_EXAMPLES, as_matrix, features_table
from neuro_caduceus.stats.moments import Moments
from neuro_caduceus.stats.pca import PCA
from neuro_caduceus.stats.residualize import Residualizer

DEFAULT_BATCH_ROWS = 4096


def moments_row(ids: list[str], X: np.ndarray) -> pa.Table:
    """One summary row of a batch: count, mean and scatter (bytes) + the ids (for duplicate/NaN checks)."""
    finite = np.isfinite(X).all(axis=1)
    bad = [ids[i] for i in np.flatnonzero(~finite)]
    m = Moments.of_block(X if finite.all() else X[finite], overwrite=True)  # X is this batch's own copy
    return pa.table({
        "count": pa.array([m.count], pa.int64()),
        "dim": pa.array([m.dim], pa.int64()),
        "mean": _binary(m.mean),
        "m2": _binary(m.m2),
        "ids": pa.array([ids], pa.list_(pa.string())),
        "bad": pa.array([bad], pa.list_(pa.string())),
    })


def _binary(a: np.ndarray) -> pa.Array:
    """A one-value large_binary array viewing the array's bytes (no copy of the d x d matrix)."""
    offsets = pa.array([0, a.nbytes], pa.int64()).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(np.ascontiguousarray(a))])


def _pca_batch_moments(batch: pa.Table) -> pa.Table:
    return moments_row(*as_matrix(batch))


def in_input_order(ds):
    """`ds` set to yield its blocks in the input's order, whichever task finishes first: floating-point
    merges of per-batch summaries depend on the order, and a run-dependent order changes the last bits.
    Ray Data shares one context along a chain of datasets, so the datasets `ds` derives from keep the
    input's order too (what a stage's later passes over them write is then in a fixed order as well)."""
    ds.context.execution_options.preserve_order = True
    return ds


def merge_streamed(stats_ds) -> tuple[Moments, dict[str, Any]]:
    """Merge per-batch summary rows as they arrive, in the input's order (`in_input_order`); checks NaN/inf
    and duplicated subject ids.

    The ids are kept as the batches' Arrow string arrays (a few bytes a subject, no Python object per
    subject) and checked for duplicates once, at the end."""
    import polars as pl

    from neuro_caduceus.ray_session import dataset_batches  # Ray's helpers load with Ray, when a job runs

    stats_ds = in_input_order(stats_ds)
    total: Moments | None = None
    id_chunks: list[pa.Array] = []
    bad: list[str] = []
    n_batches, max_rows = 0, 0
    with dataset_batches(stats_ds, batch_size=None, batch_format="pyarrow") as blocks:
        for block in blocks:
            for row in range(block.num_rows):
                d = block.column("dim")[row].as_py()
                m2 = np.frombuffer(block.column("m2")[row].as_buffer(), dtype=np.float64).reshape(d, d)
                mean = np.frombuffer(block.column("mean")[row].as_buffer(), dtype=np.float64)
                part = Moments(block.column("count")[row].as_py(), mean, m2)
                ids = block.column("ids")[row].values
                id_chunks.append(ids)
                bad += block.column("bad")[row].as_py()
                n_batches, max_rows = n_batches + 1, max(max_rows, len(ids))
                total = part if total is None else total.merge(part)
    if total is None:
        raise ValueError("the input dataset has no rows")
    if bad:
        raise ValueError(f"{len(bad)} subject(s) have NaN/inf features (e.g. {bad[:MAX_EXAMPLES]}); "
                         "fix or drop them upstream")
    ids = pl.Series("id", pa.chunked_array(id_chunks, pa.string()))
    dups = ids.filter(ids.is_duplicated()).unique().sort()
    if dups.len():
        raise ValueError(f"{dups.len()} duplicated subject id(s) in the input "
                         f"(e.g. {dups.head(MAX_EXAMPLES).to_list()}); each subject must appear once")
    return total, {"n_batches": n_batches, "max_batch_rows": max_rows, "n_rows": ids.len()}


def fit_pca(ds, n_components: int | None = 512, whiten: bool = False,
            batch_size: int = DEFAULT_BATCH_ROWS) -> PCA:
    """Exact PCA of a (subject_id, features) ray.data.Dataset from merged per-batch moments.

    `fit_info_` on the returned model records the batches merged and the largest batch (rows) a worker saw.
    """
    stats = ds.map_batches(_pca_batch_moments, batch_format="pyarrow", batch_size=batch_size)
    moments, info = merge_streamed(stats)
    model = PCA(n_components=n_components, whiten=whiten).fit_moments(moments)
    model.fit_info_ = info
    return model


class _Projector:
    """map_batches UDF holding a fitted linear map: features -> float32 scores."""

    def __init__(self, model: PCA):
        self.model = model

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids, X = as_matrix(batch)
        return features_table(ids, self.model.transform(X))


def transform_pca(ds, model: PCA, batch_size: int = DEFAULT_BATCH_ROWS):
    """Lazy dataset of (subject_id, features=scores float32[k])."""
    return ds.map_batches(_Projector, fn_constructor_args=(model,), batch_format="pyarrow",
                          batch_size=batch_size, compute=_pool())


def _pool():
    """An autoscaling actor pool of 1 .. (cluster CPUs) for the transform UDFs."""
    import ray

    return ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(ray.cluster_resources().get("CPU", 1))))


# ------------------------------------------------------------------------------------------ residualization
@dataclass(frozen=True)
class SharedDesign:
    """The residualization design (subject_id, x0..x{p-1}, _matched) put in the object store once: tasks
    map it from shared memory instead of each unpickling its own copy, and the driver keeps no n x p copy
    for the task specs (n = 470,000 subjects x p = 33 columns is 124 MB a copy)."""

    ref: Any
    width: int


def share_design(design) -> SharedDesign:
    import ray

    return SharedDesign(ray.put(design.to_arrow()), design.width)


_design_cache: dict[str, Any] = {}  # per worker process: the last design it read, as polars


def _design_frame(design: SharedDesign):
    import polars as pl
    import ray

    key = design.ref.hex()
    if key not in _design_cache:
        _design_cache.clear()
        _design_cache[key] = pl.from_arrow(ray.get(design.ref))
    return _design_cache[key]


def _design_lookup(batch: pa.Table,
                   design: SharedDesign) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(matched ids, Y rows, design rows, unmatched ids) of a batch."""
    import polars as pl

    ids, Y = as_matrix(batch)
    frame = pl.DataFrame({"subject_id": ids, "_row": np.arange(len(ids))})
    joined = frame.join(_design_frame(design), on="subject_id", how="left", maintain_order="left")
    has = joined["_matched"].fill_null(False).to_numpy()
    rows = joined["_row"].to_numpy()[has]
    X = joined.filter(pl.Series(has)).drop("subject_id", "_row", "_matched").to_numpy().astype(np.float64)
    missing = [ids[i] for i in np.flatnonzero(~has)]
    return [ids[i] for i in rows], Y[rows], X.reshape(len(rows), -1), missing


def _residual_batch_moments(batch: pa.Table, design: SharedDesign) -> pa.Table:
    ids, Y, X, _ = _design_lookup(batch, design)
    return moments_row(ids, np.hstack([X, Y]))


class _ResidualMap:
    """map_batches UDF: residuals for subjects with covariates; the others are passed on as problems."""

    def __init__(self, residualizer: Residualizer, design: SharedDesign):
        self.residualizer, self.design = residualizer, design

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids, Y, X, missing = _design_lookup(batch, self.design)
        out = features_table(ids, self.residualizer.residuals(Y, X))
        problem = pa.array([None] * len(ids), pa.string())
        width = out.column("features").type.list_size
        if missing:
            gone = pa.table({"subject_id": pa.array(missing, pa.string()),
                             "features": pa.nulls(len(missing), pa.list_(pa.float32(), width))})
            out = pa.concat_tables([out, gone])
            problem = pa.concat_arrays([problem, pa.array(["no covariates"] * len(missing), pa.string())])
        return out.append_column("problem", problem)


def fit_residualizer(ds, design: SharedDesign, residualizer: Residualizer,
                     batch_size: int = DEFAULT_BATCH_ROWS) -> Residualizer:
    """Fit OLS from merged moments of [design, features] over the subjects that have covariates."""
    p = design.width - 2
    stats = ds.map_batches(_residual_batch_moments, fn_kwargs={"design": design}, batch_format="pyarrow",
                           batch_size=batch_size)
    moments, info = merge_streamed(stats)
    residualizer.fit_moments(moments, p)
    residualizer.fit_info_ = info
    return residualizer


def transform_residuals(ds, residualizer: Residualizer, design: SharedDesign,
                        batch_size: int = DEFAULT_BATCH_ROWS):
    """Lazy dataset of (subject_id, features=residuals float32[q], problem)."""
    return ds.map_batches(_ResidualMap, fn_constructor_args=(residualizer, design), batch_format="pyarrow",
                          batch_size=batch_size, compute=_pool())
