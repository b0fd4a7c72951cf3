"""Subject matrix: per-(subject, gene) embedding shards -> one row per subject, genes concatenated in order.

Why a Ray Data groupby: shards are written per gene, so a subject's vectors live in as many files as there
are genes; grouping by subject on the cluster assembles each row next to the data and the driver only sees
per-batch counts. Gene order is the gene set's (the recipe's `gene_list`, or a gene-set YAML), so column
block j always holds gene j; a subject lacking a gene is an error (default) or dropped and counted.

Block scaling (default `total_variance`): each gene's block is divided by the square root of its total
variance (sum over its d dimensions, from exact merged per-gene moments of the shards), so every gene enters
the concatenation, and so the PCA, with total variance 1. Unscaled, a gene's weight is the spread of its
mean-pooled embedding, which grows as its region shrinks (fewer bases dilute a variant's shift less): PCA
would follow short genes, not biology.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from neuro_caduceus.genome.genesets import load_gene_set
from neuro_caduceus.io import (
    FORMAT_KEY,
    RECIPE_KEY,
    SHARD_FORMAT,
    check_format,
    parquet_files,
    parquet_metadata,
    write_csv,
    write_json,
)
from neuro_caduceus.provenance import stamp
from neuro_caduceus.stats import features_io as fio
from neuro_caduceus.stats.distributed import in_input_order

OnMissing = Literal["error", "drop"]
MISSING_WHY = "excluded by the cohort job's qc.max_missing, or not in the shards"
MISSING_CALLS_FILE = "missing_calls.csv"
BlockScaling = Literal["total_variance", "none"]


def shard_folder(path: str) -> str:
    """The embedding job's output folder (with `shards/`) or the shards folder itself."""
    fs, root = fsspec.core.url_to_fs(path)
    sub = f"{root.rstrip('/')}/shards"
    return f"{path.rstrip('/')}/shards" if fs.isdir(sub) else path


def check_recipes(files: list[str]) -> dict:
    """The shards' common recipe; differing recipes (mixed runs) or a shard format this version cannot read
    are an error naming the files."""
    metadata = {f: parquet_metadata(f) for f in files}
    for f, meta in metadata.items():
        check_format(meta.get(FORMAT_KEY), SHARD_FORMAT, f)
    recipes = {f: meta.get(RECIPE_KEY, b"{}") for f, meta in metadata.items()}
    first = recipes[files[0]]
    odd = [f for f, r in recipes.items() if r != first]
    if odd:
        raise ValueError(f"{len(odd)} shard(s) carry a different recipe than {files[0]} (e.g. {odd[:5]}); "
                         "shards of different embedding runs cannot be combined")
    return json.loads(first)


def load_gene_list(path: str) -> list[str]:
    """The entries of a gene-set YAML (the cohort job's format), in the set's order."""
    return load_gene_set(path).genes


def _in_gene_set(table: pa.Table, genes: list[str]) -> pa.Table:
    """Rows of genes in the set (matched by gene_id or gene_name); other genes are ignored."""
    wanted = pa.array(genes, pa.string())
    return table.filter(pc.or_(pc.is_in(table["gene_id"], wanted), pc.is_in(table["gene_name"], wanted)))


def _slots(group: pa.Table, genes: list[str]) -> list[int]:
    """Gene-set position of each row (matched by gene_id, else gene_name)."""
    index = {g: i for i, g in enumerate(genes)}
    ids, names = group.column("gene_id").to_pylist(), group.column("gene_name").to_pylist()
    return [index.get(g, index.get(n)) for g, n in zip(ids, names, strict=True)]


def _assemble(group: pa.Table, genes: list[str], dim: int, scales: list[float] | None = None) -> pa.Table:
    """One subject's rows -> (subject_id, features [len(genes) * dim] | null, problem); blocks scaled."""
    sid = group.column("subject_id")[0].as_py()
    slots = _slots(group, genes)
    problem = None
    dup = sorted({genes[s] for s in slots if slots.count(s) > 1})
    missing = [g for i, g in enumerate(genes) if i not in set(slots)]
    if dup:
        problem = f"duplicated: gene(s) {dup[:5]} appear more than once"
    elif missing:
        problem = f"missing: no row for {len(missing)} gene(s) e.g. {missing[:5]} ({MISSING_WHY})"
    width = len(genes) * dim
    ftype = pa.list_(pa.float32(), width)
    if problem:
        feats = pa.nulls(1, ftype)
    else:
        emb = group.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        rows = emb.reshape(len(slots), dim)[np.argsort(slots)]
        if scales is not None:
            rows = rows.astype(np.float64) * np.asarray(scales)[:, None]
        feats = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), width)
    return pa.table({"subject_id": pa.array([sid], pa.string()), "features": feats,
                     "problem": pa.array([problem], pa.string())})


def _gene_moments(batch: pa.Table, genes: list[str], dim: int) -> pa.Table:
    """Per gene in this batch: row count, mean [dim] and centred sum of squares [dim] (float64)."""
    slots = np.asarray(_slots(batch, genes))
    emb = batch.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    E = emb.astype(np.float64).reshape(len(slots), dim)
    out: dict[str, list] = {"slot": [], "count": [], "mean": [], "m2": []}
    for g in np.unique(slots):
        rows = E[slots == g]
        mean = rows.mean(axis=0)
        out["slot"].append(int(g))
        out["count"].append(len(rows))
        out["mean"].append(mean.tolist())
        out["m2"].append(((rows - mean) ** 2).sum(axis=0).tolist())
    return pa.table(out, schema=pa.schema([("slot", pa.int64()), ("count", pa.int64()),
                                           ("mean", pa.list_(pa.float64())), ("m2", pa.list_(pa.float64()))]))


def block_total_variances(ds, genes: list[str], dim: int) -> np.ndarray:
    """Total variance (sum of the d per-dimension sample variances) of each gene's embedding, exactly merged
    over batches (Chan et al.) in the input's order, from every (subject, gene) row of the gene set."""
    from neuro_caduceus.ray_session import dataset_batches  # Ray's helpers load with Ray, when a job runs

    count = np.zeros(len(genes))
    mean = np.zeros((len(genes), dim))
    m2 = np.zeros((len(genes), dim))
    parts = in_input_order(ds.map_batches(_gene_moments, fn_kwargs={"genes": genes, "dim": dim},
                                          batch_format="pyarrow"))
    with dataset_batches(parts, batch_size=None, batch_format="pyarrow") as blocks:
        for block in blocks:
            columns = (block.column(c).to_pylist() for c in ("slot", "count", "mean", "m2"))
            for g, nb, mb, sb in zip(*columns, strict=True):
                mb, sb = np.asarray(mb), np.asarray(sb)
                n = count[g] + nb
                delta = mb - mean[g]
                m2[g] += sb + delta**2 * count[g] * nb / n
                mean[g] += delta * nb / n
                count[g] = n
    return np.where(count > 1, m2.sum(axis=1) / np.maximum(count - 1, 1), 0.0)


def build_subject_matrix(input_dir: str, out_dir: str, genes: list[str] | None = None,
                         on_missing: OnMissing = "error", batch_size: int = 4096,
                         block_scaling: BlockScaling = "total_variance", missing_calls: bool = False) -> dict:
    """Write `out_dir/matrix/` Parquet (subject_id, features) and `out_dir/subject_matrix_summary.json`.

    `block_scaling`: `total_variance` (each gene's block scaled to total variance 1; a constant gene is left
    as is and counted) or `none`. The method and the factors go to the recipe (`block_scaling`), the
    summary and `block_scales.csv`. Dropped subjects are counted per reason (`dropped_by_reason`).
    `missing_calls`: also write `missing_calls.csv`, a subject table of the shards' per-gene missing calls
    (`missing_calls_table`), for the analyses' `--covariates`.
    """
    import ray.data

    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    if block_scaling not in ("total_variance", "none"):
        raise ValueError(f"block_scaling must be 'total_variance' or 'none', got {block_scaling!r}")
    folder = shard_folder(input_dir)
    files = parquet_files(folder)
    if not files:
        raise FileNotFoundError(f"{input_dir}: no embedding shards (*.parquet) found")
    recipe = check_recipes(files)
    genes = genes or recipe.get("gene_list")
    if not genes:
        raise ValueError(f"{input_dir}: the shards' recipe has no gene_list; pass --genes SET.yaml")
    dim = _embedding_width(files[0])
    footers = _footers(files)
    never = _never_embedded(footers, genes)
    if never:
        raise ValueError(f"{input_dir}: {len(never)} gene(s) of the gene list are in no shard (never "
                         f"embedded, e.g. {never[:5]}): every subject lacks them, so no subject can be "
                         "assembled; embed them, or pass --genes without them")
    ds = ray.data.read_parquet(files, columns=["subject_id", "gene_id", "gene_name", "embedding"])
    ds = ds.map_batches(_in_gene_set, fn_kwargs={"genes": genes}, batch_format="pyarrow")
    variances = scales = None
    constant: list[str] = []
    if block_scaling == "total_variance":
        variances = block_total_variances(ds, genes, dim)
        constant = [g for g, v in zip(genes, variances, strict=True) if v <= 0]
        scales = [float(1 / np.sqrt(v)) if v > 0 else 1.0 for v in variances]
    grouped = ds.groupby("subject_id", num_partitions=_partitions(footers, dim))
    rows = grouped.map_groups(_assemble, fn_kwargs={"genes": genes, "dim": dim, "scales": scales},
                              batch_format="pyarrow")
    stage = {"stage": "subject_matrix", "genes": genes, "dim_per_gene": dim, "on_missing": on_missing,
             "block_scaling": block_scaling, "constant_genes": len(constant)}
    recipe = {**stamp(recipe, "subject_matrix", [folder]),
              "block_scaling": {"method": block_scaling,
                                "scales": None if scales is None else dict(zip(genes, scales, strict=True))}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = fio.write_parts(rows, str(out / "matrix"), fio.stage_metadata(recipe, [], stage), batch_size)
    kinds = written["problem_kinds"]
    if kinds.get("duplicated") or (kinds.get("missing") and on_missing == "error"):
        fio.abort_parts(written)
        hint = ("duplicated (subject, gene) rows are always an error" if kinds.get("duplicated")
                else "use --on-missing-gene drop to drop them")
        raise ValueError(f"{written['problems']} subject(s) cannot be assembled ({kinds}), e.g. "
                         f"{written['examples']}; {hint}")
    if not written["written"]:
        fio.abort_parts(written)
        raise ValueError(f"{input_dir}: no subject has all {len(genes)} genes ({written['problems']} "
                         f"dropped: {kinds}, e.g. {written['examples']}); the matrix would be empty: check "
                         "that --genes lists embedded genes")
    fio.commit_parts(written)
    if scales is not None:
        _write_scales(out / "block_scales.csv", genes, variances, scales)
    table = missing_calls_table(files, genes, out / "matrix") if missing_calls else None
    if table is not None:
        write_csv(table, out / MISSING_CALLS_FILE)
    summary = {**stage, "input": folder, "n_shards": len(files), "subjects_written": written["written"],
               "constant_gene_examples": constant[:10],
               "block_scale": recipe["block_scaling"]["scales"],
               "subjects_dropped": written["problems"], "dropped_by_reason": kinds,
               "dropped_examples": written["examples"],
               "missing_calls_table": None if table is None else MISSING_CALLS_FILE,
               "n_features": len(genes) * dim, "recipe_id": recipe.get("recipe_id"), "recipe": recipe}
    write_json(out / "subject_matrix_summary.json", summary)
    return summary


def missing_calls_table(files: list[str], genes: list[str], matrix_dir: Path) -> pl.DataFrame | None:
    """Per subject of the matrix: `missing_<gene>` = its missing calls in each gene of the set (the shards'
    `n_missing`; 0 where a subject-gene has none) and `missing_total` = their sum; None when the shards
    carry no counts (no `n_missing` column, or only nulls: a source without counts).

    Why counts, not rates: a gene's rate is its count over the gene's VCF records, a constant per gene, so
    as a linear covariate the count carries the same information.
    """
    import pyarrow.dataset as pads

    if "n_missing" not in _shard_columns(files[0]):
        return None
    shards = pads.dataset(files, format="parquet")
    if not shards.count_rows(filter=pc.field("n_missing").is_valid()):
        return None
    rows = shards.to_table(columns=["subject_id", "gene_id", "gene_name", "n_missing"],
                           filter=pc.field("n_missing") > 0)  # only subject-genes with a missing call
    rows = _in_gene_set(rows, genes)
    subjects = pads.dataset(parquet_files(str(matrix_dir)), format="parquet").to_table(columns=["subject_id"])
    calls = pl.DataFrame({"subject_id": rows.column("subject_id"),
                          "slot": pa.array(_slots(rows, genes), pa.int64()), "n": rows.column("n_missing")})
    order = pl.from_arrow(subjects).with_row_index("row")
    calls = calls.join(order, on="subject_id", how="inner")
    counts = np.zeros((order.height, len(genes)), dtype=np.int64)
    counts[calls["row"].to_numpy(), calls["slot"].to_numpy()] = calls["n"].to_numpy()
    columns = {f"missing_{g}": counts[:, j] for j, g in enumerate(genes)}
    return pl.DataFrame({"subject_id": order["subject_id"], **columns, "missing_total": counts.sum(axis=1)})


def _footers(files: list[str]) -> list:
    """Each shard's Parquet footer (pyarrow FileMetaData), read once: no data read."""
    import pyarrow.parquet as pq

    footers = []
    for path in files:
        with fsspec.open(path, "rb") as f:
            footers.append(pq.ParquetFile(f).metadata)
    return footers


def _never_embedded(footers: list, genes: list[str]) -> list[str]:
    """Genes outside every row group's gene_id and gene_name [min, max] (the shards' footers).

    Conservative: a row group without statistics may hold any gene.
    """
    ranges = []
    for meta in footers:
        columns = [i for i, name in enumerate(meta.schema.names) if name in ("gene_id", "gene_name")]
        for g in range(meta.num_row_groups):
            for i in columns:
                stats = meta.row_group(g).column(i).statistics
                if stats is None or not stats.has_min_max or not isinstance(stats.min, str):
                    return []
                ranges.append((stats.min, stats.max))
    return [gene for gene in genes if not any(lo <= gene <= hi for lo, hi in ranges)]


def _write_scales(path: Path, genes: list[str], variances, scales) -> None:
    write_csv(pl.DataFrame({"gene": genes, "total_variance": np.asarray(variances, dtype=np.float64),
                            "scale": np.asarray(scales, dtype=np.float64)}), path)


def _partitions(footers: list, dim: int) -> int:
    """Shuffle partitions: about one per 128 MiB of rows as they sit in memory (rows x dim float32 from the
    footers: shards compress subjects with equal haplotypes many-fold, so file sizes would under-count),
    at least 2, at most 2,000 (Ray's default of 200 is slow on small inputs)."""
    rows = sum(meta.num_rows for meta in footers)
    return int(min(2000, max(2, np.ceil(rows * (4 * dim + 64) / 2**27))))


def _shard_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        return pq.read_schema(f).names


def _embedding_width(path: str) -> int:
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        schema = pq.read_schema(f)
    missing = [c for c in ("subject_id", "gene_id", "gene_name", "embedding") if c not in schema.names]
    typ = schema.field("embedding").type if "embedding" in schema.names else None
    if missing or not pa.types.is_fixed_size_list(typ):
        raise ValueError(f"{path}: not an embedding shard (need subject_id, gene_id, gene_name, "
                         f"embedding fixed_size_list<float32>[d]; has {schema.names})")
    return typ.list_size
