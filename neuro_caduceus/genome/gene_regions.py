"""Regions for the command line: from a GTF + gene set, or from a BED file; and the `genes` outputs.

Why here and not in `regions`: the core builds regions from an annotation table; the CLI also takes
user BED files (whose every malformed line must be reported with its file and line) and writes the
regions table + FASTA that other tools read.
"""

from __future__ import annotations

from pathlib import Path

from neuro_caduceus.genome.annotation import read_genes
from neuro_caduceus.genome.fasta import ContigNotFound, contig_aliases
from neuro_caduceus.genome.genesets import load_gene_set, resolve_gene_set
from neuro_caduceus.genome.haplotypes import build_sequence
from neuro_caduceus.genome.regions import Region, RegionSpec, build_regions
from neuro_caduceus.io import atomic_writer

TSV_COLUMNS = ["region_id", "gene_name", "chrom", "strand", "segments", "length", "transcript_id"]


def regions_from_gene_set(gtf: str | Path, gene_set: str | Path, spec: RegionSpec) -> list[Region]:
    """The gene set's regions (in the set's order) from the GTF's canonical transcripts."""
    genes = read_genes(gtf)
    return build_regions(resolve_gene_set(load_gene_set(gene_set), genes), spec)


def read_bed(path: str | Path, orient: str = "transcript") -> list[Region]:
    """BED regions: chrom start end [name] [score] [strand], 0-based half-open, one segment each.

    Region id = name (column 4, unless absent or '.') else chrom:start-end; strand '.' or absent = '+'.
    Header lines (#, track, browser) and blank lines are skipped. Any malformed line is an error naming
    the file and the line; so is a repeated region id (its output records would collide).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BED {path} does not exist")
    regions: list[Region] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        where = f"BED {path} line {n}"
        if len(cols) < 3:
            raise ValueError(f"{where}: expected at least 3 columns (chrom start end), got {len(cols)}")
        try:
            start, end = int(cols[1]), int(cols[2])
        except ValueError:
            raise ValueError(
                f"{where}: start and end must be integers, got {cols[1]!r}, {cols[2]!r}"
            ) from None
        if start < 0:
            raise ValueError(f"{where}: start {start} < 0 (BED is 0-based)")
        if end < start:
            raise ValueError(f"{where}: end {end} < start {start}")
        if end == start:
            raise ValueError(f"{where}: empty region (end == start == {start})")
        name = cols[3] if len(cols) > 3 and cols[3] not in ("", ".") else f"{cols[0]}:{start}-{end}"
        strand = cols[5] if len(cols) > 5 else "."
        if strand not in ("+", "-", "."):
            raise ValueError(f"{where}: strand must be +, - or ., got {strand!r}")
        if name in first_line:
            raise ValueError(f"{where}: region id {name!r} repeats line {first_line[name]}")
        first_line[name] = n
        regions.append(
            Region(name, name, cols[0], "-" if strand == "-" else "+", ((start, end),), orient)  # type: ignore[arg-type]
        )
    if not regions:
        raise ValueError(f"BED {path} holds no regions")
    return regions


def check_contigs(reference, regions: list[Region], vcf: str | None = None) -> None:
    """Every region's contig must be in the FASTA; name the regions (and the VCF records there) if not."""
    absent: dict[str, list[str]] = {}
    for r in regions:
        try:
            reference.resolve(r.chrom)
        except ContigNotFound:
            absent.setdefault(r.chrom, []).append(r.region_id)
    if not absent:
        return
    parts = []
    for chrom, ids in absent.items():
        records = _vcf_records_on(vcf, chrom) if vcf else None
        extra = f"; VCF {vcf} has {records} records there" if records else ""
        parts.append(f"{chrom} (regions {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}{extra})")
    raise ValueError(
        f"contigs absent from FASTA {reference.path} (it has: {', '.join(reference.contigs[:8])}): "
        + "; ".join(parts)
        + ". Use the FASTA the VCF was called against."
    )


def _vcf_records_on(vcf: str, chrom: str) -> int:
    """How many records the VCF index lists on `chrom` (any chr/no-chr spelling); 0 if unknown."""
    import pysam

    try:
        with pysam.VariantFile(vcf) as vf:
            for alias in contig_aliases(chrom):
                if vf.index is not None and alias in vf.index:
                    return sum(1 for _ in vf.fetch(alias))
    except (OSError, ValueError):
        return 0
    return 0


def segments_text(region: Region) -> str:
    """0-based half-open segments as `start-end,start-end`."""
    return ",".join(f"{a}-{b}" for a, b in region.segments)


def output_paths(prefix: str | Path) -> tuple[Path, Path]:
    """The two files `genes` writes: PREFIX.tsv and PREFIX.fa."""
    return Path(f"{prefix}.tsv"), Path(f"{prefix}.fa")


def write_regions(reference, regions: list[Region], prefix: str | Path) -> tuple[Path, Path, int]:
    """PREFIX.tsv (regions table) and PREFIX.fa (oriented reference sequence per region), atomically.

    Returns the two paths and the total bases written.
    """
    tsv, fa = output_paths(prefix)
    bases = 0
    with atomic_writer(fa) as fh_fa, atomic_writer(tsv) as fh_tsv:
        fh_tsv.write("\t".join(TSV_COLUMNS) + "\n")
        for r in regions:
            seq = build_sequence(reference, r, []).sequence
            bases += len(seq)
            row = [r.region_id, r.gene_name, r.chrom, r.strand, segments_text(r), str(r.length),
                   r.transcript_id or ""]
            fh_tsv.write("\t".join(row) + "\n")
            oriented = "reverse-complement" if r.reverse else "forward"
            fh_fa.write(f">{r.region_id} {r.gene_name} {r.chrom}:{segments_text(r)} {r.strand} {oriented}\n")
            fh_fa.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    return tsv, fa, bases
