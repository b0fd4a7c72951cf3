"""Feature tables on disk: Parquet folders of (`subject_id`, `features` fixed_size_list<float32>[k]).

Why one module: the subject matrix, PCA scores and residuals share one layout and one metadata rule (the
embedding recipe is carried unchanged under `neuro_caduceus.recipe`; each stage appends its own record to
`neuro_caduceus.stages`), and every stage writes part files from Ray workers into a temporary folder that is
renamed into place only when the whole stage succeeded.
"""

from __future__ import annotations

import collections
import json
import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from neuro_caduceus.io import (
    FEATURES_FORMAT,
    FORMAT_KEY,
    SHARD_FORMAT,
    STAGES_KEY,
    check_format,
    commit,
    discard,
    format_metadata,
    metadata_json,
    parquet_files,
    parquet_metadata,
    recipe_from_metadata,
    recipe_metadata,
    resolve_parquet_folder,
    temp_name,
)

FEATURE_SUBDIRS = ("residuals", "scores", "matrix")  # stage outputs a --input folder may hold
MAX_EXAMPLES = 10


def resolve_features_dir(folder: str) -> str:
    """The folder itself when it holds Parquet, else its `residuals/`, `scores/` or `matrix/` (that order)."""
    return resolve_parquet_folder(folder, FEATURE_SUBDIRS)


def read_metadata(folder: str) -> tuple[dict, list]:
    """(recipe, stages) of a feature or shard folder, from its first file."""
    files = parquet_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no Parquet files")
    meta = parquet_metadata(files[0])
    check_format(meta.get(FORMAT_KEY), FEATURES_FORMAT if STAGES_KEY in meta else SHARD_FORMAT, files[0])
    return recipe_from_metadata(meta, files[0]), metadata_json(meta, STAGES_KEY, files[0]) or []


def features_width(folder: str, column: str = "features") -> int:
    with fsspec.open(parquet_files(folder)[0], "rb") as f:
        schema = pq.read_schema(f)
    if "subject_id" not in schema.names or column not in schema.names:
        raise ValueError(f"{folder}: expected columns subject_id and {column}, found {schema.names}")
    typ = schema.field(column).type
    if not pa.types.is_fixed_size_list(typ):
        raise ValueError(f"{folder}: column {column} must be fixed_size_list<float32>[k], found {typ}")
    return typ.list_size


def read_features(folder: str):
    """ray.data.Dataset of (subject_id, features) from a feature folder (stage subfolders resolved).

    A stage writes its parts sorted by subject id and numbered in that order; a consumer whose result
    depends on row order (folds) still sorts the rows it collects by subject id itself.
    """
    import ray.data

    folder = resolve_features_dir(folder)
    features_width(folder)
    return ray.data.read_parquet(parquet_files(folder), columns=["subject_id", "features"])


def as_matrix(table: pa.Table, column: str = "features") -> tuple[list[str], np.ndarray]:
    """(subject ids, float64 [rows, k]) of an Arrow batch; a null feature vector reads as NaN."""
    ids = table.column("subject_id").to_pylist()
    col = table.column(column).combine_chunks()
    width = col.type.list_size
    if col.null_count:
        col = col.fill_null(pa.scalar([float("nan")] * width, col.type))
    values = col.flatten().to_numpy(zero_copy_only=False)
    return ids, values.astype(np.float64, copy=False).reshape(len(ids), width)


def features_table(ids: list[str], X: np.ndarray, metadata: dict[bytes, bytes] | None = None) -> pa.Table:
    """Arrow table in the contract layout: subject_id string, features fixed_size_list<float32>[k]."""
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    feats = pa.FixedSizeListArray.from_arrays(pa.array(X32.reshape(-1)), X32.shape[1])
    table = pa.table({"subject_id": pa.array(ids, pa.string()), "features": feats})
    return table.replace_schema_metadata(metadata) if metadata else table


def stage_metadata(recipe: dict, stages: list, stage: dict) -> dict[bytes, bytes]:
    return {**recipe_metadata(recipe), STAGES_KEY: json.dumps([*stages, stage], sort_keys=True).encode(),
            **format_metadata(FEATURES_FORMAT)}


def write_part(batch: pa.Table, tmp_dir: str, metadata: dict[bytes, bytes]) -> pa.Table:
    """Ray Data UDF: writes a batch's good rows as one part file; returns one stats row for the batch.

    Batches hold `subject_id`, `features` and optionally `problem` ("kind: detail"; a non-null problem means
    the row is not written but counted per kind and named in the stats).
    """
    ids = batch.column("subject_id").to_pylist()
    problems: list[Any] = [None] * len(ids)
    if "problem" in batch.column_names:
        problems = batch.column("problem").to_pylist()
        batch = batch.filter(pa.compute.is_null(batch.column("problem")))
    bad = [f"{s}: {p}" for s, p in zip(ids, problems, strict=True) if p is not None]
    name, first = None, None
    if batch.num_rows:
        table = batch.select(["subject_id", "features"]).sort_by("subject_id")
        table = table.replace_schema_metadata(metadata)
        fs, root = fsspec.core.url_to_fs(tmp_dir)
        name, first = f"{root}/part-{uuid.uuid4().hex}.parquet", table.column("subject_id")[0].as_py()
        with fs.open(name, "wb") as f:
            pq.write_table(table, f)
    kinds = collections.Counter(str(p).split(":")[0] for p in problems if p is not None)
    return pa.table({"written": [batch.num_rows], "problems": [len(bad)], "kinds": [json.dumps(kinds)],
                     "examples": pa.array([bad[:MAX_EXAMPLES]], pa.list_(pa.string())),
                     "file": pa.array([name], pa.string()), "first": pa.array([first], pa.string())})


def number_parts(fs, stats: list[dict]) -> None:
    """Rename the part files `part-00000.parquet`, ... in the order of their first subject id.

    Why: each part is sorted by subject id, so a reader that takes the files in name order sees the rows
    in one defined order whatever order Ray's workers finished in.
    """
    parts = sorted((s["first"], s["file"]) for s in stats if s["file"] is not None)
    for i, (_, name) in enumerate(parts):
        fs.mv(name, f"{name.rsplit('/', 1)[0]}/part-{i:05d}.parquet")


def write_parts(ds, out_dir: str, metadata: dict[bytes, bytes], batch_size: int | None = None) -> dict:
    """Write a (subject_id, features[, problem]) dataset into `out_dir` via a temporary folder + rename.

    Returns {"written", "problems", "examples"}; the caller decides whether problems are fatal before
    `commit_parts` renames the folder into place.
    """
    fs, root = fsspec.core.url_to_fs(out_dir)
    tmp = temp_name(root)
    fs.makedirs(tmp, exist_ok=True)
    stats = ds.map_batches(write_part, fn_kwargs={"tmp_dir": tmp, "metadata": metadata},
                           batch_format="pyarrow", batch_size=batch_size).take_all()
    number_parts(fs, stats)
    examples = [e for s in stats for e in s["examples"]]
    kinds: collections.Counter[str] = collections.Counter()
    for s in stats:
        kinds.update(json.loads(s["kinds"]))
    return {"written": sum(s["written"] for s in stats), "problems": sum(s["problems"] for s in stats),
            "problem_kinds": dict(kinds), "examples": examples[:MAX_EXAMPLES], "tmp": tmp, "final": root,
            "fs": fs}


def commit_parts(result: dict) -> None:
    """Replace the final folder by the temporary one (the old output is removed only after success)."""
    commit(result["tmp"], result["final"], result["fs"])


def abort_parts(result: dict) -> None:
    discard(result["tmp"], result["fs"])
