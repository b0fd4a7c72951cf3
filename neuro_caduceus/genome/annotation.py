"""GENCODE GTF -> one row per gene with its canonical transcript's exons and CDS (polars, lazy, streaming).

Why streaming: a full GENCODE GTF is 1.5 GB uncompressed; only the gene, transcript, exon and CDS lines and
five attributes are kept (never the raw attribute text), so polars never holds the raw lines.

Canonical transcript: tagged `Ensembl_canonical`, else `MANE_Select`, else the longest by exonic length
(ties: the smallest transcript id). Coordinates become 0-based half-open; versions are stripped from gene
and transcript ids (`ENSG00000130203.10` -> `ENSG00000130203`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

GTF_COLUMNS = ["chrom", "source", "feature", "start", "end", "score", "strand", "frame", "attributes"]
FEATURES = ("gene", "transcript", "exon", "CDS")
GENE_COLUMNS = [
    "gene_id",
    "gene_name",
    "chrom",
    "start",
    "end",
    "strand",
    "gene_type",
    "transcript_id",
    "exons",
    "cds",
]


def _attr(name: str) -> pl.Expr:
    return pl.col("attributes").str.extract(rf'(?:^|;)\s*{name} "([^"]*)"', 1)


def _strip_version(col: str) -> pl.Expr:
    return pl.col(col).str.replace(r"\.\d+$", "")


def _scan(gtf: str) -> pl.LazyFrame:
    return pl.scan_csv(
        gtf,
        has_header=False,
        separator="\t",
        comment_prefix="#",
        quote_char=None,
        new_columns=GTF_COLUMNS,
        schema_overrides={
            "chrom": pl.String,
            "start": pl.Int64,
            "end": pl.Int64,
            "score": pl.String,
            "frame": pl.String,
        },
    )


def _check(rows: pl.DataFrame, gtf: str) -> None:
    """Errors that name the file and an offending line (data lines, comments not counted)."""
    bad = rows.filter(pl.col("short") | pl.col("strand").is_null() | pl.col("end").is_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(
            f"{gtf}: data line {r['line']} has fewer than 9 tab-separated columns; is this a GTF file?"
        )
    bad = rows.filter((pl.col("start") >= pl.col("end")) | (pl.col("start") < 0))  # start is 0-based here
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(
            f"{gtf}: data line {r['line']} ({r['chrom']} {r['feature']}): start {r['start'] + 1} > end "
            f"{r['end']} or start < 1 (GTF: 1-based, inclusive; {bad.height} such lines); fix the coordinates"
        )
    bad = rows.filter(pl.col("gene_id").is_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(
            f"{gtf}: data line {r['line']} ({r['chrom']} {r['feature']} {r['start']}) has no "
            f"gene_id attribute ({bad.height} such lines)"
        )
    bad = rows.filter(
        pl.col("feature").is_in(["exon", "CDS", "transcript"]) & pl.col("transcript_id").is_null()
    )
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(f"{gtf}: data line {r['line']} ({r['feature']}) has no transcript_id attribute")
    bad = rows.filter(~pl.col("strand").is_in(["+", "-"]) & (pl.col("feature") == "gene"))
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(f"{gtf}: data line {r['line']}: strand {r['strand']!r} (expected + or -)")


def read_genes(gtf: str | Path) -> pl.DataFrame:
    """Gene table: gene_id, gene_name, chrom, start, end, strand, gene_type, transcript_id, exons, cds."""
    gtf = str(gtf)
    if "://" not in gtf and not Path(gtf).is_file():
        raise FileNotFoundError(f"GTF {gtf} does not exist")
    try:
        rows = (
            _scan(gtf)
            .with_row_index("line", offset=1)
            .filter(pl.col("feature").is_in(FEATURES))
            .select(
                "line",
                "chrom",
                "feature",
                (pl.col("start") - 1).alias("start"),
                "end",
                "strand",
                pl.col("attributes").is_null().alias("short"),
                _attr("gene_id").alias("gene_id"),
                _attr("transcript_id").alias("transcript_id"),
                _attr("gene_name").alias("gene_name"),
                pl.coalesce(_attr("gene_type"), _attr("gene_biotype")).alias("gene_type"),
                pl.col("attributes").str.contains('tag "Ensembl_canonical"').alias("ensembl_canonical"),
                pl.col("attributes").str.contains('tag "MANE_Select"').alias("mane_select"),
            )
            .collect(engine="streaming")
        )
    except pl.exceptions.PolarsError as err:
        raise ValueError(
            f"{gtf}: not a readable GTF (9 tab-separated columns, integer start/end): {err}"
        ) from err
    _check(rows, gtf)
    rows = rows.drop("short", "line").with_columns(
        _strip_version("gene_id"), _strip_version("transcript_id")
    )
    return _genes_with_canonical(rows)


def _genes_with_canonical(rows: pl.DataFrame) -> pl.DataFrame:
    genes = rows.filter(pl.col("feature") == "gene").select(
        "gene_id",
        pl.coalesce("gene_name", "gene_id").alias("gene_name"),
        "chrom",
        "start",
        "end",
        "strand",
        "gene_type",
    )
    parts = rows.filter(pl.col("feature").is_in(["exon", "CDS"]))
    exonic = (
        parts.filter(pl.col("feature") == "exon")
        .group_by("transcript_id")
        .agg((pl.col("end") - pl.col("start")).sum().alias("exonic_length"))
    )
    canonical = (
        rows.filter(pl.col("feature") == "transcript")
        .select("gene_id", "transcript_id", "ensembl_canonical", "mane_select")
        .join(exonic, on="transcript_id", how="left")
        .sort(
            ["gene_id", "ensembl_canonical", "mane_select", "exonic_length", "transcript_id"],
            descending=[False, True, True, True, False],
            nulls_last=True,
        )
        .group_by("gene_id", maintain_order=True)
        .first()
        .select("gene_id", "transcript_id")
    )

    def intervals(feature: str, name: str) -> pl.DataFrame:
        return (
            parts.filter(pl.col("feature") == feature)
            .join(canonical, on=["gene_id", "transcript_id"], how="semi")
            .sort(["transcript_id", "start"])
            .group_by("transcript_id", maintain_order=True)
            .agg(pl.struct("start", "end").alias(name))
        )

    out = (
        genes.join(canonical, on="gene_id", how="left")
        .join(intervals("exon", "exons"), on="transcript_id", how="left")
        .join(intervals("CDS", "cds"), on="transcript_id", how="left")
    )
    empty = pl.lit([], dtype=out.schema["exons"])
    return out.with_columns(pl.col("exons").fill_null(empty), pl.col("cds").fill_null(empty)).select(
        GENE_COLUMNS
    )
