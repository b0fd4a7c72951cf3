"""Read a MatrixTable's metadata without starting Hail: entry/row fields, reference genome and its contigs.

Why: the datasource is built on the Ray driver, which needs no JVM; checking there that the MatrixTable has a
GT field and the requested contigs gives a clear error before any read task starts.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass

import fsspec


@dataclass(frozen=True)
class MatrixTableMeta:
    entry_fields: tuple[str, ...]
    row_fields: tuple[str, ...]
    reference: str | None
    contigs: tuple[str, ...] | None  # None when the reference JSON is not stored with the MatrixTable


def _top_level_fields(struct_body: str) -> list[str]:
    """Field names of a Hail virtual type 'Struct{a:T,b:Struct{...}}' body, at nesting depth 0."""
    names, depth, token = [], 0, ""
    for ch in struct_body:
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        if ch == "," and depth == 0:
            names.append(token.split(":", 1)[0])
            token = ""
        else:
            token += ch
    if token:
        names.append(token.split(":", 1)[0])
    return names


def _struct_after(type_str: str, label: str) -> str:
    start = type_str.index(f"{label}:Struct{{") + len(label) + len(":Struct{")
    depth = 1
    for i in range(start, len(type_str)):
        depth += {"{": 1, "}": -1}.get(type_str[i], 0)
        if depth == 0:
            return type_str[start:i]
    raise ValueError(f"unbalanced type string near {label}")


def read_meta(mt_path: str) -> MatrixTableMeta:
    """Parse `metadata.json.gz` (and `references/<name>.json.gz` when present) of a MatrixTable folder."""
    root = mt_path.rstrip("/")
    try:
        with fsspec.open(f"{root}/metadata.json.gz", "rb") as fh:
            meta = json.loads(gzip.decompress(fh.read()))
    except (FileNotFoundError, NotADirectoryError) as err:  # a file given as the folder, too
        raise FileNotFoundError(f"{mt_path}: not a Hail MatrixTable (no metadata.json.gz)") from err
    mtype = meta["matrix_type"]
    entries = tuple(_top_level_fields(_struct_after(mtype, "entry")))
    rows = tuple(_top_level_fields(_struct_after(mtype, ",row")))
    found = re.search(r"locus:Locus\(([^)]+)\)", mtype)
    reference = found.group(1) if found else None
    contigs = None
    if reference:
        try:
            with fsspec.open(f"{root}/references/{reference}.json.gz", "rb") as fh:
                contigs = tuple(c["name"] for c in json.loads(gzip.decompress(fh.read()))["contigs"])
        except FileNotFoundError:
            contigs = None
    return MatrixTableMeta(entries, rows, reference, contigs)
