"""The window store: pooled (sum, length) of every distinct window ever embedded, keyed by content key.

Why: a window's pooled result depends only on its sequence and the model identity, so it is computed once
and reused by every gene, run, resumed run, pilot and config that shares the model. Layout (a folder or any
fsspec URL):

    _identity.json            the model identity the store is valid for (another one is refused) and the
                              store's format version
    batches/<id>.parquet      one committed actor batch: key, length, sum (float64 [d_model])

A batch is written under a hidden temporary name and renamed when complete, with its row count and a
checksum of its columns in the Parquet footer; readers list only committed names, so a half-written batch
(killed writer) is never read. Duplicate keys (a batch redone after a crash) hold equal values; the first
one read wins.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from functools import lru_cache

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.io import TEMP_GLOB, check_format, write_atomic, write_parquet

IDENTITY_FILE = "_identity.json"
STORE_FORMAT = 1  # the store's layout (its `format_version` in the identity file)
ROWS_KEY, CHECKSUM_KEY = b"neuro_caduceus.rows", b"neuro_caduceus.checksum"
IDENTITY_KEYS = ("family", "checkpoint_sha256", "tokenizer", "tokenizer_sha256", "kmer_size", "dtype",
                 "window", "stride", "pooling", "model_code")


def store_identity(recipe: dict) -> dict:
    """The store identity of a model recipe: its encoder's identity (family, checkpoint, tokenizer, window,
    pooling, dtype, the version of the family's model code), so two encoders never share a store."""
    return {k: recipe["encoder"][k] for k in IDENTITY_KEYS}


def _checksum(table: pa.Table) -> str:
    """sha256 of the values (keys, lengths, sums), independent of how Arrow laid them out in memory."""
    digest = hashlib.sha256("\n".join(table.column("key").to_pylist()).encode())
    digest.update(np.asarray(table.column("length"), dtype=np.int64).tobytes())
    digest.update(np.asarray(table.column("sum").combine_chunks().flatten(), dtype=np.float64).tobytes())
    return digest.hexdigest()


class WindowStore:
    """One store location, opened for one model identity."""

    def __init__(self, url: str, identity: dict):
        self.url, self.identity = url, identity
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.root = self.root.rstrip("/")

    def _stored_identity(self) -> dict | None:
        """The identity the store holds (None: no store there yet); a newer store format is refused."""
        path = f"{self.root}/{IDENTITY_FILE}"
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as f:
            stored = json.load(f)
        check_format(stored.pop("format_version", None), STORE_FORMAT, f"{self.url}/{IDENTITY_FILE}")
        return stored

    def open(self, create: bool = True) -> WindowStore:
        """Check (or record, for a new store) the identity; refuse a store of another model identity."""
        path = f"{self.root}/{IDENTITY_FILE}"
        stored = self._stored_identity()
        if stored is not None:
            if stored != self.identity:
                have, want = json.dumps(stored, sort_keys=True), json.dumps(self.identity, sort_keys=True)
                raise FileExistsError(
                    f"window store {self.url} holds windows of model identity {have}, not {want}; "
                    "set output.window_store to another location for this model"
                )
        elif create:
            self.fs.makedirs(f"{self.root}/batches", exist_ok=True)
            body = {**self.identity, "format_version": STORE_FORMAT}
            write_atomic(self.fs, path, json.dumps(body, indent=1, sort_keys=True))
        return self

    def clear_if_other(self) -> None:
        """Delete the store's own files (identity, committed, partial batches) if it holds another model."""
        path = f"{self.root}/{IDENTITY_FILE}"
        stored = self._stored_identity()
        if stored is None or stored == self.identity:
            return
        for batch in [*self.batch_files(), *self.fs.glob(f"{self.root}/batches/{TEMP_GLOB}")]:
            self.fs.rm(batch)
        self.fs.rm(path)

    def commit(self, keys: list[str], lengths: np.ndarray, sums: np.ndarray) -> str:
        """Write one batch under a temporary name, then rename it into place; returns its name."""
        table = pa.table({
            "key": pa.array(keys, pa.string()),
            "length": pa.array(np.asarray(lengths, dtype=np.int64)),
            "sum": pa.FixedSizeListArray.from_arrays(np.ascontiguousarray(sums, dtype=np.float64).reshape(-1),
                                                     sums.shape[1]),
        })
        meta = {ROWS_KEY: str(table.num_rows).encode(), CHECKSUM_KEY: _checksum(table).encode()}
        table = table.replace_schema_metadata(meta)
        name = f"{uuid.uuid4().hex}.parquet"
        write_parquet(table, f"{self.root}/batches/{name}", fs=self.fs)
        return name

    def batch_files(self) -> list[str]:
        """Committed batch paths (temporary names of unfinished writes excluded)."""
        paths = self.fs.glob(f"{self.root}/batches/*.parquet")
        return sorted(p for p in paths if not p.rsplit("/", 1)[-1].startswith("."))

    def remove_partial(self) -> int:
        """Delete temporary files of writers that never finished; returns how many."""
        stale = self.fs.glob(f"{self.root}/batches/{TEMP_GLOB}")
        for path in stale:
            self.fs.rm(path)
        return len(stale)

    def check(self, path: str, full: bool = True) -> str | None:
        """None if the batch is intact, else why not (footer, row count, checksum)."""
        try:
            with self.fs.open(path, "rb") as f:
                meta = pq.read_metadata(f)
                kv = meta.metadata or {}
                if int(kv.get(ROWS_KEY, b"-1")) != meta.num_rows:
                    return f"row count {meta.num_rows} differs from the {kv.get(ROWS_KEY)} recorded at commit"
                if full:
                    f.seek(0)
                    table = pq.read_table(f)
                    if _checksum(table).encode() != kv.get(CHECKSUM_KEY):
                        return "checksum differs from the one recorded at commit"
        except (OSError, ValueError, pa.ArrowException) as err:
            return f"unreadable ({err})"
        return None

    def lookup(self, keys: list[str], index: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """(sums float64 [n, d], lengths int64 [n]) of `keys`, read from the batches that hold them."""
        by_file: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key not in index:
                raise KeyError(f"window {key} is not in the window store {self.url}; re-run the job")
            by_file.setdefault(index[key], []).append(i)
        sums: np.ndarray | None = None
        lengths = np.zeros(len(keys), dtype=np.int64)
        for path, rows in by_file.items():
            with self.fs.open(path, "rb") as f:
                table = pq.read_table(f)
            where = {k: i for i, k in enumerate(table.column("key").to_pylist())}
            pick = [where[keys[i]] for i in rows]
            part = np.asarray(table.column("sum").combine_chunks().flatten()).reshape(table.num_rows, -1)
            if sums is None:
                sums = np.zeros((len(keys), part.shape[1]))
            sums[rows] = part[pick]
            lengths[rows] = np.asarray(table.column("length"))[pick]
        return (sums if sums is not None else np.zeros((0, 0))), lengths


@lru_cache(maxsize=2)
def key_index(url: str, snapshot: str) -> dict[str, str]:
    """content key -> batch path over the committed batches (cached per worker process and `snapshot`).

    Reads only the key column. `snapshot` names the moment the caller needs (a run id and its phase):
    batches committed later are not seen, which costs at most a repeated window, never a wrong one.
    """
    store = WindowStore(url, {})
    index: dict[str, str] = {}
    for path in store.batch_files():
        with store.fs.open(path, "rb") as f:
            for key in pq.read_table(f, columns=["key"]).column("key").to_pylist():
                index.setdefault(key, path)
    return index
