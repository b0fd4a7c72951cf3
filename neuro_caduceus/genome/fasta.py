"""Random access to a reference FASTA (.fai; plain or bgzip + .gzi), local or through any fsspec URL.

Why not download: an hg38 FASTA is 3 GB and a cohort job reads a few Mb of it, from many workers, often from
a bucket. Local files go through pysam (htslib); URLs through fsspec range reads of only the bytes a
region needs (for bgzip, only the BGZF blocks that hold it, found with the .gzi index).

Contig names: `chr1` and `1` (and `chrM`/`MT`) are matched to whichever the FASTA uses; an explicit
`contig_map` ({caller's name: FASTA name}) wins. Soft-masked (lower-case) bases are returned upper-case.
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from dataclasses import dataclass

import fsspec

from neuro_caduceus.alphabet import clean_sequence


def contig_aliases(name: str) -> list[str]:
    """The name itself, then its other-style spellings (chr1 <-> 1, chrM <-> MT)."""
    bare = name[3:] if name.startswith("chr") else name
    aliases = [name, bare, f"chr{bare}"]
    if bare in ("M", "MT"):
        aliases += ["chrM", "MT", "M"]
    return list(dict.fromkeys(aliases))


class ContigNotFound(KeyError):
    """A contig absent from a FASTA or VCF (str() is the plain message, not KeyError's quoted repr)."""

    def __str__(self) -> str:
        return str(self.args[0])


def resolve_contig(
    name: str, available: dict | list | set, contig_map: dict[str, str] | None, what: str
) -> str:
    """The FASTA/VCF spelling of `name`, or a KeyError naming the contig, the file and some valid names."""
    if contig_map and name in contig_map:
        name = contig_map[name]
        if name in available:
            return name
    else:
        for alias in contig_aliases(name):
            if alias in available:
                return alias
    shown = ", ".join(list(available)[:8]) + (" ..." if len(available) > 8 else "")
    raise ContigNotFound(
        f"contig {name!r} is not in {what} (it has: {shown}); fix the contig names or pass a contig_map"
    )


@dataclass(frozen=True)
class FaiEntry:
    length: int
    offset: int
    line_bases: int
    line_width: int

    def byte(self, pos: int) -> int:
        """Uncompressed byte offset of 0-based base `pos`."""
        return self.offset + (pos // self.line_bases) * self.line_width + pos % self.line_bases


def read_fai(text: str, path: str) -> dict[str, FaiEntry]:
    entries = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 5:
            raise ValueError(f"{path}.fai line {n}: expected 5 tab-separated columns, got {len(cols)}")
        if cols[0] in entries:
            raise ValueError(f"{path}.fai line {n}: sequence {cols[0]!r} repeats; FASTA ids must be unique")
        entries[cols[0]] = FaiEntry(*(int(c) for c in cols[1:5]))
    return entries


def check_fai_fits(path: str) -> None:
    """A plain local FASTA must still be the file its .fai describes (its size, a newline before each record).

    Why: a FASTA edited after indexing is read at the old offsets, giving shifted sequences without error.
    """
    fai = f"{path}.fai"
    with open(path, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b" or not os.path.exists(fai):
            return  # bgzip: its .gzi and htslib's block checks cover it
        with open(fai) as f:
            entries = read_fai(f.read(), path)
        size = os.path.getsize(path)
        stale = None
        for name, e in entries.items():
            end = e.byte(e.length - 1) + 1 if e.length else e.offset
            fh.seek(max(0, e.offset - 1))
            if end > size or (e.offset and fh.read(1) != b"\n"):
                stale = f"record {name!r} is not where the index says"
                break
        last = max(entries.values(), key=lambda e: e.offset, default=None)
        if stale is None and last is not None:
            end = last.byte(last.length - 1) + 1 if last.length else last.offset
            if size > end + (last.line_width - last.line_bases) + 1:
                stale = f"the file has {size - end:,} bytes after the last indexed base"
    if stale:
        raise ValueError(
            f"FASTA {path} does not match its index {fai} ({stale}): the FASTA changed after it was "
            f"indexed, or repeats a record id the index skipped; make the ids unique and re-index it "
            f"(samtools faidx {path}, or delete {fai})"
        )


class _RemoteFasta:
    """FASTA behind an fsspec URL: reads the .fai (and .gzi) once, then only the bytes of each request."""

    def __init__(self, url: str):
        self.url = url
        self.fs, self.path = fsspec.core.url_to_fs(url)
        if not self.fs.exists(f"{self.path}.fai"):
            raise FileNotFoundError(
                f"{url}.fai not found: index the FASTA (samtools faidx / pysam.faidx) "
                "and put the .fai beside it"
            )
        with self.fs.open(f"{self.path}.fai", "r") as f:
            self.index = read_fai(f.read(), url)
        self.gzi = self._read_gzi() if self._is_bgzip() else None
        self._gzi_u = [u for _, u in self.gzi] if self.gzi else []

    def _is_bgzip(self) -> bool:
        return self.fs.cat_file(self.path, start=0, end=4) == b"\x1f\x8b\x08\x04"

    def _read_gzi(self) -> list[tuple[int, int]]:
        if not self.fs.exists(f"{self.path}.gzi"):
            raise FileNotFoundError(
                f"{self.url} is bgzip-compressed but {self.url}.gzi is missing: "
                "re-index it with samtools faidx / pysam.faidx"
            )
        with self.fs.open(f"{self.path}.gzi", "rb") as f:
            raw = f.read()
        (n,) = struct.unpack_from("<Q", raw)
        pairs = struct.unpack_from(f"<{2 * n}Q", raw, 8)
        return [(0, 0)] + [(pairs[2 * i], pairs[2 * i + 1]) for i in range(n)]

    def read_bytes(self, start: int, end: int) -> bytes:
        """Uncompressed bytes [start, end) of the file."""
        if self.gzi is None:
            return self.fs.cat_file(self.path, start=start, end=end)  # one range request, no read-ahead
        first = bisect.bisect_right(self._gzi_u, start) - 1
        last = bisect.bisect_left(self._gzi_u, end)
        c_start, u_start = self.gzi[first]
        c_end = self.gzi[last][0] if last < len(self.gzi) else None  # None: to the end of the file
        data = self.fs.cat_file(self.path, start=c_start, end=c_end)
        out = bytearray()
        while data and len(out) < end - u_start:
            member = zlib.decompressobj(31)
            out += member.decompress(data)
            data = member.unused_data
        return bytes(out[start - u_start : end - u_start])

    def fetch(self, name: str, start: int, end: int) -> str:
        entry = self.index[name]
        if end <= start:
            return ""
        raw = self.read_bytes(entry.byte(start), entry.byte(end - 1) + 1)
        return raw.replace(b"\n", b"").replace(b"\r", b"").decode("ascii")


class Reference:
    """A reference genome: `fetch(chrom, start, end)` (0-based half-open) -> upper-case bases.

    The alphabet policy of `neuro_caduceus.alphabet` applies: IUPAC codes other than N are read as N
    (counted in `ambiguous_replaced`); any other character is an error naming the FASTA and the region.
    """

    def __init__(self, path_or_url: str, contig_map: dict[str, str] | None = None):
        self.path = str(path_or_url)
        self.contig_map = dict(contig_map or {})
        self._reader = _RemoteFasta(self.path) if "://" in self.path else self._open_local(self.path)
        self._lengths = self._read_lengths()
        self.ambiguous_replaced = 0

    @staticmethod
    def _open_local(path: str):
        import pysam

        try:
            fasta = pysam.FastaFile(path)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"cannot open FASTA {path}: {err} (it needs a .fai index beside it, "
                "and a .gzi for bgzip: samtools faidx / pysam.faidx)"
            ) from err
        check_fai_fits(path)
        return fasta

    def _read_lengths(self) -> dict[str, int]:
        if isinstance(self._reader, _RemoteFasta):
            return {name: e.length for name, e in self._reader.index.items()}
        return dict(zip(self._reader.references, self._reader.lengths, strict=True))

    def __reduce__(self):
        return (Reference, (self.path, self.contig_map))

    @property
    def contigs(self) -> list[str]:
        """The FASTA's contigs in file order, under the caller's names where contig_map renames them."""
        renamed = {fasta: name for name, fasta in self.contig_map.items()}
        return [renamed.get(name, name) for name in self._lengths]

    def resolve(self, chrom: str) -> str:
        """The FASTA's name for `chrom` (KeyError naming it when absent)."""
        return resolve_contig(chrom, self._lengths, self.contig_map, f"FASTA {self.path}")

    def length(self, chrom: str) -> int:
        return self._lengths[self.resolve(chrom)]

    def fetch(self, chrom: str, start: int, end: int) -> str:
        name = self.resolve(chrom)
        size = self._lengths[name]
        if not 0 <= start <= end <= size:
            raise ValueError(f"{chrom}:{start}-{end} is outside contig {name} (length {size}) of {self.path}")
        seq, replaced = clean_sequence(self._reader.fetch(name, start, end),
                                       f"FASTA {self.path} {name}:{start + 1}-{end}")
        self.ambiguous_replaced += replaced
        return seq
