"""The synthetic cohort: deterministic, REF matches the FASTA, planted signals where the manifest says.

The oracle is pysam reading the written files back, independent of the generator's in-memory arrays.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest

from neuro_caduceus.synthetic import make_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    make_cohort(out, n_samples=300, n_genes=6, seed=7)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes(cohort, tmp_path):
    make_cohort(tmp_path, n_samples=300, n_genes=6, seed=7)
    for name in [
        "genome.fa",
        "genome.json",
        "genes.gtf.gz",
        "cohort.vcf.gz",
        "covariates.tsv",
        "phenotype.tsv",
        "synth_manifest.json",
    ]:
        assert _digest(cohort / name) == _digest(tmp_path / name), name
    other = tmp_path / "other"
    make_cohort(other, n_samples=300, n_genes=6, seed=8)
    assert _digest(cohort / "cohort.vcf.gz") != _digest(other / "cohort.vcf.gz")


def test_vcf_matches_fasta_and_has_every_feature(cohort):
    fasta = pysam.FastaFile(str(cohort / "genome.fa"))
    vcf = pysam.VariantFile(str(cohort / "cohort.vcf.gz"))
    assert list(vcf.header.samples)[:2] == ["S0001", "S0002"]
    kinds, filters, n_multi, n_missing, n_phased, n_12, acs = set(), set(), 0, 0, 0, 0, []
    positions = set()
    for rec in vcf:
        assert fasta.fetch(rec.chrom, rec.start, rec.stop).upper() == rec.ref
        assert (rec.chrom, rec.pos) not in positions
        positions.add((rec.chrom, rec.pos))
        kinds.add(rec.info["KIND"])
        filters.update(rec.filter.keys())
        n_multi += len(rec.alts) > 1
        gts = [s["GT"] for s in rec.samples.values()]
        n_missing += sum(g == (None, None) for g in gts)
        n_phased += sum(s.phased and s["GT"] != (0, 0) for s in rec.samples.values())
        n_12 += sum(g == (1, 2) for g in gts)
        for s in rec.samples.values():  # unphased calls are written with ascending allele indices
            if not s.phased and s["GT"][0] is not None:
                assert s["GT"][0] <= s["GT"][1]
        acs.append(sum(a for g in gts for a in g if a))
    assert kinds == {"snv", "mnv", "ins", "del", "multi_snv", "multi_del_snv"}
    assert {"PASS", "LowQual"} <= filters
    assert n_multi > 0 and n_missing > 0 and n_phased > 0 and n_12 > 0
    acs = np.array(acs)
    assert (acs <= 5).mean() > 0.6  # rare-heavy spectrum
    assert (acs >= 0.05 * 600).sum() >= 1  # and a few common variants


def test_gtf_genes_and_canonical_transcripts(cohort):
    manifest = json.loads((cohort / "synth_manifest.json").read_text())
    lines = [ln.split("\t") for ln in gzip.open(cohort / "genes.gtf.gz", "rt") if not ln.startswith("#")]
    genes = [ln for ln in lines if ln[2] == "gene"]
    assert len(genes) == 6
    assert {ln[6] for ln in genes} == {"+", "-"}
    canonical = [ln for ln in lines if ln[2] == "transcript" and 'tag "Ensembl_canonical"' in ln[8]]
    assert len(canonical) == 6
    for g in manifest["genes"]:
        exons = [
            ln for ln in lines if ln[2] == "exon" and g["gene_id"] in ln[8] and "Ensembl_canonical" in ln[8]
        ]
        assert len(exons) == g["n_exons"] >= 3
        assert min(int(e[3]) for e in exons) - 1 == g["start"] and max(int(e[4]) for e in exons) == g["end"]


def test_planted_gene_effect_recomputed_from_files(cohort):
    """Carriers of rare exonic ALTs in the planted gene, recounted with pysam, are mostly cases."""
    manifest = json.loads((cohort / "synth_manifest.json").read_text())
    planted = manifest["planted_gene"]
    gtf = [ln.split("\t") for ln in gzip.open(cohort / "genes.gtf.gz", "rt") if not ln.startswith("#")]
    exons = [
        (int(ln[3]) - 1, int(ln[4]))
        for ln in gtf
        if ln[2] == "exon" and planted["gene_id"] in ln[8] and "Ensembl_canonical" in ln[8]
    ]
    chrom = next(g["chrom"] for g in manifest["genes"] if g["gene_id"] == planted["gene_id"])
    vcf = pysam.VariantFile(str(cohort / "cohort.vcf.gz"))
    n_hap = 2 * len(vcf.header.samples)
    carriers = set()
    for a, b in exons:
        for rec in vcf.fetch(chrom, a, b):
            if not a <= rec.start < b:
                continue
            gts = {sid: s["GT"] for sid, s in rec.samples.items()}
            for k in range(1, len(rec.alts) + 1):
                # AF from the visible calls; the generator's AF also counts the calls it masked as missing,
                # so the carrier count may differ by a subject or two at the 1% boundary
                if sum(x == k for g in gts.values() for x in g) / n_hap < 0.01:
                    carriers.update(sid for sid, g in gts.items() if k in g)
    pheno = pl.read_csv(cohort / "phenotype.tsv", separator="\t")
    is_carrier = pheno["subject_id"].is_in(sorted(carriers))
    assert abs(len(carriers) - planted["n_carriers"]) <= 2
    rate_c = pheno.filter(is_carrier)["mdd"].mean()
    rate_n = pheno.filter(~is_carrier)["mdd"].mean()
    assert rate_c > rate_n + 0.25
    assert 0.2 < rate_n < 0.4


def test_covariates_and_brain(cohort):
    manifest = json.loads((cohort / "synth_manifest.json").read_text())
    cov = pl.read_csv(cohort / "covariates.tsv", separator="\t")
    assert cov.columns == ["subject_id", "age", "sex", *[f"PC{k}" for k in range(1, 11)], "batch"]
    assert cov["batch"].dtype == pl.String and set(cov["sex"].unique()) == {0, 1}
    brain = pq.read_table(cohort / "brain.parquet")
    ftype = brain.schema.field("features").type
    assert pa.types.is_fixed_size_list(ftype) and ftype.list_size == 64 and ftype.value_type == pa.float32()
    assert brain["subject_id"].to_pylist() == cov["subject_id"].to_list()
    assert 0 < manifest["brain"]["expected_canonical_correlation"] < manifest["brain"]["planted_correlation"]


def test_synth_command(tmp_path):
    from typer.testing import CliRunner

    from neuro_caduceus.cli import app

    result = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path), "--samples", "20", "--genes", "2", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["planted_gene"] == "SYN2"
    assert {"genome.fa", "genome.fa.fai", "cohort.vcf.gz.tbi", "synth_manifest.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
