"""Per subject-gene missing and unphased het counts: Hail path = VCF path = a text oracle; phased input;
the max_missing QC and the summary."""

from __future__ import annotations

import gzip
from collections import Counter
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuro_caduceus.genome.genotype_counts import (
    GENOTYPE_COUNTS_SCHEMA,
    apply_genotype_summary,
    excluded_by_missing,
    n_missing_of,
    unit_genotype_stats,
)
from neuro_caduceus.synthetic import make_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, hail_session):
    from neuro_caduceus.genome.annotation import read_genes
    from neuro_caduceus.genome.regions import RegionSpec, build_regions
    from neuro_caduceus.variants.importer import import_vcf

    out = tmp_path_factory.mktemp("gt_counts")
    # seed 11, 5 genes: the genome of tests/test_variants.py (a Hail session registers one genome per name)
    make_cohort(out, n_samples=40, n_genes=5, seed=11)
    import_vcf([str(out / "cohort.vcf.gz")], str(out / "cohort.mt"), str(out / "genome.json"))
    genes = read_genes(str(out / "genes.gtf.gz"))
    regions = build_regions(genes, RegionSpec(mode="gene_body", flank=100, orient="reference"))
    return SimpleNamespace(vcf=str(out / "cohort.vcf.gz"), mt=str(out / "cohort.mt"), regions=regions)


def _vcf_records(vcf: str):
    """(sample names, tab-split fields) of each record of a gzipped VCF, read as plain text."""
    samples: list[str] = []
    with gzip.open(vcf, "rt") as f:
        for line in f:
            if line.startswith("##"):
                continue
            fields = line.rstrip("\n").split("\t")
            if line.startswith("#"):
                samples = fields[9:]
                continue
            yield samples, fields


def text_oracle(vcf: str, regions) -> dict[tuple[str, str], tuple[int, int]]:
    """Independent: the VCF text, GT strings by hand (missing: a '.', unphased het: '/' with two alleles)."""
    out: Counter = Counter()
    for samples, fields in _vcf_records(vcf):
        chrom, start0, ref = fields[0], int(fields[1]) - 1, fields[3]
        for r in regions:
            if r.chrom != chrom or not any(start0 < b and start0 + len(ref) > a for a, b in r.segments):
                continue
            for s, field in zip(samples, fields[9:], strict=True):
                gt = field.split(":")[0]
                if "." in gt:
                    out[(s, r.region_id, 0)] += 1
                elif "/" in gt and len(set(gt.split("/"))) == 2:
                    out[(s, r.region_id, 1)] += 1
    keys = {(s, g) for s, g, _ in out}
    return {k: (out[(*k, 0)], out[(*k, 1)]) for k in keys}


def missing_records_oracle(vcf: str, regions) -> dict[tuple[str, str], set[tuple[int, str]]]:
    """Independent: per subject-gene, the (POS, REF) of the records whose GT string holds a '.'."""
    out: dict[tuple[str, str], set[tuple[int, str]]] = {}
    for samples, fields in _vcf_records(vcf):
        pos, ref = int(fields[1]), fields[3]
        for r in regions:
            if r.chrom != fields[0] or not any(a < pos - 1 + len(ref) and pos - 1 < b for a, b in r.segments):
                continue
            for s, field in zip(samples, fields[9:], strict=True):
                if "." in field.split(":")[0]:
                    out.setdefault((s, r.region_id), set()).add((pos, ref))
    return out


def _as_dict(table: pa.Table) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r["subject_id"], r["gene_id"]): (r["n_missing"], r["n_unphased_het"]) for r in table.to_pylist()}


def test_hail_and_vcf_counts_are_identical_and_match_the_text(cohort):
    from neuro_caduceus.genome.genotype_counts import genotype_counts_from_vcf
    from neuro_caduceus.genome.personalize import vcf_samples
    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.source import read_region_group

    counts: list[pa.Table] = []
    spans = [RegionSpan.of(r) for r in cohort.regions]
    list(read_region_group(cohort.mt, spans, "diploid", None, counts_out=counts))
    hail = pa.concat_tables(counts)
    vcf = genotype_counts_from_vcf(cohort.vcf, cohort.regions, vcf_samples(cohort.vcf))
    assert hail.schema == vcf.schema == GENOTYPE_COUNTS_SCHEMA
    assert hail.to_pylist() == vcf.to_pylist()  # identical rows, order included
    from neuro_caduceus.variants.export import export_haplotypes

    export_haplotypes(cohort.mt, cohort.regions, "diploid", str(cohort.mt) + ".export")
    exported = [pq.read_table(f"{cohort.mt}.export/genotype_counts/{r.region_id}.parquet")
                for r in cohort.regions]
    assert pa.concat_tables(exported).to_pylist() == hail.to_pylist()
    expected = text_oracle(cohort.vcf, cohort.regions)
    assert _as_dict(hail) == expected
    records = missing_records_oracle(cohort.vcf, cohort.regions)  # the missing records themselves
    got = {(r["subject_id"], r["gene_id"]): {(m["pos"], m["ref"]) for m in r["missing_records"]}
           for r in hail.to_pylist() if r["missing_records"]}
    assert got == records and sum(map(len, records.values())) == sum(m for m, _ in expected.values())
    assert sum(m for m, _ in expected.values()) > 0 and sum(h for _, h in expected.values()) > 0


def test_phased_calls_give_true_haplotypes(cohort):
    """A `1|0` call puts the ALT on haplotype 1 and `0|1` on haplotype 2, on both input paths."""
    from neuro_caduceus.genome.haplotypes import unique_haplotypes_from_vcf
    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.source import read_region_group

    phased = {}
    for samples, fields in _vcf_records(cohort.vcf):
        if "," in fields[4]:
            continue
        for s, field in zip(samples, fields[9:], strict=True):
            gt = field.split(":")[0]
            if gt in ("1|0", "0|1"):
                phased[(s, int(fields[1]))] = 1 if gt == "1|0" else 2
    assert {1, 2} <= set(phased.values())
    spans = [RegionSpan.of(r) for r in cohort.regions]
    for table in (pa.concat_tables(list(read_region_group(cohort.mt, spans, "diploid", None))),
                  unique_haplotypes_from_vcf(cohort.vcf, cohort.regions, "diploid")):
        seen = {}
        for row in table.to_pylist():
            for v in row["variants"]:
                for c in row["carriers"]:
                    key = (c["subject_id"], v["pos"])
                    if key in phased:
                        seen.setdefault(key, set()).add(c["hap_index"])
        assert seen and all(seen[k] == {phased[k]} for k in seen)


def test_max_missing_excludes_and_counts():
    counts = pa.Table.from_pylist(
        [{"subject_id": "a", "gene_id": "g", "n_missing": 3, "n_unphased_het": 0},
         {"subject_id": "b", "gene_id": "g", "n_missing": 1, "n_unphased_het": 2},
         {"subject_id": "a", "gene_id": "h", "n_missing": 0, "n_unphased_het": 5}],
        schema=GENOTYPE_COUNTS_SCHEMA)
    assert excluded_by_missing(counts, None) == set()
    assert excluded_by_missing(counts, 1) == {("a", "g")}
    assert excluded_by_missing(counts, 0) == {("a", "g"), ("b", "g")}
    of_gene = {g: counts.filter(pa.compute.equal(counts.column("gene_id"), g)) for g in ("g", "h")}
    per_gene = [unit_genotype_stats(of_gene[g], ["a", "b"], 1) for g in ("g", "h")]
    assert per_gene == [{"missing_calls": 4, "unphased_het_calls": 2, "excluded_subject_genes": 1},
                        {"missing_calls": 0, "unphased_het_calls": 5, "excluded_subject_genes": 0}]
    m = apply_genotype_summary({"per_gene": per_gene, "rows": 4}, "diploid", 1)
    s = m["genotypes"]
    assert (s["missing_calls"], s["unphased_het_calls"], s["excluded_subject_genes"]) == (4, 7, 1)
    assert m["rows"] == 3  # the excluded subject-gene leaves the row count
    assert "7 unphased het calls" in s["warning"] and "strategy additive" in s["warning"]
    consensus = apply_genotype_summary({"per_gene": per_gene, "rows": 4}, "consensus", None)
    assert consensus["genotypes"]["warning"] is None
    gene_g = counts.filter(pa.compute.equal(counts.column("gene_id"), "g"))
    assert n_missing_of(gene_g, ["b", "c", "a"]).to_pylist() == [1, 0, 3]
    assert n_missing_of(None, ["a"]).to_pylist() == [None]
