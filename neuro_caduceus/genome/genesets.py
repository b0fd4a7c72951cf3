"""Gene sets: a YAML file of gene symbols or Ensembl ids, resolved against the annotation in its own order.

Why strict: a gene silently missing from a set changes the width and meaning of every subject vector, so an
unknown, ambiguous or repeated entry is an error that lists every offending entry at once.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from neuro_caduceus.io import read_yaml_model

ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*G\d+)\.\d+$")


class GeneSet(BaseModel):
    """`name`, `genes` (symbols like APOE or Ensembl gene ids, with or without version), `description`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="the set's name (recorded in outputs)")
    genes: list[str] = Field(
        min_length=1, description="HGNC symbols or Ensembl gene ids (version optional), in the order used "
        "everywhere downstream")
    description: str | None = Field(None, description="free text")


def load_gene_set(path: str | Path) -> GeneSet:
    """A gene-set YAML; errors name the file and every bad key."""
    return read_yaml_model(path, GeneSet, what="gene set", expected="keys name, genes, description")


def resolve_gene_set(gene_set: GeneSet, genes: pl.DataFrame) -> pl.DataFrame:
    """The annotation rows of the set's genes, in the set's order; every unresolvable entry in one error."""
    by_id = {gid: i for i, gid in enumerate(genes["gene_id"].to_list())}
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(genes["gene_name"].to_list()):
        by_name.setdefault(name, []).append(i)
    rows, unknown, ambiguous, seen, repeated = [], [], [], {}, []
    for entry in gene_set.genes:
        key = ENSEMBL_VERSION.sub(r"\1", entry.strip())
        if key in by_id:
            hit = [by_id[key]]
        else:
            hit = by_name.get(key, [])
        if not hit:
            near = [n for n in by_name if n.upper() == key.upper()]
            unknown.append(f"{entry}" + (f" (did you mean {near[0]}?)" if near else ""))
        elif len(hit) > 1:
            ids = ", ".join(genes["gene_id"][i] for i in hit)
            ambiguous.append(f"{entry} -> {ids} (use the Ensembl id)")
        elif hit[0] in seen:
            repeated.append(f"{entry} (same gene as {seen[hit[0]]})")
        else:
            seen[hit[0]] = entry
            rows.append(hit[0])
    problems = [
        f"{label}: {', '.join(items)}"
        for label, items in (("unknown", unknown), ("ambiguous", ambiguous), ("repeated", repeated))
        if items
    ]
    if problems:
        raise ValueError(f"gene set {gene_set.name!r}: " + "; ".join(problems))
    return genes[rows]
