"""Hail MatrixTable source: import, QC counts, interval pushdown, datasource rows vs a VCF oracle, export.

One synthetic cohort and one MatrixTable per module (Hail is slow). The haplotype oracle reads the VCF
with pysam (alleles in written order) and shares no code with the Hail path; when the genome area's
`unique_haplotypes_from_vcf` is importable the rows are compared with it as well.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest

from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant, haplotype_key
from neuro_caduceus.synthetic import make_cohort
from neuro_caduceus.variants.qc import QCConfig

DATA = Path(__file__).parent / "data" / "variants"
FLANK = 300


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, hail_session):
    """A 120-subject, 5-gene synthetic cohort imported into a MatrixTable with 6 partitions."""
    from neuro_caduceus.variants.importer import import_vcf

    out = tmp_path_factory.mktemp("variants_cohort")
    manifest = make_cohort(out, n_samples=120, n_genes=5, seed=11)
    summary = import_vcf(
        [str(out / "cohort.vcf.gz")], str(out / "cohort.mt"), str(out / "genome.json"), min_partitions=6
    )
    regions = [
        SimpleNamespace(
            region_id=g["gene_id"], chrom=g["chrom"], segments=((g["start"] - FLANK, g["end"] + FLANK),)
        )
        for g in manifest["genes"]
    ]
    # one multi-segment region (two disjoint pieces of the first gene) to exercise segment overlap
    g0 = manifest["genes"][0]
    mid = (g0["start"] + g0["end"]) // 2
    regions.append(
        SimpleNamespace(
            region_id="SEGMENTED",
            chrom=g0["chrom"],
            segments=((g0["start"], mid - 200), (mid + 200, g0["end"])),
        )
    )
    return SimpleNamespace(
        dir=out,
        manifest=manifest,
        mt=str(out / "cohort.mt"),
        summary=summary,
        regions=regions,
        vcf=str(out / "cohort.vcf.gz"),
    )


def vcf_oracle(vcf: str, regions, strategy: str) -> list[dict]:
    """Independent expectation with pysam: GT alleles to haplotypes in written order, REF-span overlap;
    a haplotype's variants by position, then record and ALT index (file order)."""
    rows = []
    order: dict[Variant, tuple[int, int, int]] = {}
    with pysam.VariantFile(vcf) as vf:
        for region in regions:
            haps: dict[tuple[str, int], set[Variant]] = defaultdict(set)
            seen = set()
            for a, b in region.segments:
                for n, rec in enumerate(vf.fetch(region.chrom, a, b)):
                    if (rec.pos, rec.ref) in seen or not (rec.start < b and rec.stop > a):
                        continue
                    seen.add((rec.pos, rec.ref))
                    for sid, call in rec.samples.items():
                        for hap, allele in enumerate(call["GT"], start=1):
                            if allele:
                                v = Variant(rec.chrom, rec.pos, rec.ref, rec.alts[allele - 1])
                                order.setdefault(v, (rec.pos, n, allele))
                                haps[(sid, hap if strategy == "diploid" else 1)].add(v)
            groups = defaultdict(list)
            for carrier, variants in haps.items():
                groups[frozenset(variants)].append(carrier)
            for variants, carriers in groups.items():
                rows.append(
                    {
                        "gene_id": region.region_id,
                        "haplotype_key": haplotype_key(region.region_id, variants),
                        "variants": [v.__dict__ for v in sorted(variants, key=order.__getitem__)],
                        "carriers": [{"subject_id": s, "hap_index": h} for s, h in sorted(carriers)],
                    }
                )
    return canonical(rows)


def canonical(rows: list[dict]) -> list[dict]:
    """Order-independent form: rows by (gene_id, key), carriers sorted."""
    out = [
        dict(r, carriers=sorted(r["carriers"], key=lambda c: (c["subject_id"], c["hap_index"]))) for r in rows
    ]
    return sorted(out, key=lambda r: (r["gene_id"], r["haplotype_key"]))


def test_import_writes_split_matrix_table(cohort, hail_session):
    hl = hail_session
    mt = hl.read_matrix_table(cohort.mt)
    with pysam.VariantFile(cohort.vcf) as vf:
        n_alts = sum(len(r.alts) for r in vf)
    assert cohort.summary["rows"] == n_alts and cohort.summary["samples"] == 120
    assert cohort.summary["partitions"] >= 4
    assert {"vcf_locus", "vcf_alleles", "a_index", "was_split"} <= set(mt.row)


def test_region_group_rows_match_vcf_oracle(cohort):
    """The Hail extraction (in this process) equals the pysam oracle, for diploid and consensus."""
    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.source import read_region_group

    spans = [RegionSpan.of(r) for r in cohort.regions]
    for strategy in ("diploid", "consensus"):
        per_query = 2 if strategy == "consensus" else 16  # several Hail queries per task, or one
        tables = list(read_region_group(cohort.mt, spans, strategy, None, genes_per_query=per_query))
        raw = pa.concat_tables(tables).to_pylist()
        got = canonical(raw)
        assert len(got) > 50
        assert got == vcf_oracle(cohort.vcf, cohort.regions, strategy), strategy
        for table in tables:  # the documented order: one block per gene, rows by key, carriers sorted
            rows = table.to_pylist()
            assert len({r["gene_id"] for r in rows}) == 1
            assert [r["haplotype_key"] for r in rows] == sorted(r["haplotype_key"] for r in rows)
            assert all(r == c for r, c in zip(rows, canonical(rows), strict=True))
    assert list(read_region_group(cohort.mt, spans, "reference", None)) == []


def test_datasource_in_ray_workers_matches_oracle(cohort, ray_session):
    from neuro_caduceus.variants.source import cohort_samples, read_haplotypes

    ds = read_haplotypes(cohort.mt, cohort.regions, "diploid", override_num_blocks=2)
    assert ds.schema().base_schema == HAPLOTYPE_SCHEMA
    got = canonical(ds.take_all())
    assert got == vcf_oracle(cohort.vcf, cohort.regions, "diploid")
    assert cohort_samples(cohort.mt) == [f"S{i:04d}" for i in range(1, 121)]


@pytest.mark.parametrize("strategy", ["diploid", "consensus"])
def test_hail_path_equals_genome_vcf_path(cohort, strategy):
    """Rows identical (order included) to genome.haplotypes.unique_haplotypes_from_vcf on genome Regions."""
    from neuro_caduceus.genome import annotation, haplotypes
    from neuro_caduceus.genome import regions as regions_mod
    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.source import read_region_group

    genes = annotation.read_genes(str(cohort.dir / "genes.gtf.gz"))
    for spec in (
        regions_mod.RegionSpec(mode="gene_body", flank=FLANK, orient="reference"),
        regions_mod.RegionSpec(mode="exons", flank=0, orient="reference"),
    ):
        regions = regions_mod.build_regions(genes, spec)
        expected = haplotypes.unique_haplotypes_from_vcf(cohort.vcf, regions, strategy)
        assert expected.num_rows > 0  # something to compare
        spans = [RegionSpan.of(r) for r in regions]
        got = [t for t in read_region_group(cohort.mt, spans, strategy, None)]
        got = pa.concat_tables(got) if got else HAPLOTYPE_SCHEMA.empty_table()
        assert canonical(got.to_pylist()) == canonical(expected.to_pylist()), spec
        by_gene = {}
        for row in expected.to_pylist():  # same order within each gene too
            by_gene.setdefault(row["gene_id"], []).append(row)
        for row_gene in {r["gene_id"] for r in got.to_pylist()}:
            assert [r for r in got.to_pylist() if r["gene_id"] == row_gene] == by_gene[row_gene]


def test_interval_pushdown_reads_only_the_gene_partitions(cohort, hail_session):
    from neuro_caduceus.variants.extract import RegionSpan, read_region_matrix

    hl = hail_session
    full = hl.read_matrix_table(cohort.mt)
    region = RegionSpan.of(cohort.regions[0])
    small = read_region_matrix(hl, cohort.mt, [region], max_ref_length=10)
    assert full.n_partitions() >= 4
    assert small.n_partitions() < full.n_partitions()
    a, b = region.segments[0]
    expected = full.filter_rows(
        (full.locus.contig == region.chrom) & (full.locus.position > a - 10) & (full.locus.position <= b)
    ).count_rows()
    assert (
        small.filter_rows((small.locus.position > a - 10) & (small.locus.position <= b)).count_rows()
        == expected
    )


def test_export_parquet_equals_datasource(cohort, ray_session, tmp_path):
    from neuro_caduceus.variants.export import export_haplotypes, read_export_samples, read_haplotypes_parquet
    from neuro_caduceus.variants.source import read_haplotypes

    out = tmp_path / "export"
    info = export_haplotypes(cohort.mt, cohort.regions, "diploid", str(out), genes_per_query=4)
    assert info["genes"] == len(cohort.regions)
    assert sorted(p.stem for p in (out / "haplotypes").glob("*.parquet")) == sorted(
        r.region_id for r in cohort.regions
    )
    from_parquet = canonical(read_haplotypes_parquet(str(out)).take_all())
    from_source = canonical(
        read_haplotypes(cohort.mt, cohort.regions, "diploid", override_num_blocks=2).take_all()
    )
    assert from_parquet == from_source and len(from_parquet) == info["rows"]
    assert read_export_samples(str(out)) == [f"S{i:04d}" for i in range(1, 121)]
    assert json.loads((out / "qc_summary.json").read_text())["samples"]["out"] == 120


@pytest.fixture(scope="module")
def qc_small_mt(tmp_path_factory, hail_session):
    from neuro_caduceus.variants.importer import import_vcf

    out = tmp_path_factory.mktemp("qc_small")
    shutil.copy(DATA / "qc_small.vcf", out / "qc_small.vcf")
    vcf = pysam.tabix_index(str(out / "qc_small.vcf"), preset="vcf", force=True)
    import_vcf([vcf], str(out / "qc_small.mt"), "GRCh38")
    return str(out / "qc_small.mt")


QC_SMALL = dict(
    min_gq=20,
    min_dp=10,
    het_ab=(0.25, 0.75),
    require_pass=True,
    min_call_rate=0.75,
    max_af=0.5,
    include_samples=DATA / "include.txt",
    exclude_samples=DATA / "exclude.txt",
)


def test_qc_counts_exact_on_hand_made_vcf(qc_small_mt, hail_session):
    """Counts derived by hand from tests/data/variants/qc_small.vcf.

    Samples: 5 in; include list (A1-A4, GHOST2) drops A5, 1 unknown; exclude list (A4, GHOST1) drops A4,
    1 unknown; 3 out (A1-A3). Entries over A1-A3 and the 7 split rows: 19 called; GQ fails v1/A2 (10) and
    v6/A2 (15); DP fails v1/A3 (5); AB fails v2/A1 (3/30); 15 left. Variants: 7 in; v3 LowQual; call rate
    < 0.75 after entry QC: v1, v2, v6 (1/3 each); AF 5/6 > 0.5: v4; 2 out (v5's two ALTs).
    """
    from neuro_caduceus.variants.qc import qc_summary

    hl = hail_session
    with pytest.warns(UserWarning, match="GHOST"):
        s = qc_summary(hl.read_matrix_table(qc_small_mt), QCConfig(**QC_SMALL))
    assert s["samples"]["in"] == 5 and s["samples"]["out"] == 3
    assert s["samples"]["include_list"]["not_in_matrix_table"] == 1
    assert s["samples"]["include_list"]["dropped"] == 1
    assert s["samples"]["exclude_list"]["not_in_matrix_table"] == 1
    assert s["samples"]["exclude_list"]["dropped"] == 1
    assert s["entries"] == {
        "called_in": 19,
        "set_missing": {"min_gq": 2, "min_dp": 1, "het_ab": 1},
        "called_out": 15,
    }
    assert s["variants"] == {
        "in": 7,
        "removed": {"filter_not_pass": 1, "min_call_rate": 3, "ac_af_bounds": 1},
        "out": 2,
    }


def test_cohort_samples_applies_lists_and_warns(qc_small_mt):
    from neuro_caduceus.variants.source import cohort_samples

    with pytest.warns(UserWarning, match="1 subject id"):
        assert cohort_samples(qc_small_mt, QCConfig(**QC_SMALL)) == ["A1", "A2", "A3"]


def test_qc_in_read_path_and_unphased_12_call(qc_small_mt):
    """After QC only v5 remains; A1's unphased 1/2 puts C on haplotype 1 and T on haplotype 2."""
    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.qc import sample_sets
    from neuro_caduceus.variants.source import read_region_group

    qc = QCConfig(**QC_SMALL)
    region = RegionSpan("G", "chr22", ((0, 1000),))
    rows = pa.concat_tables(
        read_region_group(qc_small_mt, [region], "diploid", qc, sample_sets(qc))
    ).to_pylist()
    got = {tuple((v["pos"], v["alt"]) for v in r["variants"]): r["carriers"] for r in rows}
    assert got == {
        ((500, "C"),): [{"subject_id": "A1", "hap_index": 1}, {"subject_id": "A2", "hap_index": 2}],
        ((500, "T"),): [{"subject_id": "A1", "hap_index": 2}],
    }


def test_bad_inputs_have_clear_messages(cohort, qc_small_mt, hail_session, tmp_path):
    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.importer import import_vcf
    from neuro_caduceus.variants.source import read_region_group

    hl = hail_session
    with pytest.raises(ValueError, match="contig 'chr22'.*synthetic_"):  # wrong reference genome
        import_vcf([str(DATA / "qc_small.vcf")], str(tmp_path / "x.mt"), str(cohort.dir / "genome.json"))
    with pytest.raises(ValueError, match="contig 'chr7'.*does not have"):  # interval on a contig the MT lacks
        list(read_region_group(cohort.mt, [RegionSpan("G7", "chr7", ((0, 100),))], "diploid", None))
    no_gt = tmp_path / "no_gt.mt"
    hl.read_matrix_table(qc_small_mt).drop("GT").write(str(no_gt))
    with pytest.raises(ValueError, match="no entry field.*GT"):
        list(read_region_group(str(no_gt), [RegionSpan("G", "chr22", ((0, 1000),))], "diploid", None))
    from neuro_caduceus.variants.source import HaplotypeDatasource

    # the datasource checks both on the driver, from the MatrixTable metadata, before any task runs
    with pytest.raises(ValueError, match="no entry field 'GT'"):
        HaplotypeDatasource(str(no_gt), [RegionSpan("G", "chr22", ((0, 1000),))], "diploid")
    with pytest.raises(ValueError, match="contig 'chr7'.*does not have"):
        HaplotypeDatasource(cohort.mt, [RegionSpan("G7", "chr7", ((0, 100),))], "diploid")
    with pytest.raises(ValueError, match="extra"):
        QCConfig(min_gq=20, min_qd=3)
    with pytest.raises(FileNotFoundError, match="sample list"):
        from neuro_caduceus.variants.qc import sample_sets

        sample_sets(QCConfig(exclude_samples=tmp_path / "missing.txt"))


def test_import_vcf_command_errors(cohort, tmp_path):
    from typer.testing import CliRunner

    from neuro_caduceus.cli import app

    args = ["import-vcf", "--vcf", str(DATA / "qc_small.vcf"), "--out", str(tmp_path / "x.mt")]
    result = CliRunner().invoke(app, [*args, "--reference", str(cohort.dir / "genome.json")])
    assert result.exit_code == 2 and "contig 'chr22'" in result.output
    result = CliRunner().invoke(app, [*args, "--reference", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "neither a built-in" in result.output


def test_read_tasks_group_genes_and_carry_limits(cohort):
    from neuro_caduceus.variants.source import HaplotypeDatasource

    source = HaplotypeDatasource(cohort.mt, cohort.regions, "diploid")
    size = source.estimate_inmemory_data_size()
    assert size is not None and size > 0
    assert len(source.get_read_tasks(100)) == len(cohort.regions)  # one task per gene
    tasks = source.get_read_tasks(2, per_task_row_limit=7, data_context=None)
    assert len(tasks) == 2 and all(t.per_task_row_limit == 7 for t in tasks)
    assert all(t.metadata.input_files == (cohort.mt,) for t in tasks)
    with pytest.raises(ValueError, match="strategy"):
        HaplotypeDatasource(cohort.mt, cohort.regions, "haploid")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HaplotypeDatasource(str(cohort.dir / "missing.mt"), cohort.regions, "diploid")


def test_variant_qc_command(qc_small_mt, tmp_path):
    from typer.testing import CliRunner

    from neuro_caduceus.cli import app

    config = tmp_path / "qc.yaml"
    config.write_text("min_gq: 20\nrequire_pass: true\n")
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(
        app, ["variant-qc", "--mt", qc_small_mt, "--config", str(config), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    # all 5 samples: GQ < 20 on v1/A2 (10) and v6/A2 (15); v3 is LowQual
    assert summary["entries"]["set_missing"]["min_gq"] == 2
    assert summary["variants"]["removed"]["filter_not_pass"] == 1 and summary["variants"]["out"] == 6


def test_haplotype_assignment_rules_without_hail():
    """Hand-built calls: unphased 0/k -> hap 2, unphased j/k -> j hap 1 + k hap 2, phased order kept,
    haploid -> hap 1, unphased k/k -> both; consensus merges a subject's haplotypes."""
    import numpy as np

    from neuro_caduceus.genome.calls import G0, G1, HAPLOID, PHASED, SparseCalls, haplotype_table

    v1, v2, v3 = Variant("chr1", 10, "A", "G"), Variant("chr1", 20, "C", "T"), Variant("chr1", 20, "C", "CA")
    calls = SparseCalls(
        samples=np.array(["a", "b", "c", "d"], dtype=object),
        variants=[v1, v2, v3],
        record=np.array([0, 1, 1]),
        a_index=np.array([1, 1, 2]),
        sample=np.array([0, 1, 1, 2, 3, 3]),
        var=np.array([0, 1, 2, 0, 0, 1]),
        code=np.array([G1, G1, G1, G0 | PHASED, G0 | HAPLOID, G0 | G1]),
    )

    def rows(strategy):
        table = haplotype_table("G", calls, strategy).to_pylist()
        return {
            frozenset((v["pos"], v["alt"]) for v in r["variants"]): [
                (c["subject_id"], c["hap_index"]) for c in r["carriers"]
            ]
            for r in table
        }

    assert rows("diploid") == {
        frozenset({(10, "G")}): [("a", 2), ("c", 1)],
        frozenset({(10, "G"), (20, "T")}): [("d", 1)],
        frozenset({(20, "T")}): [("b", 1), ("d", 2)],
        frozenset({(20, "CA")}): [("b", 2)],
    }
    assert rows("consensus") == {
        frozenset({(10, "G")}): [("a", 1), ("c", 1)],
        frozenset({(20, "T"), (20, "CA")}): [("b", 1)],
        frozenset({(10, "G"), (20, "T")}): [("d", 1)],
    }
    assert haplotype_table("G", calls, "reference").num_rows == 0


def test_export_variants_command(cohort, tmp_path):
    """`neuro-caduceus export-variants` end to end on the synthetic GTF + gene set."""
    from typer.testing import CliRunner

    from neuro_caduceus.cli import app

    out = tmp_path / "export"
    args = ["--mt", cohort.mt, "--gtf", str(cohort.dir / "genes.gtf.gz"), "--gene-set",
            str(cohort.dir / "geneset.yaml"), "--flank", str(FLANK), "--out", str(out)]
    res = CliRunner().invoke(app, ["export-variants", *args])
    assert res.exit_code == 0, res.output
    files = sorted(p.stem for p in (out / "haplotypes").glob("*.parquet"))
    assert files == sorted(g["gene_id"] for g in cohort.manifest["genes"])
    rows = pa.concat_tables([pq.read_table(out / "haplotypes" / f"{f}.parquet") for f in files])
    gene_regions = [r for r in cohort.regions if r.region_id != "SEGMENTED"]
    assert canonical(rows.to_pylist()) == vcf_oracle(cohort.vcf, gene_regions, "diploid")
