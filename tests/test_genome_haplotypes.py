"""Haplotype builder and the VCF path against `bcftools consensus` (bundled in pysam) as the oracle.

A generated genome (soft-masked stretch, N stretch) and VCF (SNVs, MNVs, insertions, deletions, complex
replacements, a multi-allelic site, phased and unphased hets, hom-alt, missing calls, an overlapping pair on
one haplotype): every sample, region and haplotype must equal bcftools' sequence (case-insensitive).
"""

from __future__ import annotations

import random
from pathlib import Path

import pysam
import pytest
from haplotype_oracle import bcftools_consensus, random_variant
from pysam import bcftools

from neuro_caduceus.genome.fasta import Reference
from neuro_caduceus.genome.haplotypes import (
    build_sequence,
    reverse_complement,
    unique_haplotypes_from_vcf,
)
from neuro_caduceus.genome.regions import Region, tile_windows
from neuro_caduceus.genome.variant_schema import Variant

SAMPLES = [f"S{i}" for i in range(1, 9)]
LENGTH = 4000


def _genotypes(rng: random.Random, n_alts: int) -> list[str]:
    choices = ["0/0"] * 6 + ["0/1", "1/0", "0|1", "1|0", "1/1", "1|1", "./.", "1|.", ".|1", "0/."]
    if n_alts == 2:
        choices += ["1/2", "2|1", "0/2", "2/2"]
    return [rng.choice(choices) for _ in SAMPLES]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    rng = random.Random(42)
    bases = [rng.choice("ACGT") for _ in range(LENGTH)]
    bases[600:900] = [b.lower() for b in bases[600:900]]  # soft-masked repeat
    bases[3300:3400] = ["N"] * 100
    seq = "".join(bases)
    out = tmp_path_factory.mktemp("hap")
    fasta = out / "ref.fa"
    fasta.write_text(">chr1\n" + "".join(seq[i:i + 70] + "\n" for i in range(0, LENGTH, 70)))
    pysam.faidx(str(fasta))
    upper = seq.upper()
    records, pos0 = [], 40
    kinds = ["snv", "mnv", "ins", "del", "complex"]
    while pos0 < 3200:
        kind = kinds[len(records) % len(kinds)]
        ref, alt = random_variant(kind, upper, pos0, rng)
        alts = [alt]
        if len(records) % 7 == 3:  # multi-allelic: a second ALT at the same REF
            second = random_variant("snv", upper, pos0, rng)[1] + ref[1:]
            alts += [second] if second != alt else []
        gts = _genotypes(rng, len(alts))
        records.append((pos0 + 1, ref, alts, gts))
        pos0 += len(ref) + rng.randint(8, 60)
    # the overlapping pair: a deletion and an SNV inside it, both on haplotype 1 of S1 (and hom in S2)
    d0 = 3230
    records.append((d0 + 1, upper[d0:d0 + 6], [upper[d0]], ["1|0", "1/1"] + ["0/0"] * 6))
    snv = "T" if upper[d0 + 2] != "T" else "G"
    records.append((d0 + 3, upper[d0 + 2], [snv], ["1|0", "1/1"] + ["0/0"] * 6))
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID=chr1,length={LENGTH}>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "#" + "\t".join(["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                              *SAMPLES])]
    for pos, ref, alts, gts in records:
        lines.append("\t".join(["chr1", str(pos), ".", ref, ",".join(alts), ".", "PASS", ".", "GT", *gts]))
    vcf = out / "calls.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    gaps = [records[i][0] + len(records[i][1]) + 3 for i in (5, 14, 25)]  # cut points between variants
    regions = [
        Region("WHOLE", "WHOLE", "chr1", "+", ((0, 3500),), "reference"),
        Region("LEFT", "LEFT", "chr1", "+", ((10, gaps[0]),), "reference"),
        Region("MIDDLE", "MIDDLE", "chr1", "+", ((gaps[0], gaps[1]), (gaps[2], 3500)), "reference"),
    ]
    return {"seq": seq, "fasta": fasta, "vcf": Path(f"{vcf}.gz"), "regions": regions, "records": records,
            "out": out}


def _bcftools(case, region: Region, sample: str, haplotype: str) -> str:
    seq = case["seq"]
    return bcftools_consensus(case["out"], "chr1", seq, region.segments, case["vcf"], sample, haplotype)


def _carried(table) -> dict:
    out: dict = {}
    for row in table.to_pylist():
        variants = [Variant(**v) for v in row["variants"]]
        for c in row["carriers"]:
            out[(row["gene_id"], c["subject_id"], c["hap_index"])] = variants
    return out


def test_diploid_haplotypes_equal_bcftools_consensus(case):
    ref = Reference(str(case["fasta"]))
    carried = _carried(unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "diploid"))
    skipped = 0
    for region in case["regions"]:
        for sample in SAMPLES:
            for hap in (1, 2):
                result = build_sequence(ref, region, carried.get((region.region_id, sample, hap), []))
                skipped += len(result.skipped_overlap)
                assert result.sequence == _bcftools(case, region, sample, str(hap)), (region, sample, hap)
    assert skipped >= 2  # the overlapping pair (S1 hap 1, S2 both) was exercised


def test_consensus_strategy_equals_bcftools_alt_mode(case):
    ref = Reference(str(case["fasta"]))
    carried = _carried(unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "consensus"))
    multi = {pos for pos, _, alts, _ in case["records"] if len(alts) > 1}
    compared = 0
    for region in case["regions"]:
        for sample in SAMPLES:
            variants = carried.get((region.region_id, sample, 1), [])
            if sum(v.pos in multi for v in variants) > 1:
                continue  # two ALTs at one site: which one bcftools -H A keeps is not specified
            ours = build_sequence(ref, region, variants).sequence
            assert ours == _bcftools(case, region, sample, "A"), (region.region_id, sample)
            compared += bool(variants)
    assert compared > 0  # sample-regions that carry variants were compared, not only skipped


def test_minus_strand_is_the_reverse_complement(case):
    ref = Reference(str(case["fasta"]))
    carried = _carried(unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "diploid"))
    plus = case["regions"][2]
    minus = Region(plus.region_id, plus.gene_name, "chr1", "-", plus.segments, "transcript")
    carriers = 0
    for sample in SAMPLES:
        variants = carried.get((plus.region_id, sample, 1), [])
        assert build_sequence(ref, minus, variants).sequence == reverse_complement(
            build_sequence(ref, plus, variants).sequence)
        carriers += bool(variants)
    assert carriers > 0


def test_samples_subset_and_reference_strategy(case):
    full = _carried(unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "diploid"))
    some = _carried(
        unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "diploid", samples=["S3", "S1"]))
    assert some == {k: v for k, v in full.items() if k[1] in ("S1", "S3")}
    assert unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "reference").num_rows == 0
    serial = unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "diploid")
    assert unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "diploid", workers=2).equals(serial)
    with pytest.raises(ValueError, match="not in VCF .*: NOPE"):
        unique_haplotypes_from_vcf(str(case["vcf"]), case["regions"], "diploid", samples=["S1", "NOPE"])
    with pytest.raises(FileNotFoundError, match="has no index"):
        plain = case["out"] / "unindexed.vcf.gz"
        plain.write_bytes(case["vcf"].read_bytes())
        unique_haplotypes_from_vcf(str(plain), case["regions"], "diploid")


def test_ref_mismatch_rejected_or_strict_error_and_ignored_alleles(case):
    ref = Reference(str(case["fasta"]))
    region = Region("R", "R", "chr1", "+", ((100, 200),), "reference")
    true_base = case["seq"][150].upper()
    wrong = Variant("chr1", 151, "A" if true_base != "A" else "C", "G")
    good = Variant("chr1", 161, case["seq"][160].upper(), "N")
    star = Variant("chr1", 171, case["seq"][170].upper(), "*")
    res = build_sequence(ref, region, [wrong, good, star])
    assert res.rejected_ref_mismatch == [wrong] and res.applied == [good] and res.ignored == [star]
    assert res.sequence == case["seq"][100:160].upper() + "N" + case["seq"][161:200].upper()
    with pytest.raises(ValueError, match="REF mismatch at chr1:151"):
        build_sequence(ref, region, [wrong], strict_ref=True)


def test_windows_of_a_haplotype_concatenate_to_the_region_haplotype(case):
    """Boundary rule: variants straddling window and region edges (indels included) split consistently."""
    ref = Reference(str(case["fasta"]))
    rng = random.Random(3)
    upper = case["seq"].upper()
    region = Region("R", "R", "chr1", "+", ((1000, 1500), (1600, 2300), (2400, 2600)), "reference")
    for trial in range(30):
        variants, pos0 = [], 990 + rng.randint(0, 5)
        while pos0 < 2610:
            kind = rng.choice(["snv", "mnv", "ins", "del", "complex"])
            r, a = random_variant(kind, upper, pos0, rng)
            variants.append(Variant("chr1", pos0 + 1, r, a))
            pos0 += rng.randint(1, 40) if rng.random() < 0.2 else len(r) + rng.randint(0, 40)  # some overlap
        whole = build_sequence(ref, region, variants).sequence
        for window in (64, 100, 333):
            pieces = [build_sequence(ref, w, variants).sequence for w in tile_windows(region, window)]
            assert "".join(pieces) == whole, (trial, window)
        reverse = Region("R", "R", "chr1", "-", region.segments, "transcript")
        pieces = [build_sequence(ref, w, variants).sequence for w in tile_windows(reverse, 100)]
        assert "".join(reversed(pieces)) == build_sequence(ref, reverse, variants).sequence


def test_unique_haplotypes_of_a_small_vcf_match_a_hand_written_expectation(tmp_path):
    """VCF contig `1`, regions on `chr1` (matched) and `chr5` (absent from the VCF: no rows)."""
    from neuro_caduceus.genome.haplotypes import variants_in
    from neuro_caduceus.genome.variant_schema import haplotype_key

    lines = ["##fileformat=VCFv4.2", "##contig=<ID=1,length=200>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC",
             "1\t11\t.\tA\tG\t.\tPASS\t.\tGT\t0|1\t1/0\t0/0",
             "1\t21\t.\tAC\tA\t.\tPASS\t.\tGT\t1|1\t./.\t0/1",
             "1\t31\t.\tT\tC,TG\t.\tPASS\t.\tGT\t2|0\t0|1\t1/2",
             "1\t101\t.\tG\tT\t.\tPASS\t.\tGT\t1|1\t1|1\t1|1"]
    vcf = tmp_path / "small.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    regions = [Region("G1", "G1", "chr1", "+", ((0, 50),), "reference"),
               Region("G5", "G5", "chr5", "+", ((0, 50),), "reference")]
    snv, dele = Variant("1", 11, "A", "G"), Variant("1", 21, "AC", "A")
    ins, snv2 = Variant("1", 31, "T", "TG"), Variant("1", 31, "T", "C")

    def rows(expected: list[tuple[list[Variant], list[tuple[str, int]]]]) -> list[dict]:
        out = [{"gene_id": "G1", "haplotype_key": haplotype_key("G1", vs),
                "variants": [v.__dict__ for v in vs],
                "carriers": [{"subject_id": s, "hap_index": h} for s, h in carriers]}
               for vs, carriers in expected]
        return sorted(out, key=lambda r: r["haplotype_key"])

    diploid = unique_haplotypes_from_vcf(str(vcf) + ".gz", regions, "diploid").to_pylist()
    assert diploid == rows([([dele, ins], [("A", 1), ("C", 2)]), ([snv, dele], [("A", 2)]),
                            ([snv], [("B", 1)]), ([snv2], [("B", 2), ("C", 1)])])
    consensus = unique_haplotypes_from_vcf(str(vcf) + ".gz", regions, "consensus").to_pylist()
    assert consensus == rows([([snv, dele, ins], [("A", 1)]), ([snv, snv2], [("B", 1)]),
                              ([dele, snv2, ins], [("C", 1)])])  # B's ./. carries nothing
    assert variants_in(regions[0], [snv, Variant("1", 51, "A", "C"), Variant("1", 50, "CA", "C")]) == [
        snv, Variant("1", 50, "CA", "C")]  # REF span (0-based [49, 51)) overlaps [0, 50); pos 51 does not


# 1-based positions on SMALL: 1 A, 2 C, 3 G, 4 T, 5 A, 6 C, 7 G, 8 T, 9 A, 10 C, 11 C, 12 G, 13 A, 14 T, 15 T
SMALL = "ACGTACGTACCGATTGCAAGTCCAGGTTACCAGT"
# (name, records in file order: (POS, REF, ALT, INFO)), every record on haplotype 1 of one sample
TOUCHING = [
    ("symbolic DEL with END", [(5, "A", "<DEL>", "END=9")]),
    ("symbolic DEL with SVLEN", [(5, "A", "<DEL>", "SVLEN=-4")]),
    ("symbolic DEL with positive SVLEN", [(5, "A", "<DEL>", "SVLEN=4")]),
    ("symbolic DEL: END wins over SVLEN", [(5, "A", "<DEL>", "END=9;SVLEN=-2")]),
    ("symbolic DEL: first SVLEN", [(5, "A", "<DEL>", "SVLEN=-2,-3")]),
    ("symbolic DEL without a span is ignored", [(5, "A", "<DEL>", ".")]),
    ("SNV inside a symbolic DEL", [(5, "A", "<DEL>", "END=9"), (8, "T", "G", ".")]),
    ("SNV on the END of a symbolic DEL", [(5, "A", "<DEL>", "END=9"), (9, "A", "G", ".")]),
    ("deletion on the last base of a deletion", [(5, "ACG", "A", "."), (7, "GTA", "G", ".")]),
    ("longer deletion chained", [(5, "ACGT", "A", "."), (8, "TAC", "T", ".")]),
    ("three chained deletions", [(5, "ACG", "A", "."), (7, "GT", "G", "."), (8, "TAC", "T", ".")]),
    ("deletion, deletion, insertion", [(5, "ACG", "A", "."), (7, "GT", "G", "."), (8, "T", "TGG", ".")]),
    ("deletion inside a deletion", [(5, "ACGT", "A", "."), (7, "GTA", "G", ".")]),
    ("insertion on the last base of a deletion", [(5, "ACG", "A", "."), (7, "G", "GTT", ".")]),
    ("SNV on the last base of a deletion", [(5, "ACG", "A", "."), (7, "G", "T", ".")]),
    ("MNV on the last base of a deletion", [(5, "ACG", "A", "."), (7, "GT", "CC", ".")]),
    ("complex on the last base of a deletion", [(5, "ACG", "A", "."), (7, "GTA", "C", ".")]),
    ("indel without anchor base on a deletion", [(5, "ACG", "A", "."), (7, "GTA", "A", ".")]),
    ("complex deletion on a deletion", [(5, "ACG", "A", "."), (7, "GTA", "GC", ".")]),
    ("deletion by suffix on a deletion", [(5, "ACG", "A", "."), (7, "GTACC", "GC", ".")]),
    ("symbolic DEL on the last base of a deletion", [(5, "ACG", "A", "."), (7, "G", "<DEL>", "END=9")]),
    ("deletion on the END of a symbolic DEL", [(5, "A", "<DEL>", "END=7"), (7, "GTA", "G", ".")]),
    ("insertion on the END of a symbolic DEL", [(5, "A", "<DEL>", "END=7"), (7, "G", "GAA", ".")]),
    ("deletion on the last base of an MNV", [(5, "AC", "GT", "."), (6, "CG", "C", ".")]),
    ("insertion on the last base of a complex", [(5, "ACG", "T", "."), (7, "G", "GAA", ".")]),
    ("SNV then insertion at one position", [(5, "A", "G", "."), (5, "A", "ATT", ".")]),
    ("insertion then SNV at one position", [(5, "A", "ATT", "."), (5, "A", "G", ".")]),
    ("two insertions at one position", [(5, "A", "ATT", "."), (5, "A", "ACC", ".")]),
    ("SNV then deletion at one position", [(5, "A", "G", "."), (5, "ACG", "A", ".")]),
    ("deletion then SNV at one position", [(5, "ACG", "A", "."), (5, "A", "G", ".")]),
    ("insertion then deletion at one position", [(5, "A", "ATT", "."), (5, "ACG", "A", ".")]),
    ("deletion then insertion at one position", [(5, "ACG", "A", "."), (5, "A", "ATT", ".")]),
    ("two deletions at one position", [(5, "AC", "A", "."), (5, "ACG", "A", ".")]),
    ("two SNVs at one position", [(5, "A", "G", "."), (5, "A", "C", ".")]),
    ("lengthening complex then insertion", [(5, "A", "GTT", "."), (5, "A", "ACC", ".")]),
    ("SNV, insertion, insertion", [(5, "A", "G", "."), (5, "A", "ATT", "."), (5, "A", "ACC", ".")]),
    ("SNV, deletion, insertion on its last base",
     [(5, "A", "G", "."), (5, "AC", "A", "."), (6, "C", "CTT", ".")]),
    ("SNV then unanchored deletion", [(5, "A", "G", "."), (5, "ACG", "C", ".")]),
]


def _touching_case(tmp_path: Path, records: list[tuple[int, str, str, str]]) -> tuple[Path, Path]:
    fasta = tmp_path / "r.fa"
    fasta.write_text(f">chr1\n{SMALL}\n")
    pysam.faidx(str(fasta))
    vcf = tmp_path / "v.vcf"
    header = (f"##fileformat=VCFv4.2\n##contig=<ID=chr1,length={len(SMALL)}>\n"
              + '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
              + '##INFO=<ID=END,Number=1,Type=Integer,Description="End">\n'
              + '##INFO=<ID=SVLEN,Number=.,Type=Integer,Description="Length">\n'
              + '##ALT=<ID=DEL,Description="Deletion">\n'
              + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS\n")
    lines = [f"chr1\t{p}\t.\t{r}\t{a}\t.\tPASS\t{i}\tGT\t1|0\n" for p, r, a, i in records]
    vcf.write_text(header + "".join(lines))
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    return fasta, Path(f"{vcf}.gz")


@pytest.mark.parametrize("records", [r for _, r in TOUCHING], ids=[n for n, _ in TOUCHING])
def test_touching_variants_symbolic_deletions_and_file_order_equal_bcftools(tmp_path, records):
    """Variants touching at one base, at one position (file order) and symbolic <DEL>: as bcftools consensus,
    through the VCF path (cyvcf2 read, rows, unique-haplotype builder); windows still tile the region."""
    from neuro_caduceus.genome.personalize import region_haplotypes

    fasta, vcf = _touching_case(tmp_path, records)
    theirs = bcftools.consensus("-f", str(fasta), "-H", "1", str(vcf)).split("\n")[1].upper()
    region = Region("R", "R", "chr1", "+", ((0, len(SMALL)),), "reference")
    reference = Reference(str(fasta))
    table = unique_haplotypes_from_vcf(str(vcf), [region], "diploid")
    (built,) = region_haplotypes(reference, table, [region], ["S"], "diploid")
    assert built.sequences[built.assignment[0, 0]] == theirs
    variants = [Variant(**v) for v in table.column("variants")[0].as_py()] if table.num_rows else []
    whole = build_sequence(reference, region, variants)
    assert whole.sequence == theirs
    assert "".join(build_sequence(reference, w, variants).sequence for w in tile_windows(region, 3)) == theirs
    assert len(whole.applied) + len(whole.skipped_overlap) + len(whole.ignored) == len(records)


def test_other_symbolic_alleles_are_ignored_and_counted(tmp_path):
    """bcftools refuses <INS>/<DUP>; they are ignored (listed) here, and a <DEL> span comes from END/SVLEN."""
    from neuro_caduceus.genome.variant_schema import variant_of

    fasta, _ = _touching_case(tmp_path, [])
    region = Region("R", "R", "chr1", "+", ((0, len(SMALL)),), "reference")
    others = [Variant("chr1", 5, "A", "<INS>"), Variant("chr1", 8, "T", "<DUP>"),
              Variant("chr1", 10, "C", "<DEL>")]
    result = build_sequence(Reference(str(fasta)), region, others)
    assert result.sequence == SMALL and result.ignored == others
    assert variant_of("chr1", 5, "A", "<DEL>", end=9) == Variant("chr1", 5, "ANNNN", "<DEL>")
    assert variant_of("chr1", 5, "A", "<DEL>", svlen=(-3,)) == Variant("chr1", 5, "ANNN", "<DEL>")
    assert variant_of("chr1", 5, "A", "<DEL>") == Variant("chr1", 5, "A", "<DEL>")


def test_hail_path_rows_equal_the_vcf_path_for_symbolic_and_touching_variants(tmp_path, hail_session):
    """import-vcf + the Hail reader give the VCF path's rows for a <DEL>, chained deletions and one position's
    records in allele order (Hail keeps a position's records in allele order, whatever the file's)."""
    import pyarrow as pa

    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.importer import import_vcf
    from neuro_caduceus.variants.source import read_region_group

    records = [(5, "A", "ATT", "."), (5, "A", "G", "."), (12, "G", "<DEL>", "END=15"), (20, "CA", "C", "."),
               (21, "AG", "A", ".")]
    _, vcf = _touching_case(tmp_path, records)
    text = pysam.BGZFile(str(vcf)).read().decode()
    lines = [line if line.startswith("##") else line + "\tT" if line.startswith("#") else line + "\t0|1"
             for line in text.rstrip("\n").split("\n")]  # a second sample carries everything on hap 2
    two = tmp_path / "two.vcf"
    two.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(two), preset="vcf", force=True)
    region = Region("R", "R", "chr1", "+", ((0, len(SMALL)),), "reference")
    expected = unique_haplotypes_from_vcf(f"{two}.gz", [region], "diploid")
    mt = tmp_path / "two.mt"
    import_vcf([f"{two}.gz"], str(mt), "GRCh38")
    got = pa.concat_tables(list(read_region_group(str(mt), [RegionSpan.of(region)], "diploid", None)))
    assert got.to_pylist() == expected.to_pylist()
    variants = [Variant(**v) for v in expected.column("variants")[0].as_py()]
    assert Variant("chr1", 12, "GNNN", "<DEL>") in variants


def test_the_documented_differences_from_bcftools(tmp_path):
    """docs/haplotypes.md: -H A on a `1/2` call of two SNVs (bcftools: the GT's second allele; here ALT 1,
    ALT 2 skipped as overlapping), and `<INS>` (bcftools: an error; here ignored and counted)."""
    from neuro_caduceus.genome.personalize import region_haplotypes

    fasta, _ = _touching_case(tmp_path, [])
    vcf = tmp_path / "m.vcf"
    vcf.write_text(f"##fileformat=VCFv4.2\n##contig=<ID=chr1,length={len(SMALL)}>\n"
                   '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS\n"
                   "chr1\t5\t.\tA\tG,C\t.\tPASS\t.\tGT\t1/2\n")
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    theirs = bcftools.consensus("-f", str(fasta), "-H", "A", f"{vcf}.gz").split("\n")[1]
    region = Region("R", "R", "chr1", "+", ((0, len(SMALL)),), "reference")
    table = unique_haplotypes_from_vcf(f"{vcf}.gz", [region], "consensus")
    (built,) = region_haplotypes(Reference(str(fasta)), table, [region], ["S"], "consensus")
    ours = built.builds[built.assignment[0, 0]]
    assert theirs[4] == "C" and ours.sequence[4] == "G"
    assert ours.skipped_overlap == [Variant("chr1", 5, "A", "C")]
    (tmp_path / "ins").mkdir()
    _, ins = _touching_case(tmp_path / "ins", [(5, "A", "<INS>", ".")])
    with pytest.raises(Exception, match="Symbolic alleles other than"):
        bcftools.consensus("-f", str(fasta), "-H", "1", str(ins))
    rows = unique_haplotypes_from_vcf(str(ins), [region], "diploid")
    (built,) = region_haplotypes(Reference(str(fasta)), rows, [region], ["S"], "diploid")
    assert built.sequences[built.assignment[0, 0]] == SMALL
    assert built.builds[built.assignment[0, 0]].ignored == [Variant("chr1", 5, "A", "<INS>")]
