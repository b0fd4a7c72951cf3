"""Reference access, GTF parsing, gene sets, regions and windows (no Ray, no Hail)."""

# ruff: noqa: E501  (GTF fixture lines are data)

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import fsspec
import polars as pl
import pysam
import pytest

from neuro_caduceus.genome.annotation import read_genes
from neuro_caduceus.genome.fasta import Reference
from neuro_caduceus.genome.genesets import GeneSet, load_gene_set, resolve_gene_set
from neuro_caduceus.genome.haplotypes import build_sequence, reverse_complement
from neuro_caduceus.genome.regions import Region, RegionSpec, build_regions, tile_windows

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> dict:
    """chr1 (soft-masked stretch, N stretch, 60-base lines) and chr2, as plain and bgzip FASTA."""
    rng = random.Random(5)
    chr1 = [rng.choice("ACGT") for _ in range(5000)]
    chr1[1000:1300] = [b.lower() for b in chr1[1000:1300]]
    chr1[2000:2100] = ["N"] * 100
    seqs = {"chr1": "".join(chr1), "chr2": "".join(rng.choice("ACGT") for _ in range(777))}
    out = tmp_path_factory.mktemp("genome")
    plain = out / "g.fa"
    with open(plain, "w") as f:
        for name, seq in seqs.items():
            f.write(f">{name} description\n" + "".join(seq[i:i + 60] + "\n" for i in range(0, len(seq), 60)))
    pysam.faidx(str(plain))
    bgz = out / "g.fa.gz"
    pysam.tabix_compress(str(plain), str(bgz), force=True)
    pysam.faidx(str(bgz))
    return {"seqs": seqs, "plain": plain, "bgz": bgz, "dir": out}


def _intervals(seqs: dict, n: int = 40) -> list[tuple[str, int, int]]:
    rng = random.Random(1)
    out = []
    for _ in range(n):
        name = rng.choice(list(seqs))
        a = rng.randrange(len(seqs[name]))
        out.append((name, a, min(len(seqs[name]), a + rng.randrange(0, 400))))
    return out + [("chr1", 0, 5000), ("chr2", 776, 777), ("chr1", 10, 10)]


@pytest.mark.parametrize("kind", ["plain", "bgz"])
def test_reference_local_and_fsspec_paths_agree_with_the_sequence(genome, kind):
    local = Reference(str(genome[kind]))
    url = Reference(f"file://{genome[kind]}")
    memfs = fsspec.filesystem("memory")
    for suffix in ("", ".fai", ".gzi"):
        src = Path(f"{genome[kind]}{suffix}")
        if src.exists():
            memfs.pipe(f"/ref/{kind}/g.fa{suffix}", src.read_bytes())
    memory = Reference(f"memory:///ref/{kind}/g.fa")
    for chrom, a, b in _intervals(genome["seqs"]):
        expected = genome["seqs"][chrom][a:b].upper()
        assert local.fetch(chrom, a, b) == expected
        assert url.fetch(chrom, a, b) == expected
        assert memory.fetch(chrom, a, b) == expected
    assert local.contigs == ["chr1", "chr2"] and url.length("chr2") == 777


def test_reference_contig_names_and_errors(genome, tmp_path):
    ref = Reference(str(genome["plain"]))
    assert ref.fetch("1", 1000, 1010) == genome["seqs"]["chr1"][1000:1010].upper()  # chr1 <-> 1
    mapped = Reference(str(genome["plain"]), contig_map={"seq_b": "chr2"})
    assert mapped.fetch("seq_b", 0, 5) == genome["seqs"]["chr2"][:5]
    assert mapped.contigs == ["chr1", "seq_b"] and mapped.length("seq_b") == 777
    with pytest.raises(KeyError, match=r"contig 'chr7' is not in FASTA .*g\.fa.*chr1, chr2"):
        ref.fetch("chr7", 0, 1)
    with pytest.raises(ValueError, match="outside contig chr2"):
        ref.fetch("chr2", 700, 800)
    bare = tmp_path / "noindex.fa.gz"
    shutil.copy(genome["bgz"], bare)
    with pytest.raises((FileNotFoundError, ValueError), match="noindex"):
        Reference(f"file://{bare}")
    pickled = __import__("pickle").loads(__import__("pickle").dumps(mapped))
    assert pickled.fetch("seq_b", 0, 5) == genome["seqs"]["chr2"][:5]


GTF_LINES = [
    "#!genome-build GRCh38",
    # gene A (+): two transcripts, the shorter one is Ensembl_canonical
    'chr1\tHAVANA\tgene\t101\t900\t.\t+\t.\tgene_id "ENSG00000000001.5"; gene_type "protein_coding"; gene_name "GA";',
    'chr1\tHAVANA\ttranscript\t101\t900\t.\t+\t.\tgene_id "ENSG00000000001.5"; transcript_id "ENST00000000011.2"; '
    'gene_name "GA"; tag "basic"; tag "Ensembl_canonical";',
    'chr1\tHAVANA\texon\t501\t600\t.\t+\t.\tgene_id "ENSG00000000001.5"; transcript_id "ENST00000000011.2";',
    'chr1\tHAVANA\texon\t101\t200\t.\t+\t.\tgene_id "ENSG00000000001.5"; transcript_id "ENST00000000011.2";',
    'chr1\tHAVANA\tCDS\t151\t200\t.\t+\t0\tgene_id "ENSG00000000001.5"; transcript_id "ENST00000000011.2";',
    'chr1\tHAVANA\tCDS\t501\t550\t.\t+\t1\tgene_id "ENSG00000000001.5"; transcript_id "ENST00000000011.2";',
    'chr1\tHAVANA\ttranscript\t101\t900\t.\t+\t.\tgene_id "ENSG00000000001.5"; transcript_id "ENST00000000012.1";',
    'chr1\tHAVANA\texon\t101\t900\t.\t+\t.\tgene_id "ENSG00000000001.5"; transcript_id "ENST00000000012.1";',
    # gene B (-): MANE_Select decides over the longer transcript
    'chr2\tENSEMBL\tgene\t11\t700\t.\t-\t.\tgene_id "ENSG00000000002.1"; gene_type "lncRNA"; gene_name "GB";',
    'chr2\tENSEMBL\ttranscript\t11\t700\t.\t-\t.\tgene_id "ENSG00000000002.1"; transcript_id "ENST00000000021.1"; '
    'tag "MANE_Select";',
    'chr2\tENSEMBL\texon\t11\t50\t.\t-\t.\tgene_id "ENSG00000000002.1"; transcript_id "ENST00000000021.1";',
    'chr2\tENSEMBL\texon\t601\t700\t.\t-\t.\tgene_id "ENSG00000000002.1"; transcript_id "ENST00000000021.1";',
    'chr2\tENSEMBL\ttranscript\t11\t700\t.\t-\t.\tgene_id "ENSG00000000002.1"; transcript_id "ENST00000000022.1";',
    'chr2\tENSEMBL\texon\t11\t600\t.\t-\t.\tgene_id "ENSG00000000002.1"; transcript_id "ENST00000000022.1";',
    # gene C (+): no tags -> the longest; gene D: same symbol as C (ambiguous symbol)
    'chr1\tX\tgene\t3001\t3500\t.\t+\t.\tgene_id "ENSG00000000003.1"; gene_type "protein_coding"; gene_name "GC";',
    'chr1\tX\ttranscript\t3001\t3500\t.\t+\t.\tgene_id "ENSG00000000003.1"; transcript_id "ENST00000000031.1";',
    'chr1\tX\texon\t3001\t3100\t.\t+\t.\tgene_id "ENSG00000000003.1"; transcript_id "ENST00000000031.1";',
    'chr1\tX\ttranscript\t3001\t3500\t.\t+\t.\tgene_id "ENSG00000000003.1"; transcript_id "ENST00000000032.1";',
    'chr1\tX\texon\t3001\t3300\t.\t+\t.\tgene_id "ENSG00000000003.1"; transcript_id "ENST00000000032.1";',
    'chr2\tX\tgene\t701\t760\t.\t+\t.\tgene_id "ENSG00000000004.1"; gene_type "misc_RNA"; gene_name "GC";',
]


@pytest.fixture(scope="module")
def gtf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gtf") / "genes.gtf.gz"
    path.write_bytes(gzip.compress(("\n".join(GTF_LINES) + "\n").encode()))
    return path


def test_read_genes_canonical_transcript_coordinates_and_versions(gtf):
    genes = read_genes(gtf)
    rows = {r["gene_id"]: r for r in genes.iter_rows(named=True)}
    a, b, c = rows["ENSG00000000001"], rows["ENSG00000000002"], rows["ENSG00000000003"]
    assert (a["chrom"], a["start"], a["end"], a["strand"], a["gene_type"]) == ("chr1", 100, 900, "+",
                                                                                "protein_coding")
    assert a["transcript_id"] == "ENST00000000011"  # Ensembl_canonical, though shorter
    assert a["exons"] == [{"start": 100, "end": 200}, {"start": 500, "end": 600}]
    assert a["cds"] == [{"start": 150, "end": 200}, {"start": 500, "end": 550}]
    assert b["transcript_id"] == "ENST00000000021" and b["strand"] == "-"  # MANE_Select over the longer
    assert c["transcript_id"] == "ENST00000000032" and c["cds"] == []  # longest exonic length
    assert rows["ENSG00000000004"]["exons"] == []  # a gene without transcripts
    plain = gtf.with_suffix("")
    plain.write_bytes(gzip.decompress(gtf.read_bytes()))
    assert read_genes(plain).equals(genes)


def test_read_genes_bad_lines_name_the_file_and_line(tmp_path):
    short = tmp_path / "short.gtf"
    short.write_text(GTF_LINES[1] + "\nchr1\tX\tgene\t1\t10\t.\t+\n")
    with pytest.raises(ValueError, match=r"short\.gtf: .*line 2 .*fewer than 9"):
        read_genes(short)
    no_id = tmp_path / "noid.gtf"
    no_id.write_text(GTF_LINES[1] + '\nchr1\tX\tgene\t1\t10\t.\t+\t.\tgene_name "Z";\n')
    with pytest.raises(ValueError, match=r"noid\.gtf: data line 2 .*no gene_id"):
        read_genes(no_id)


def test_gene_sets_resolve_in_order_and_list_every_problem(gtf, tmp_path):
    genes = read_genes(gtf)
    out = resolve_gene_set(GeneSet(name="s", genes=["GB", "ENSG00000000001.99", "ENSG00000000003"]), genes)
    assert out["gene_id"].to_list() == ["ENSG00000000002", "ENSG00000000001", "ENSG00000000003"]
    with pytest.raises(ValueError) as err:
        resolve_gene_set(GeneSet(name="s", genes=["GA", "NOPE", "gb", "GC", "ENSG00000000001"]), genes)
    msg = str(err.value)
    assert "unknown: NOPE, gb (did you mean GB?)" in msg
    assert "ambiguous: GC -> ENSG00000000003, ENSG00000000004" in msg
    assert "repeated: ENSG00000000001 (same gene as GA)" in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngenes: [GA]\ncolour: red\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid gene set \(colour"):
        load_gene_set(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ngenes: [GA\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        load_gene_set(broken)
    example = load_gene_set(REPO / "configs" / "genesets" / "example_neuro.yaml")
    assert "APOE" in example.genes and "illustrative" in (example.description or "")


def test_regions_modes_flank_and_missing_cds(gtf):
    genes = read_genes(gtf).filter(pl.col("gene_id").is_in(["ENSG00000000001", "ENSG00000000002"]))
    body = build_regions(genes, RegionSpec("gene_body", flank=150))
    assert body[0].segments == ((0, 1050),)  # start clipped at 0
    exons = build_regions(genes, RegionSpec("exons", flank=10, orient="reference"))
    # the flank applies at every exon boundary (internal splice sites inside the region), start clipped at 0
    assert exons[0].segments == ((90, 210), (490, 610)) and exons[0].length == 240
    assert exons[1].segments == ((0, 60), (590, 710)) and not exons[1].reverse
    wide = build_regions(genes[:1], RegionSpec("exons", flank=150, orient="reference"))
    assert wide[0].segments == ((0, 750),)  # flanked exons that meet are merged: no base twice
    assert build_regions(genes, RegionSpec("exons"))[1].reverse
    assert build_regions(genes[:1], RegionSpec("cds"))[0].segments == ((150, 200), (500, 550))
    assert build_regions(genes[:1], RegionSpec("cds", flank=3))[0].segments == ((147, 203), (497, 553))
    with pytest.raises(ValueError, match=r"no CDS in the canonical transcript of GB \(ENSG00000000002\)"):
        build_regions(genes, RegionSpec("cds"))
    with pytest.raises(ValueError, match="regions.mode"):
        RegionSpec("introns")


def test_windows_tile_the_region_in_reference_coordinates(genome):
    region = Region("G", "G", "chr1", "-", ((100, 350), (400, 520), (900, 1000)), "transcript")
    windows = tile_windows(region, 128)
    assert [w.length for w in windows] == [128, 128, 128, 86]
    covered = [p for w in windows for a, b in w.segments for p in range(a, b)]
    assert covered == [p for a, b in region.segments for p in range(a, b)]  # exactly once, in order
    assert windows[1].segments == ((228, 350), (400, 406)) and all(w.reverse for w in windows)
    overlapping = tile_windows(region, 200, 150)
    assert [w.segments[0][0] for w in overlapping] == [100, 250, 450]
    assert overlapping[-1].segments[-1][1] == 1000
    assert len(tile_windows(region, 10_000)) == 1
    with pytest.raises(ValueError, match="stride 300 > window 200"):
        tile_windows(region, 200, 300)
    for window, stride in ((0, None), (100, 0), (-5, -5)):
        with pytest.raises(ValueError, match="must be positive"):
            tile_windows(region, window, stride)
    ref = Reference(str(genome["plain"]))
    forward = Region("G", "G", "chr1", "-", region.segments, "reference")
    plus = build_sequence(ref, forward, []).sequence
    assert build_sequence(ref, region, []).sequence == reverse_complement(plus)  # exact RC of the + strand
    assert "".join(build_sequence(ref, w, []).sequence for w in tile_windows(forward, 128)) == plus


def test_read_genes_on_the_synthetic_gtf(tmp_path):
    """The demo's GTF (versioned ids, a second non-canonical transcript, UTR lines) against its generator."""
    import numpy as np

    from neuro_caduceus.synthetic import gene_layout, write_gtf

    _, made = gene_layout(np.random.default_rng(11), 5)
    write_gtf(tmp_path / "genes.gtf.gz", made)
    genes = {r["gene_id"]: r for r in read_genes(tmp_path / "genes.gtf.gz").iter_rows(named=True)}
    assert sorted(genes) == sorted(g.gene_id for g in made)
    for g in made:
        row = genes[g.gene_id]
        assert (row["gene_name"], row["chrom"], row["start"], row["end"], row["strand"]) == (
            g.gene_name, g.chrom, g.start, g.end, g.strand)
        assert [(e["start"], e["end"]) for e in row["exons"]] == list(g.exons)
        cds = [(max(a, g.cds[0]), min(b, g.cds[1])) for a, b in g.exons if max(a, g.cds[0]) < min(b, g.cds[1])]
        assert [(e["start"], e["end"]) for e in row["cds"]] == cds
        assert row["transcript_id"] == f"ENST{int(g.gene_id[4:]):011d}"  # the Ensembl_canonical one


def test_bgzip_over_fsspec_reads_across_many_blocks(tmp_path):
    """A contig spanning several BGZF blocks: range reads through the .gzi give the same bases as pysam."""
    rng = random.Random(9)
    seq = "".join(rng.choice("ACGTacgtN") for _ in range(300_000))
    plain = tmp_path / "big.fa"
    plain.write_text(">MT\n" + "".join(seq[i:i + 61] + "\n" for i in range(0, len(seq), 61)))
    bgz = tmp_path / "big.fa.gz"
    pysam.tabix_compress(str(plain), str(bgz), force=True)
    pysam.faidx(str(bgz))
    assert len((tmp_path / "big.fa.gz.gzi").read_bytes()) > 8 + 16 * 3  # several blocks indexed
    remote, local = Reference(f"file://{bgz}"), Reference(str(bgz))
    for a in [0, 65_000, 65_279, 131_000, 299_000, *(rng.randrange(300_000) for _ in range(20))]:
        b = min(300_000, a + rng.choice([1, 500, 70_000]))
        assert remote.fetch("chrM", a, b) == local.fetch("MT", a, b) == seq[a:b].upper()  # chrM <-> MT


def test_reference_without_index_says_how_to_make_one(tmp_path):
    plain = tmp_path / "x.fa"
    plain.write_text(">chr1\nACGTACGT\n")
    with pytest.raises(FileNotFoundError, match=r"x\.fa\.fai not found: .*faidx"):
        Reference(f"file://{plain}")
    assert Reference(str(plain)).fetch("1", 2, 6) == "GTAC"  # local plain files are indexed on open
