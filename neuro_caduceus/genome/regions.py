"""Gene regions (what part of a gene is embedded) and their windows (what one model call sees).

Rules:
- `gene_body`: [start - flank, end + flank). `exons` / `cds`: the canonical transcript's exons / CDS pieces,
  each extended by the flank on both sides (so every internal exon boundary keeps its splice sites and the
  near-intronic bases), pieces that then touch or overlap merged, concatenated. Starts are clipped at 0.
- `orient: transcript` reverse-complements minus-strand genes; `orient: reference` keeps the + strand.
- Windows tile the region's concatenated coordinate from its left (reference) end: `window` bases every
  `stride` bases, the last one ending at the region's end (shorter). Windows cover the same reference
  intervals whatever the orientation (orientation only reverse-complements each window's sequence), so for
  an RC-equivariant model both orientations give the same pooled sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from neuro_caduceus.tiling import tile

Mode = Literal["gene_body", "exons", "cds"]
Orient = Literal["transcript", "reference"]
Segments = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RegionSpec:
    mode: Mode = "gene_body"
    flank: int = 0
    orient: Orient = "transcript"

    def __post_init__(self) -> None:
        if self.mode not in ("gene_body", "exons", "cds"):
            raise ValueError(f"regions.mode must be gene_body, exons or cds, got {self.mode!r}")
        if self.orient not in ("transcript", "reference"):
            raise ValueError(f"regions.orient must be transcript or reference, got {self.orient!r}")
        if self.flank < 0:
            raise ValueError(f"regions.flank must be >= 0, got {self.flank}")


def _length(segments: Segments) -> int:
    return sum(end - start for start, end in segments)


@dataclass(frozen=True)
class Region:
    """One gene's region: reference pieces (ascending, 0-based half-open) and the orientation to build."""

    region_id: str
    gene_name: str
    chrom: str
    strand: str
    segments: Segments
    orient: Orient = "transcript"
    transcript_id: str | None = None

    @property
    def reverse(self) -> bool:
        return self.strand == "-" and self.orient == "transcript"

    @property
    def length(self) -> int:
        return _length(self.segments)


@dataclass(frozen=True)
class Window:
    """A stretch of a region embedded in one model call; `segments` are the reference pieces it covers."""

    region_id: str
    index: int
    chrom: str
    segments: Segments
    reverse: bool = False

    @property
    def length(self) -> int:
        return _length(self.segments)


def _merge(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(pieces):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _segments(gene: dict, spec: RegionSpec) -> list[tuple[int, int]]:
    if spec.mode == "gene_body":
        pieces = [(gene["start"], gene["end"])]
    else:
        pieces = [(p["start"], p["end"]) for p in gene["exons" if spec.mode == "exons" else "cds"]]
    return _merge([(max(0, start - spec.flank), end + spec.flank) for start, end in pieces])


def build_regions(genes: pl.DataFrame, spec: RegionSpec) -> list[Region]:
    """One Region per gene row, in row order; genes without exons/CDS in those modes are one error."""
    regions, empty = [], []
    for gene in genes.iter_rows(named=True):
        segments = _segments(gene, spec)
        if not segments:
            empty.append(f"{gene['gene_name']} ({gene['gene_id']})")
            continue
        regions.append(
            Region(
                gene["gene_id"],
                gene["gene_name"],
                gene["chrom"],
                gene["strand"],
                tuple(segments),
                spec.orient,
                gene.get("transcript_id"),
            )
        )
    if empty:
        raise ValueError(
            f"regions.mode {spec.mode}: no {'CDS' if spec.mode == 'cds' else 'exons'} in the "
            f"canonical transcript of {', '.join(empty)}; use mode gene_body or drop these genes"
        )
    return regions


def _slice(segments: Segments, start: int, end: int) -> Segments:
    """The reference pieces of concatenated coordinates [start, end)."""
    out, offset = [], 0
    for seg_start, seg_end in segments:
        size = seg_end - seg_start
        lo, hi = max(start, offset), min(end, offset + size)
        if lo < hi:
            out.append((seg_start + lo - offset, seg_start + hi - offset))
        offset += size
    return tuple(out)


def tile_windows(region: Region, window: int, stride: int | None = None) -> list[Window]:
    """Windows of `window` bases every `stride` (default: window) over the region, in reference order."""
    stride = window if stride is None else stride
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive (window={window}, stride={stride})")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would leave bases out of every window")
    return [
        Window(region.region_id, i, region.chrom, _slice(region.segments, start, end), region.reverse)
        for i, (start, end) in enumerate(tile(region.length, window, stride))
    ]
