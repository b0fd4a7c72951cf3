"""`neuro-caduceus genes` and `personalize` end to end, against `bcftools consensus` (bundled in pysam).

The generated case: two contigs (a soft-masked stretch, an N stretch inside a region), a VCF with SNVs,
MNVs, insertions, deletions, complex replacements, phased and unphased hets, hom-alt, missing and
half-missing calls, and an overlapping pair on one haplotype; three BED regions (one on the minus strand)
and a GTF whose two genes have exon boundaries between variants. Every written record must equal
bcftools consensus of that region (case-insensitive); the missing-call count must equal the count of
`.` alleles in the genotypes the generator wrote.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pysam
import pytest
from haplotype_oracle import bcftools_consensus, random_variant
from pysam import bcftools
from typer.testing import CliRunner

from neuro_caduceus.cli import app
from neuro_caduceus.genome.personalize import missing_gt_fields

SAMPLES = [f"S{i}" for i in range(1, 9)]
LENGTHS = {"chr1": 5200, "chr2": 3000}
# (name, chrom, start, end, strand) in BED coordinates; variants stay 20 bases inside each region
BED = [("R1", "chr1", 100, 1500, "+"), ("R2", "chr1", 1700, 3600, "-"), ("R3", "chr2", 200, 2600, "."),
       ("R4", "chr2", 2700, 2950, "+")]  # R4: no variants, every sample carries the reference
GENOTYPES = ["0/0"] * 5 + ["0/1", "1/0", "0|1", "1|0", "1/1", "1|1", "./.", ".|1", "1|.", "0/.", ".|."]

runner = CliRunner()


def _complement(seq: str) -> str:
    pairs = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}
    return "".join(pairs[b] for b in reversed(seq.upper()))


def _genome(rng: random.Random) -> dict[str, str]:
    seqs = {}
    for chrom, length in LENGTHS.items():
        bases = [rng.choice("ACGT") for _ in range(length)]
        bases[400:700] = [b.lower() for b in bases[400:700]]  # soft-masked repeat inside R1 / R3
        if chrom == "chr1":
            bases[2400:2500] = ["N"] * 100  # N stretch inside R2
        seqs[chrom] = "".join(bases)
    return seqs


def _records(rng: random.Random, seqs: dict[str, str]) -> list[tuple[str, int, str, str, list[str]]]:
    """(chrom, pos 1-based, REF, ALT, genotypes) sorted; plus an overlapping deletion + SNV on S1 hap 1."""
    kinds = ["snv", "mnv", "ins", "del", "complex", "snv"]
    records = []
    for _, chrom, start, end, _ in BED[:3]:
        upper, pos0 = seqs[chrom].upper(), start + 20
        while pos0 < end - 40:
            if upper[pos0 : pos0 + 10].count("N"):
                pos0 += 10
                continue
            ref, alt = random_variant(kinds[len(records) % len(kinds)], upper, pos0, rng)
            records.append((chrom, pos0 + 1, ref, alt, [rng.choice(GENOTYPES) for _ in SAMPLES]))
            pos0 += len(ref) + rng.randint(15, 70)
    upper, d0 = seqs["chr2"].upper(), 2560  # inside R3, past the generated variants (end - 40)
    assert all(p < d0 - 10 for c, p, *_ in records if c == "chr2")
    records.append(("chr2", d0 + 1, upper[d0 : d0 + 6], upper[d0], ["1|0", "1/1"] + ["0/0"] * 6))
    snv = "T" if upper[d0 + 2] != "T" else "G"
    records.append(("chr2", d0 + 3, upper[d0 + 2], snv, ["1|0", "1/1"] + ["0/0"] * 6))
    return sorted(records, key=lambda r: (list(LENGTHS).index(r[0]), r[1]))


def _write_fasta(path: Path, seqs: dict[str, str]) -> Path:
    path.write_text("".join(f">{c}\n" + "".join(s[i : i + 60] + "\n" for i in range(0, len(s), 60))
                            for c, s in seqs.items()))
    pysam.faidx(str(path))
    return path


def _write_vcf(path: Path, records, index: bool = True) -> Path:
    lines = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={n}>" for c, n in LENGTHS.items()),
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "#" + "\t".join(["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                              *SAMPLES])]
    lines += ["\t".join([c, str(p), ".", r, a, ".", "PASS", ".", "GT", *g]) for c, p, r, a, g in records]
    path.write_text("\n".join(lines) + "\n")
    if not index:
        gz = Path(f"{path}.gz")
        pysam.tabix_compress(str(path), str(gz), force=True)
        return gz
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return Path(f"{path}.gz")


def _exons(records, chrom: str, start: int, end: int, n: int) -> list[tuple[int, int]]:
    """n exons in [start, end) whose boundaries fall between variants (never cutting a REF span)."""
    spans = [(p - 1, p - 1 + len(r)) for c, p, r, _, _ in records if c == chrom and start <= p - 1 < end]
    gaps = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)
            if b_start - a_end > 8]
    cuts = [gaps[len(gaps) * k // (2 * n)] for k in range(1, 2 * n - 1)]
    bounds = [start] + [(a + b) // 2 for a, b in cuts] + [end]
    return [(bounds[2 * i], bounds[2 * i + 1]) for i in range(n)]


def _write_gtf(path: Path, genes: list[tuple[str, str, str, list[tuple[int, int]]]]) -> Path:
    lines = []
    for gene_id, name, strand, exons in genes:
        attrs = f'gene_id "{gene_id}.1"; gene_name "{name}"; gene_type "protein_coding";'
        tx = f'{attrs} transcript_id "T{gene_id}.1"; tag "Ensembl_canonical";'
        lines.append(f"chr1\tT\tgene\t{exons[0][0] + 1}\t{exons[-1][1]}\t.\t{strand}\t.\t{attrs}")
        lines.append(f"chr1\tT\ttranscript\t{exons[0][0] + 1}\t{exons[-1][1]}\t.\t{strand}\t.\t{tx}")
        for a, b in exons:
            lines.append(f"chr1\tT\texon\t{a + 1}\t{b}\t.\t{strand}\t.\t{tx}")
        cds = exons[1:]  # CDS: every exon but the first
        for a, b in cds:
            lines.append(f"chr1\tT\tCDS\t{a + 1}\t{b}\t.\t{strand}\t0\t{tx}")
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    rng = random.Random(7)
    out = tmp_path_factory.mktemp("genome_cli")
    seqs = _genome(rng)
    records = _records(rng, seqs)
    fasta = _write_fasta(out / "ref.fa", seqs)
    vcf = _write_vcf(out / "calls.vcf", records)
    bed = out / "regions.bed"
    bed.write_text("track name=test\n" + "".join(f"{c}\t{a}\t{b}\t{n}\t0\t{s}\n" for n, c, a, b, s in BED))
    gtf = _write_gtf(out / "genes.gtf.gz", [
        ("ENSG1", "GENEA", "+", _exons(records, "chr1", 100, 1500, 3)),
        ("ENSG2", "GENEB", "-", _exons(records, "chr1", 1700, 3600, 4)),
    ])
    geneset = out / "set.yaml"
    geneset.write_text("name: test\ngenes: [GENEB, GENEA]\n")
    return {"out": out, "seqs": seqs, "records": records, "fasta": fasta, "vcf": vcf, "bed": bed,
            "gtf": gtf, "geneset": geneset}


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _read_fasta(path: Path) -> dict[str, str]:
    with pysam.FastxFile(str(path)) as fh:
        return {r.name: r.sequence or "" for r in fh}


def _oracle(case, chrom: str, segments, sample: str, hap: str) -> str:
    return bcftools_consensus(case["out"], chrom, case["seqs"][chrom], segments, case["vcf"], sample, hap)


def _personalize(case, name: str, *args: str) -> tuple[dict[str, str], dict]:
    out = case["out"] / f"{name}.fa"
    result = _invoke("personalize", "--fasta", case["fasta"], "--vcf", case["vcf"], "--out", out, *args)
    assert result.exit_code == 0, result.output
    return _read_fasta(out), json.loads((case["out"] / f"{name}.summary.json").read_text())


def _missing_calls(records, regions) -> int:
    """Independent count: calls with a '.' allele among the records whose REF span overlaps a region."""
    n = 0
    for chrom, pos, ref, _, gts in records:
        if any(c == chrom and pos - 1 < b and pos - 1 + len(ref) > a for c, a, b in regions):
            n += sum("." in g for g in gts)
    return n


def test_diploid_equals_bcftools_and_summary(case):
    records, summary = _personalize(case, "diploid", "--regions", case["bed"], "--strategy", "diploid")
    names = [f"{s}|{r[0]}|hap{h}" for s in SAMPLES for r in BED for h in (1, 2)]
    assert list(records) == names  # sample order, then region order, then haplotype
    for name, chrom, a, b, strand in BED:
        for sample in SAMPLES:
            for hap in ("1", "2"):
                expected = _oracle(case, chrom, [(a, b)], sample, hap)
                if strand == "-":
                    expected = _complement(expected)
                assert records[f"{sample}|{name}|hap{hap}"].upper() == expected, (name, sample, hap)
    assert summary["samples"] == 8 and summary["regions"] == 4
    assert summary["haplotypes_written"] == 64
    assert summary["haplotypes_built"] <= 3 * 17 + 1  # R4's reference is built once for its 16 haplotypes
    assert summary["variants"]["skipped_overlap"] == 3  # the SNV inside the deletion: S1 hap1, S2 both
    assert summary["variants"]["rejected_ref_mismatch"] == 0
    assert summary["missing_calls"] == _missing_calls(case["records"], [(c, a, b) for _, c, a, b, _ in BED])
    assert summary["vcf_records_in_regions"] == len(case["records"])


def test_consensus_equals_bcftools_alt_and_reference_strategy(case):
    records, summary = _personalize(case, "consensus", "--regions", case["bed"], "--strategy", "consensus",
                                    "--orient", "reference")
    assert len(records) == 32 and summary["haplotypes_written"] == 32
    for name, chrom, a, b, _ in BED:
        for sample in SAMPLES:
            expected = _oracle(case, chrom, [(a, b)], sample, "A")
            assert records[f"{sample}|{name}|hap1"].upper() == expected, (name, sample)
    ref_records, summary = _personalize(case, "reference", "--regions", case["bed"], "--strategy",
                                        "reference")
    for name, chrom, a, b, strand in BED:
        seq = case["seqs"][chrom][a:b].upper()
        for sample in SAMPLES:
            assert ref_records[f"{sample}|{name}|hap1"] == (_complement(seq) if strand == "-" else seq)
    assert summary["haplotypes_built"] == 4 and summary["variants"]["applied"] == 0


def test_bcf_input_and_two_workers_give_the_same_records(case):
    bcf = case["out"] / "calls.bcf"
    with pysam.VariantFile(str(case["vcf"])) as src:
        with pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
            for rec in src:
                dst.write(rec)
    bcftools.index(str(bcf))
    from_vcf, expected = _personalize(case, "from_vcf", "--regions", case["bed"], "--strategy", "diploid")
    out = case["out"] / "from_bcf.fa"
    result = _invoke("personalize", "--fasta", case["fasta"], "--vcf", bcf, "--regions", case["bed"],
                     "--strategy", "diploid", "--out", out, "--workers", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads((case["out"] / "from_bcf.summary.json").read_text())
    assert _read_fasta(out) == from_vcf
    assert summary["missing_calls"] == expected["missing_calls"] > 0
    assert summary["variants"] == expected["variants"]


def test_minus_strand_is_the_exact_reverse_complement(case):
    transcript, _ = _personalize(case, "orient_t", "--regions", case["bed"], "--strategy", "diploid")
    reference, _ = _personalize(case, "orient_r", "--regions", case["bed"], "--strategy", "diploid",
                                "--orient", "reference")
    minus_records = [key for key in reference if key.split("|")[1] == "R2"]
    assert minus_records and len(minus_records) < len(reference)  # both strands are compared
    for key, seq in reference.items():
        assert transcript[key] == (_complement(seq) if key in minus_records else seq), key


def test_gene_set_exons_equal_bcftools_and_samples_file(case):
    samples = case["out"] / "samples.txt"
    samples.write_text("S5\nS2\n")
    records, summary = _personalize(case, "genes_exons", "--gtf", case["gtf"], "--genes", case["geneset"],
                                    "--mode", "exons", "--strategy", "diploid", "--samples", samples)
    assert [k.rsplit("|", 1)[0] for k in records][::2] == ["S5|ENSG2", "S5|ENSG1", "S2|ENSG2", "S2|ENSG1"]
    exons = {"ENSG1": _exons(case["records"], "chr1", 100, 1500, 3),
             "ENSG2": _exons(case["records"], "chr1", 1700, 3600, 4)}
    for sample in ("S5", "S2"):
        for gene, segments in exons.items():
            for hap in ("1", "2"):
                expected = _oracle(case, "chr1", segments, sample, hap)
                expected = _complement(expected) if gene == "ENSG2" else expected
                assert records[f"{sample}|{gene}|hap{hap}"].upper() == expected, (sample, gene, hap)
    assert summary["samples"] == 2


def test_genes_command_writes_regions_table_and_fasta(case):
    prefix = case["out"] / "regions_cds"
    result = _invoke("genes", "--gtf", case["gtf"], "--genes", case["geneset"], "--fasta", case["fasta"],
                     "--mode", "cds", "--flank", "5", "--out", prefix)
    assert result.exit_code == 0, result.output
    assert "2 regions" in result.output
    rows = [line.split("\t") for line in Path(f"{prefix}.tsv").read_text().splitlines()]
    assert rows[0] == ["region_id", "gene_name", "chrom", "strand", "segments", "length", "transcript_id"]
    fasta = _read_fasta(Path(f"{prefix}.fa"))
    assert list(fasta) == ["ENSG2", "ENSG1"]  # the gene set's order
    chrom1 = case["seqs"]["chr1"].upper()
    for gene, strand, segments in (
        ("ENSG1", "+", _exons(case["records"], "chr1", 100, 1500, 3)[1:]),
        ("ENSG2", "-", _exons(case["records"], "chr1", 1700, 3600, 4)[1:]),
    ):
        # direct computation: every CDS piece widened by the flank on both sides (splice sites of every
        # internal exon boundary inside the region), read off the + strand, reverse-complemented if minus
        segments = [[a - 5, b + 5] for a, b in segments]
        assert all(b < c for (_, b), (c, _) in zip(segments, segments[1:], strict=False))  # none merge here
        seq = "".join(chrom1[a:b] for a, b in segments)
        assert fasta[gene] == (_complement(seq) if strand == "-" else seq)
        row = next(r for r in rows if r[0] == gene)
        assert row[3:7] == [strand, ",".join(f"{a}-{b}" for a, b in segments), str(len(seq)), f"T{gene}"]
    assert not list(case["out"].glob(".regions_cds*"))  # no temp files left behind


def test_ref_mismatch_counted_or_strict_error(case):
    seqs = dict(case["seqs"])
    chrom, pos, ref, alt, gts = next(r for r in case["records"] if len(r[2]) == 1 and r[0] == "chr2"
                                     and any("1" in g for g in r[4]))
    base = "A" if ref.upper() != "A" else "C"
    seqs[chrom] = seqs[chrom][: pos - 1] + base + seqs[chrom][pos:]
    fasta = _write_fasta(case["out"] / "mismatch_ref.fa", seqs)
    _, summary = _personalize(case, "mismatch", "--fasta", fasta, "--regions", case["bed"],
                              "--strategy", "diploid")
    assert summary["variants"]["rejected_ref_mismatch"] == sum(g.count("1") for g in gts)
    assert summary["rejected_ref_mismatch_examples"] == [f"{chrom}:{pos}:{ref}:{alt}"]
    result = _invoke("personalize", "--fasta", fasta, "--vcf", case["vcf"], "--regions", case["bed"],
                     "--strategy", "diploid", "--out", case["out"] / "strict.fa", "--strict-ref")
    assert result.exit_code == 2 and f"REF mismatch at {chrom}:{pos}" in result.output
    assert not (case["out"] / "strict.fa").exists()


def _error(case, *args: str, **swap: str):
    base = {"--fasta": case["fasta"], "--vcf": case["vcf"], "--regions": case["bed"],
            "--strategy": "diploid", "--out": case["out"] / "err.fa"}
    base.update({f"--{k.replace('_', '-')}": v for k, v in swap.items()})
    flat = [str(x) for kv in base.items() for x in kv if kv[1] is not None] + list(args)
    result = runner.invoke(app, ["personalize", *flat])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("line, message", [
    ("chr1\t500\t400\tX\n", "line 2: end 400 < start 500"),
    ("chr1\tten\t400\n", "line 2: start and end must be integers"),
    ("chr1\t100\n", "line 2: expected at least 3 columns"),
    ("chr1\t100\t200\tX\t0\t*\n", "line 2: strand must be"),
])
def test_bad_bed_lines_name_file_and_line(case, line, message):
    bed = case["out"] / "bad.bed"
    bed.write_text("# header\n" + line)
    result = _error(case, regions=str(bed))
    assert result.exit_code == 2 and message in result.output and "bad.bed" in result.output


def test_input_errors_exit_2_with_a_clear_message(case):
    unindexed = _write_vcf(case["out"] / "noindex.vcf", case["records"], index=False)
    result = _error(case, vcf=str(unindexed))
    assert result.exit_code == 2 and "has no index" in result.output

    no_chr2 = _write_fasta(case["out"] / "no_chr2.fa", {"chr1": case["seqs"]["chr1"]})
    result = _error(case, fasta=str(no_chr2))
    assert result.exit_code == 2 and "chr2" in result.output and "absent from FASTA" in result.output
    assert "records there" in result.output  # the VCF's records on the absent contig are named

    samples = case["out"] / "unknown_samples.txt"
    samples.write_text("S1\nNOBODY\n")
    result = _error(case, "--samples", str(samples))
    assert result.exit_code == 2 and "NOBODY" in result.output and "not in VCF" in result.output

    unknown = case["out"] / "unknown.yaml"
    unknown.write_text("name: x\ngenes: [GENEA, NOPE1]\n")
    result = _error(case, "--gtf", str(case["gtf"]), "--genes", str(unknown), regions=None)
    assert result.exit_code == 2 and "NOPE1" in result.output

    result = _error(case, "--gtf", str(case["gtf"]), "--genes", str(case["geneset"]))
    assert result.exit_code == 2 and "either --regions" in result.output
    piped = case["out"] / "piped.bed"
    piped.write_text("chr1\t100\t200\tA|B\n")
    result = _error(case, regions=str(piped))
    assert result.exit_code == 2 and "'A|B'" in result.output and "ambiguous" in result.output
    result = _error(case, strategy="haploid")
    assert result.exit_code == 2 and "--strategy must be one of" in result.output
    assert not (case["out"] / "err.fa").exists()


def test_missing_gt_fields_counts_only_gt_alleles():
    rng = random.Random(5)
    gts = ["0/0", "0|1", "1/1", "./.", ".|.", ".", "0", "1|.", "./1", "0/0/.", "2|1"]
    others = [".", "3.5", "12", ".,.", "7,0"]
    for _ in range(200):
        n_sub = rng.randint(0, 3)
        fields = [":".join([rng.choice(gts), *(rng.choice(others) for _ in range(n_sub))])
                  for _ in range(rng.randint(1, 30))]
        expected = sum("." in f.split(":")[0] for f in fields)
        assert missing_gt_fields("\t".join(fields).encode()) == expected, fields
