"""Readers for the analyses' inputs: subject feature matrices (with gene blocks) and subject tables.

Why one module: LOGO and CCA both need "subjects x features, and which columns belong to which gene", and
both join several files by `subject_id`; doing it once keeps the join rules (and their error messages) the
same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neuro_caduceus.io import (
    FEATURES_FORMAT,
    FORMAT_KEY,
    SHARD_FORMAT,
    STAGES_KEY,
    check_format,
    metadata_json,
    parquet_files,
    recipe_from_metadata,
    resolve_parquet_folder,
)

_DIM_KEYS = ("gene_dim", "embedding_dim", "dim", "d_model")


@dataclass
class FeatureMatrix:
    """Subjects x features, float64, with the column slice of each gene (if the input had gene blocks)."""

    subject_ids: list[str]
    X: np.ndarray
    gene_names: list[str] = field(default_factory=list)
    blocks: dict[str, slice] = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    source: str = ""
    scalar_columns: np.ndarray | None = None  # bool per column: a per-gene scalar (deviation), never reduced
    kind: str = "pcs"  # which features were read: pcs, deviation or both

    @property
    def has_gene_blocks(self) -> bool:
        return len(self.blocks) > 1

    def subset(self, rows: np.ndarray) -> FeatureMatrix:
        return FeatureMatrix([self.subject_ids[i] for i in rows], self.X[rows], self.gene_names,
                             self.blocks, self.recipe, self.source, self.scalar_columns, self.kind)


def _parquet_files(path: str | Path) -> list[str]:
    """A file, or the Parquet files of a folder (or of its only subfolder that has any, e.g. `shards/`)."""
    if Path(path).is_file():
        return [str(path)]
    return parquet_files(resolve_parquet_folder(path))


def _last_stage(schema, source: str) -> dict | None:
    """The last stats stage record (gene blocks exist only if it is the subject matrix), or None; checks
    the file's format version on the way."""
    meta = schema.metadata or {}
    check_format(meta.get(FORMAT_KEY), FEATURES_FORMAT if STAGES_KEY in meta else SHARD_FORMAT, source)
    stages = metadata_json(schema.metadata, STAGES_KEY, source)
    return stages[-1] if stages else None


def _gene_label(entry) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        for key in ("gene_name", "gene_id", "name"):
            if entry.get(key):
                return str(entry[key])
    raise ValueError(f"recipe gene_list entry {entry!r} has no gene_name/gene_id")


def gene_blocks(recipe: dict, width: int, source: str,
                last: dict | None = None) -> tuple[list[str], dict[str, slice]]:
    """Gene names and column slices: from the stats `subject_matrix` stage record (genes, dim_per_gene),
    else from the recipe's `gene_list` and per-gene dim; names from the recipe's `gene_names` when unique.

    One block 'all' when a later stage (`last`, the file's last stats stage record: PCA scores, residuals)
    made the file, there is no gene list, or the width is not genes x dim.
    """
    if last is not None and last.get("stage") != "subject_matrix":  # PCA scores, residuals
        return ["all"], {"all": slice(0, width)}
    ids = [_gene_label(g) for g in recipe.get("gene_list") or []]
    names = [str(g) for g in recipe.get("gene_names") or []]
    to_name = dict(zip(ids, names, strict=True)) if len(names) == len(ids) else {}
    if last is not None:
        genes = [str(g) for g in last.get("genes") or []]
        dim = int(last.get("dim_per_gene") or 0)
    else:
        genes = ids
        dim = next((int(recipe[k]) for k in _DIM_KEYS if recipe.get(k)), width // max(len(genes), 1))
    if not genes or dim * len(genes) != width:
        return ["all"], {"all": slice(0, width)}
    labels = [to_name.get(g, g) for g in genes]
    if len(set(labels)) == len(labels):
        genes = labels  # the cohort recipe lists gene ids in gene_list and their names in gene_names
    if len(set(genes)) != len(genes):
        raise ValueError(f"{source}: recipe gene_list has duplicate genes")
    return genes, {g: slice(i * dim, (i + 1) * dim) for i, g in enumerate(genes)}


FEATURE_KINDS = ("auto", "pcs", "deviation", "both")
DEVIATION = "deviation"  # shard column: L2 norm of (subject gene embedding - reference gene embedding)


def read_features(path: str | Path, features: str = "pcs") -> FeatureMatrix:
    """Read a subject matrix (`subject_id`, `features`) or embedding shards (`subject_id`, gene, `embedding`).

    A subject matrix's columns are split into gene blocks by the recipe metadata (`gene_list`, per-gene dim);
    shards (one row per subject and gene) are pivoted into the same layout, genes in recipe order (else in
    order of first appearance). `features` picks each gene's block: `pcs` (the embedding, reduced to
    components by the analyses), `deviation` (the shards' per-gene deviation from the reference, one
    column), `both`, or `auto` (both when the input has a deviation column, else pcs). Rows are sorted by
    subject id, so folds and permutations drawn from a seed give the same numbers whatever order the files
    hold the rows in.
    """
    if features not in FEATURE_KINDS:
        raise ValueError(f"--features-kind must be one of {', '.join(FEATURE_KINDS)}; got {features!r}")
    matrix = _read_unsorted(path, features)
    return matrix.subset(np.argsort(np.array(matrix.subject_ids, dtype=object), kind="stable"))


def _read_unsorted(path: str | Path, features: str) -> FeatureMatrix:
    files = _parquet_files(path)
    tables = [pq.read_table(f) for f in files]
    last = _last_stage(tables[0].schema, files[0])
    recipe = recipe_from_metadata(tables[0].schema.metadata, files[0])
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    cols = set(table.column_names)
    if "subject_id" not in cols:
        raise ValueError(f"{path}: no `subject_id` column (columns: {sorted(cols)})")
    kind = ("both" if DEVIATION in cols else "pcs") if features == "auto" else features
    if kind != "pcs" and DEVIATION not in cols:
        raise ValueError(f"{path}: --features-kind {features} needs a `{DEVIATION}` column (written by the "
                         "cohort job into its embedding shards); give the shards or --features-kind pcs")
    if "features" in cols:
        return _from_matrix(table, recipe, last, str(path))
    if "embedding" in cols and ("gene_name" in cols or "gene_id" in cols):
        return _from_shards(table, recipe, str(path), kind)
    raise ValueError(f"{path}: expected a `features` column (subject matrix) or `embedding` + `gene_name` "
                     f"(embedding shards); got {sorted(cols)}")


def _list_to_numpy(col, source: str) -> np.ndarray:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if col.null_count:
        raise ValueError(f"{source}: {col.null_count} rows have null features")
    lengths = np.asarray(pc.list_value_length(col))
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError(f"{source}: feature vectors have different lengths {sorted(set(lengths.tolist()))}")
    width = int(lengths[0]) if len(lengths) else 0
    flat = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.float64)
    X = flat.reshape(len(col), width)
    if not np.isfinite(X).all():
        raise ValueError(f"{source}: features contain NaN or infinite values")
    return X


def _check_unique(ids: list[str], source: str) -> None:
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{source}: subject_id {dup!r} appears more than once")


def _from_matrix(table, recipe: dict, last: dict | None, source: str) -> FeatureMatrix:
    ids = [str(s) for s in table.column("subject_id").to_pylist()]
    _check_unique(ids, source)
    X = _list_to_numpy(table.column("features"), source)
    genes, blocks = gene_blocks(recipe, X.shape[1], source, last)
    return FeatureMatrix(ids, X, genes, blocks, recipe, source)


def _deviation(table, source: str) -> np.ndarray:
    col = table.column(DEVIATION)
    if col.null_count:
        raise ValueError(f"{source}: {col.null_count} rows have a null `{DEVIATION}`")
    d = np.asarray(col.to_numpy(), dtype=np.float64)
    if not np.isfinite(d).all():
        raise ValueError(f"{source}: `{DEVIATION}` contains NaN or infinite values")
    return d


def _from_shards(table, recipe: dict, source: str, kind: str) -> FeatureMatrix:
    key_col = "gene_id" if "gene_id" in table.column_names else "gene_name"
    keys_row = [str(g) for g in table.column(key_col).to_pylist()]
    ids_row = [str(s) for s in table.column("subject_id").to_pylist()]
    E = _list_to_numpy(table.column("embedding"), source)
    listed = [_gene_label(g) for g in recipe.get("gene_list") or []]
    present = set(keys_row)
    keys = listed if listed and present <= set(listed) else list(dict.fromkeys(keys_row))
    absent = [g for g in keys if g not in present]
    if absent:
        raise ValueError(f"{source}: genes {absent[:10]} of the recipe's gene_list have no rows "
                         f"({len(absent)} of {len(keys)}); is the embedding job complete?")
    label = dict(zip(keys_row, (str(n) for n in table.column("gene_name").to_pylist()), strict=True)) \
        if "gene_name" in table.column_names else {k: k for k in keys}
    subjects = list(dict.fromkeys(ids_row))
    s_index = {s: i for i, s in enumerate(subjects)}
    g_index = {g: i for i, g in enumerate(keys)}
    si = np.array([s_index[s] for s in ids_row], dtype=np.int64)
    gi = np.array([g_index[g] for g in keys_row], dtype=np.int64)
    counts = np.zeros((len(subjects), len(keys)), dtype=np.int64)
    np.add.at(counts, (si, gi), 1)
    if (counts > 1).any():
        i, j = np.argwhere(counts > 1)[0]
        raise ValueError(f"{source}: subject {subjects[i]!r} has more than one row for gene {keys[j]!r}")
    if (counts == 0).any():
        i, j = np.argwhere(counts == 0)[0]
        raise ValueError(f"{source}: subject {subjects[i]!r} has no row for gene {keys[j]!r} "
                         f"({int((counts == 0).sum())} subject-gene pairs missing)")
    parts = [] if kind == "deviation" else [E]
    if kind != "pcs":
        parts.append(_deviation(table, source)[:, None])
    F = np.hstack(parts)
    d = F.shape[1]
    X3 = np.empty((len(subjects), len(keys), d))
    X3[si, gi] = F
    X = X3.reshape(len(subjects), len(keys) * d)
    scalar = np.zeros((len(keys), d), dtype=bool)
    if kind != "pcs":
        scalar[:, -1] = True  # the deviation: one column per gene, used as is
    names = [label[g] for g in keys]
    if len(set(names)) != len(names):
        names = keys  # gene names are not unique: keep the ids
    blocks = {n: slice(j * d, (j + 1) * d) for j, n in enumerate(names)}
    return FeatureMatrix(subjects, X, names, blocks, recipe, source, scalar.reshape(-1), kind)


@dataclass
class JoinReport:
    """How many subjects each input had and how many of them did not match the others."""

    n_matched: int
    unmatched: dict[str, int]


def join_order(named_ids: dict[str, list[str]]) -> tuple[list[str], JoinReport]:
    """Subjects present in every input, sorted by id (one order whatever the inputs' row order), and the
    unmatched count per input."""
    sets = {k: set(v) for k, v in named_ids.items()}
    common = set.intersection(*sets.values())
    order = sorted(common)
    return order, JoinReport(len(order), {k: len(s - common) for k, s in sets.items()})
