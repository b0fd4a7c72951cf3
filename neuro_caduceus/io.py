"""The bottom layer for files: output safety, atomic writes, Parquet metadata and folders, tables, YAML.

Why one module: every command writes its files under a temporary name renamed into place (a reader sees the
old file, no file, or the whole new one), stamps its Parquet outputs with the embedding recipe and reads
Parquet folders, subject tables and YAML configs; doing each once keeps the temporary names, the metadata
keys and the error messages the same everywhere. Output safety: a command that takes `--out` refuses an
output that is (or holds, or lies inside) one of its inputs, and leaves nothing behind when it fails.

It imports nothing from neuro_caduceus, so every area (model, genome, ...) may use it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ValidationError

RECIPE_KEY = b"neuro_caduceus.recipe"  # Parquet schema metadata: the embedding recipe (JSON)
FORMAT_KEY = b"neuro_caduceus.format"  # Parquet schema metadata: the file's format version (an integer)
SHARD_FORMAT = 1  # the embedding shards' layout: written by the cohort job, read by the subject matrix
FEATURES_FORMAT = 1  # the stats stages' feature files (subject matrix, scores, residuals): read by the next
STAGES_KEY = b"neuro_caduceus.stages"  # Parquet schema metadata: the stats stages' records (JSON list)
TEMP_GLOB = ".*.tmp*"  # every name `temp_name` gives (and the older `.<name>.tmp`)
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
NULL_VALUES = ["", "NA", "NaN"]  # read as missing in subject tables

# ------------------------------------------------------------------------------------------- output safety


def _local(path: str | Path | None) -> Path | None:
    """The real path (symlinks resolved) of a local path; None for URLs and absent options."""
    if path is None or "://" in str(path):
        return None
    return Path(path).expanduser().resolve()


def check_output_not_input(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """Refuse (ValueError) an output that is an input, lies inside an input folder, or contains an input.

    Symlinks are resolved, so a link to the input is caught too; URLs are not checked.
    """
    real_inputs = [(p, _local(p)) for p in inputs if _local(p) is not None]
    for out in outputs:
        real_out = _local(out)
        if real_out is None:
            continue
        for given, real_in in real_inputs:
            if real_out == real_in or real_in in real_out.parents or real_out in real_in.parents:
                raise ValueError(
                    f"output {out} would overwrite the input {given}; choose another --out"
                )


@contextlib.contextmanager
def output_dir(
    out: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False
) -> Iterator[Path]:
    """The one output-folder rule: yields a temporary folder beside `out`, renamed onto `out` when the block
    succeeds.

    Before any work: `out` must not be an input, and must be absent, empty, or (with `overwrite`) hold only
    what a neuro-caduceus command wrote there (`check_replaceable`); temporary folders an interrupted run left
    beside it are removed. On success the old entries we wrote are replaced and the marker lists the new
    ones; on failure (or Ctrl-C) the temporary folder goes and `out` is untouched, so a failed pre-flight
    writes nothing and the corrected rerun is not refused.
    """
    out = Path(out)
    check_output_not_input([out], inputs)
    remove_leftovers(out)
    check_replaceable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(temp_name(out))
    tmp.mkdir()
    try:
        yield tmp
        replace_output(tmp, out, overwrite)
    except BaseException as err:
        with contextlib.suppress(Exception):  # never hide the error that stopped the run
            discard(tmp)
        named = named_disk_full(err, out)
        if named is err:
            raise
        raise named from err


def named_disk_full(err: BaseException, path: str | Path) -> BaseException:
    """A disk-full (or quota) error that names no file gets `path`, the output being written; any other
    error is returned as it is."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) and not err.filename:
        return OSError(err.errno, f"{os.strerror(err.errno)} while writing {path}; free space or choose "
                       "another output location", str(path))
    return err


def remove_leftovers(out: str | Path) -> list[Path]:
    """Remove the temporary files and folders (`temp_name`'s `.<name>.tmp-*`) an interrupted write of `out`
    left beside it; returns them. Two runs writing the same `out` at once are not supported."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    left = sorted(out.parent.glob(f".{glob_escape(out.name)}.tmp-*"))
    for path in left:
        discard(path)
    return left


def glob_escape(name: str) -> str:
    """`name` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


MARKER = ".neuro-caduceus-output.json"  # in an output folder: the entries this project wrote there
OVERWRITE_HELP = "Replace an existing --out (only what neuro-caduceus wrote there; other files block it)."


def check_replaceable(out: str | Path, overwrite: bool) -> None:
    """Before any work: `out` must be absent or empty, or (with `overwrite`) hold only what we wrote there.

    Why a marker: `--overwrite` must never delete a user's files; the folder's marker lists the entries a
    neuro-caduceus command wrote, and anything else in the folder blocks the replacement.
    """
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    marker = out / MARKER
    if not out.is_dir() or not marker.is_file():
        raise FileExistsError(
            f"{out} exists and was not written by neuro-caduceus (no {MARKER} in it); "
            "move it away or choose another --out"
        )
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    unknown = sorted(set(os.listdir(out)) - set(_marked(marker)) - {MARKER})
    if unknown:
        raise FileExistsError(
            f"{out} holds {len(unknown)} entries neuro-caduceus did not write ({', '.join(unknown[:5])}); "
            "move them away, then rerun with --overwrite"
        )


def _marked(marker: Path) -> list[str]:
    try:
        entries = json.loads(marker.read_text())["entries"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{marker}: unreadable output marker ({err}); move the folder away") from err
    return [e for e in entries if isinstance(e, str) and "/" not in e and e not in ("", ".", "..")]


def replace_output(tmp: str | Path, out: str | Path, overwrite: bool) -> None:
    """Move the finished folder `tmp` onto `out` (checked again), marking the entries as ours."""
    tmp, out = Path(tmp), Path(out)
    (tmp / MARKER).write_text(json.dumps({"entries": sorted(os.listdir(tmp))}, indent=1))
    check_replaceable(out, overwrite)
    if out.exists():
        for name in _marked(out / MARKER) if (out / MARKER).exists() else []:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        with contextlib.suppress(FileNotFoundError):
            (out / MARKER).unlink()
        out.rmdir()
    commit(tmp, out)


# ------------------------------------------------------------------------------------------ filesystems

FILESYSTEM_EXTRAS = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}  # URL scheme -> the pip extra


class FilesystemMissing(ValueError):
    """A URL whose fsspec filesystem package (gcsfs, s3fs, ...) is not installed here."""

    def __init__(self, url: str, err: ImportError):
        scheme = str(url).split("://", 1)[0]
        extra = FILESYSTEM_EXTRAS.get(scheme)
        advice = (f"pip install 'neuro-caduceus[{extra}]'" if extra
                  else f"install the fsspec filesystem package for {scheme}://")
        reason = " ".join(str(err).split()) or type(err).__name__
        super().__init__(f"{url}: cannot open {scheme}:// URLs in this environment ({reason}); {advice}")


def filesystem(url: str | Path) -> tuple[Any, str]:
    """(fsspec filesystem, path on it) of a local path or URL; a missing filesystem package is a
    `FilesystemMissing` naming the URL and the extra to install."""
    try:
        return fsspec.core.url_to_fs(str(url))
    except ImportError as err:
        raise FilesystemMissing(str(url), err) from err


# ------------------------------------------------------------------------------------------- atomic writes


def temp_name(path: str | Path) -> str:
    """`<folder>/.<name>.tmp-<8 hex>`: the one temporary name of every atomic write.

    Hidden (listings of committed files skip it), beside the target (the rename stays on one filesystem)
    and unique per write (concurrent writers never share one); `TEMP_GLOB` finds those a crash left.
    """
    head, sep, name = str(path).rstrip("/").rpartition("/")
    return f"{head}{sep}.{name}.tmp-{uuid.uuid4().hex[:8]}"


def _target(path: str | Path, fs: Any) -> tuple[Any, Any]:
    """(None, Path) for a local path given without `fs`; else (fsspec filesystem, path on it)."""
    if fs is None and "://" not in str(path):
        return None, Path(path)
    if fs is None:
        return filesystem(path)
    return fs, str(path)


def commit(tmp: str | Path, path: str | Path, fs: Any = None) -> None:
    """Rename the finished temporary file or folder `tmp` onto `path` (local, or on the fsspec `fs`).

    A folder already at `path` is moved aside and removed only once the new one is in place.
    """
    if fs is None:
        tmp, path = Path(tmp), Path(path)
        if tmp.is_dir() and (path.exists() or path.is_symlink()):
            old = Path(f"{tmp}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            discard(old)
        else:
            os.replace(tmp, path)
    elif fs.isdir(tmp):
        if fs.exists(path):
            old = f"{tmp}.old"
            fs.mv(path, old, recursive=True)
            fs.mv(tmp, path, recursive=True)
            fs.rm(old, recursive=True)
        else:
            fs.mv(tmp, path, recursive=True)
    else:
        fs.mv(tmp, path)


def discard(tmp: str | Path, fs: Any = None) -> None:
    """Remove a temporary file or folder if it exists (a failed write leaves nothing behind)."""
    if fs is not None:
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
        return
    tmp = Path(tmp)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, fs: Any = None) -> Iterator[Any]:
    """A temporary name beside `path` to write a file or a folder under: committed onto `path` when the block
    succeeds, removed when it fails.

    `path` is local (the name is a Path; missing parent folders are made), a URL, or a path on the fsspec
    filesystem `fs` (the name is a str). For writers that take a file name (matplotlib, polars, pyarrow).
    """
    fs, path = _target(path, fs)
    if fs is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path) if fs is not None else Path(temp_name(path))
    try:
        yield tmp
        commit(tmp, path, fs)
    except BaseException as err:
        with contextlib.suppress(Exception):  # best effort: never hide the error that stopped the write
            discard(tmp, fs)
        named = named_disk_full(err, path)
        if named is err:
            raise
        raise named from err


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", fs: Any = None) -> Iterator[IO]:
    """A handle on a temporary file beside `path` (local, a URL, or on `fs`), renamed onto `path` only if the
    block succeeds."""
    fs, path = _target(path, fs)
    with atomic_path(path, fs) as tmp, (open(tmp, mode) if fs is None else fs.open(tmp, mode)) as fh:
        yield fh


def write_atomic(fs: Any, path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` (on the fsspec `fs`; None: a local path or a URL) so that readers see the old
    file, no file, or the whole new one."""
    with atomic_writer(path, "wb", fs) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def write_text(path: str | Path, text: str) -> Path:
    """Atomic local text file; returns its path."""
    write_atomic(None, path, text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Atomic local JSON file (indented, keys sorted, non-JSON values as strings); returns its path."""
    return write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def write_csv(frame: pl.DataFrame, path: str | Path, separator: str = ",") -> Path:
    """Atomic local CSV/TSV of a polars DataFrame; returns its path."""
    with atomic_path(path) as tmp:
        frame.write_csv(tmp, separator=separator)
    return Path(path)


def write_parquet(table: pa.Table, path: str | Path, recipe: dict | None = None, fs: Any = None) -> Any:
    """Atomic Parquet file of an Arrow table (local, a URL, or on `fs`); with `recipe`, the schema metadata is
    the recipe alone (`recipe_metadata`). Returns `path`."""
    if recipe is not None:
        table = table.replace_schema_metadata(recipe_metadata(recipe))
    with atomic_writer(path, "wb", fs) as fh:
        pq.write_table(table, fh)
    return path


# ------------------------------------------------------------------------------- Parquet metadata, folders


def recipe_metadata(recipe: dict) -> dict[bytes, bytes]:
    """Schema metadata that carries the embedding recipe (JSON, keys sorted) under `RECIPE_KEY`."""
    return {RECIPE_KEY: json.dumps(recipe, sort_keys=True, default=str).encode()}


def metadata_json(metadata: dict[bytes, bytes] | None, key: bytes, source: str = "") -> Any:
    """The JSON value under `key` of a Parquet schema's metadata (None when absent); bad JSON is an error
    naming the key (and `source`)."""
    raw = (metadata or {}).get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        where = f"{source}: " if source else ""
        raise ValueError(f"{where}metadata key {key.decode()} is not valid JSON: {err}") from err


def format_metadata(version: int) -> dict[bytes, bytes]:
    """Schema metadata that stamps a Parquet file with its format version under `FORMAT_KEY`."""
    return {FORMAT_KEY: str(version).encode()}


def check_format(found: Any, supported: int, source: str) -> None:
    """Refuse an artifact of a format this version cannot read: newer than `supported`, or not a version.

    `found` is the version the file carries (an int, its text, or None for a file written before formats were
    stamped: format 1). Why: a later change of layout must never be misread silently by an older reader.
    """
    text = found.decode() if isinstance(found, bytes) else found
    version = 1 if text is None else text
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= supported:
        raise ValueError(f"{source}: format version {text}, but this neuro-caduceus reads format {supported} "
                         "(and older); use the neuro-caduceus version that wrote it, or write the file again")


def recipe_from_metadata(metadata: dict[bytes, bytes] | None, source: str = "") -> dict:
    """The recipe a Parquet schema's metadata carries ({} when it has none)."""
    return dict(metadata_json(metadata, RECIPE_KEY, source) or {})


def parquet_metadata(path: str) -> dict[bytes, bytes]:
    """Schema metadata of one Parquet file (local or URL); only the footer is read."""
    fs, p = filesystem(path)
    with fs.open(p, "rb") as f:
        return dict(pq.read_schema(f).metadata or {})


def parquet_files(folder: str | Path) -> list[str]:
    """Sorted Parquet files of a folder (local or URL); hidden (`.`, temporary) and `_` files skipped.

    A folder without any gives []; a path that is not a folder is a FileNotFoundError.
    """
    folder = str(folder)
    fs, root = filesystem(folder)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{folder}: not a folder")
    files = [p for p in fs.ls(root, detail=False)
             if p.endswith(".parquet") and not p.rstrip("/").rsplit("/", 1)[-1].startswith((".", "_"))]
    return sorted(files if "://" not in folder else [f"{folder.split('://')[0]}://{p}" for p in files])


def resolve_parquet_folder(path: str | Path, preferred: Sequence[str] = ()) -> str:
    """The folder whose Parquet files are an input (local or URL): `path` when it holds any; else its first
    `preferred` subfolder that exists (a stage's output inside a run folder); else its only subfolder that
    holds Parquet. Several candidates without a preference are an error: which one is meant is the user's
    choice."""
    path = str(path).rstrip("/")
    fs, root = filesystem(path)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{path}: no such folder")
    if parquet_files(path):
        return path
    for name in preferred:
        if fs.isdir(f"{root.rstrip('/')}/{name}"):
            return f"{path}/{name}"
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if fs.isdir(p))
    holding = [n for n in names if parquet_files(f"{path}/{n}")]
    if len(holding) > 1:
        raise ValueError(f"{path}: several subfolders hold Parquet ({holding}); pass one of them")
    if not holding:
        raise FileNotFoundError(f"{path}: no Parquet files in this folder or its subfolders"
                                + (f" ({', '.join(preferred)})" if preferred else ""))
    return f"{path}/{holding[0]}"


# ---------------------------------------------------------------------------------------- subject tables


def read_table(path: str | Path, subject_id: str = "subject_id", hint: str = "") -> pl.DataFrame:
    """A subject table (covariates, phenotypes, ...): CSV, TSV/TXT or Parquet by extension, with `""`, `NA`
    and `NaN` read as missing; the `subject_id` column must exist, is read as strings and must be unique.
    Rows come sorted by subject id (results never depend on the file's row order).

    Errors name the file and the column (`hint`: what to do about a missing id column).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{p}: a subject table must be {', '.join(TABLE_SUFFIXES)} (by its extension)")
    if suffix == ".parquet":
        df = pl.read_parquet(p)
    else:
        df = pl.read_csv(p, separator="," if suffix == ".csv" else "\t", infer_schema_length=10_000,
                         null_values=NULL_VALUES)
    if subject_id not in df.columns:
        raise ValueError(f"{p} has no subject id column {subject_id!r} (columns {df.columns})"
                         + (f"; {hint}" if hint else ""))
    df = df.with_columns(pl.col(subject_id).cast(pl.Utf8))
    dups = df.filter(pl.col(subject_id).is_duplicated())[subject_id].unique(maintain_order=True)
    if dups.len():
        raise ValueError(f"{p}: {dups.len()} subject id(s) in column {subject_id!r} appear more than once "
                         f"(e.g. {dups.head(10).to_list()})")
    return df.sort(subject_id)


def read_sample_list(path: str | Path, what: str = "sample list") -> list[str]:
    """Sample ids, one per line (blank lines and '#' comments skipped; a line's first comma-separated field,
    so a one-column CSV such as a UK Biobank withdrawal file reads as is). The one reader of sample lists:
    QC's include/exclude lists and `personalize --samples`. A repeated id is an error naming both lines, and
    so is a list with no id: either means the file is not the list the user meant."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give the file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    ids: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        name = line.split(",")[0].strip()
        if not name or name.startswith("#"):
            continue
        if name in ids:
            raise ValueError(f"{what} {path} line {n}: {name!r} repeats line {ids[name]}")
        ids[name] = n
    if not ids:
        raise ValueError(f"{what} {path} lists no samples")
    return list(ids)


# ------------------------------------------------------------------------------------------------- YAML


def read_yaml_model(path: str | Path, model: type[BaseModel], what: str = "", expected: str = "") -> Any:
    """A YAML file (safe_load) validated by a pydantic model; errors name the file and each bad key.

    `what` names the kind of file in the messages ("gene set"); `expected` says what it should hold.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give the YAML file".lstrip())
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist".lstrip())
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()
        )
        message = f"invalid {what} ({problems})" if what else problems
        raise ValueError(f"{path}: {message}" + (f"; expected {expected}" if expected else "")) from err
