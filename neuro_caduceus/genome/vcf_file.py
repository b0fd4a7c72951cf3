"""Checks of a local VCF file before htslib, cyvcf2 or Hail read it.

Why: htslib seeking into a bgzipped VCF truncated inside a data block, through an index built before the
truncation, can block forever; cyvcf2 reports a damaged header as a bare "cannot parse VCF header"; Hail
answers a truncated file with a Java stack. Each damage is cheap to see up front and name with its cure.
"""

from __future__ import annotations

import gzip
import os
import zlib

# The 28-byte empty BGZF block bgzip writes last (SAM/BAM spec, section 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def check_bgzf_eof(path: str, what: str = "VCF") -> None:
    """A gzip-compressed file must end with the BGZF end-of-file block (else it was truncated)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - len(BGZF_EOF)))
        tail = f.read()
    if tail != BGZF_EOF:
        raise ValueError(
            f"{what} {path} is truncated or not bgzip-compressed (no BGZF end-of-file block): "
            "re-create it with bgzip, then re-index it (tabix -f -p vcf)"
        )


INDEX_SAMPLE_CONTIGS = 8  # contigs of the index whose first record is looked up (a sample of its offsets)


def check_index_matches(path: str) -> None:
    """The index (.tbi / .csi) must describe this file: its first record is found through the index, and
    each sampled contig of the index leads to a record of that contig.

    Why content, not timestamps: an index of another (newer) file gives "no records in the regions" and
    every subject the reference, while a copied file whose index is a few microseconds older is fine.
    """
    import pysam

    index = next((f"{path}{s}" for s in (".tbi", ".csi") if os.path.exists(f"{path}{s}")), None)
    if index is None:
        return
    problem = None
    try:
        with pysam.VariantFile(path) as vf:
            first = next(iter(vf), None)
    except (OSError, ValueError):
        return  # the file itself cannot be read: the readers report that, the index is not to blame
    try:
        with pysam.VariantFile(path) as vf:
            if first is not None and not any(r.pos == first.pos for r in vf.fetch(first.chrom, first.pos - 1,
                                                                                  first.pos)):
                problem = f"its first record {first.chrom}:{first.pos} is not found through the index"
            for contig in list(vf.index or [])[:INDEX_SAMPLE_CONTIGS] if problem is None else []:
                record = next(vf.fetch(contig), None)
                if record is not None and record.chrom != contig:
                    problem = f"the index's contig {contig} leads to a record of {record.chrom}"
                    break
    except (OSError, ValueError, StopIteration) as err:
        problem = f"reading through the index fails: {' '.join(str(err).split())[:200]}"
    if problem:
        is_older = os.path.getmtime(index) < os.path.getmtime(path)
        older = "; the index is older than the file" if is_older else ""
        raise ValueError(
            f"index {index} does not match {path} ({problem}{older}): it belongs to another version of the "
            f"file; re-index it (tabix -f -p vcf {path})"
        )


def header_samples(path: str) -> list[str]:
    """Sample ids of a VCF's #CHROM line; an error names a missing line or a repeated id."""
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if line.startswith("#CHROM"):
                    return _unique_samples(path, n, line.rstrip("\r\n").split("\t")[9:])
                if not line.startswith("##"):
                    break
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"VCF {path}: the header cannot be read ({err}); the file is damaged") from err
    raise ValueError(f"VCF {path}: no #CHROM header line before the data; is this a VCF file?")


def _unique_samples(path: str, line: int, samples: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for column, name in enumerate(samples, 10):
        if name in seen:
            raise ValueError(
                f"VCF {path} line {line}: sample id {name!r} appears twice in the #CHROM line (columns "
                f"{seen[name]} and {column}); make the ids unique (bcftools reheader -s)"
            )
        seen[name] = column
    return samples


def check_vcf(path: str, need_index: bool = False) -> None:
    """Everything above, for a local VCF / BCF (URLs are left to htslib)."""
    if "://" in path:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VCF {path} does not exist")
    if need_index and not (os.path.exists(f"{path}.tbi") or os.path.exists(f"{path}.csi")):
        raise FileNotFoundError(
            f"VCF {path} has no index ({path}.tbi or .csi): bgzip it and run "
            "`tabix -p vcf` (or pysam.tabix_index) first"
        )
    if _is_gzip(path):
        check_bgzf_eof(path)
    if not path.endswith(".bcf"):
        header_samples(path)
    check_index_matches(path)
