"""The planning stage on one exome-like gene: what travels to the actors is recipes, not sequences.

Oracles: the distinct haplotypes counted directly from the generator's table (one window holds the whole
gene, so each distinct non-reference haplotype is one distinct window), and the sequence bytes of those
windows built with genome.build_sequence.
"""

from __future__ import annotations

import pytest

WINDOW = 131_072


@pytest.fixture(scope="module")
def gene(tmp_path_factory):
    from neuro_caduceus.synthetic import exome_gene

    return exome_gene(tmp_path_factory.mktemp("exome"), n_samples=5_000, seed=0)


def _plan(gene, window: int):
    """The job's planning of one gene (no stored keys): (plan, batches handed to the actors)."""
    from neuro_caduceus.cohort.plan import GeneUnit, open_reference, plan_gene
    from neuro_caduceus.cohort.window_jobs import BatchPacker
    from neuro_caduceus.genome.regions import tile_windows

    unit = GeneUnit("EXOME1", "EXOME1", gene.region, tile_windows(gene.region, window))
    planned = plan_gene(open_reference(gene.fasta), unit, gene.haplotypes)
    packer = BatchPacker(4 * window)
    return planned.plan, [*packer.add_gene(unit.gene_id, planned.jobs, set()), *packer.flush()]


def test_exome_gene_has_a_rare_heavy_spectrum(gene):
    assert gene.singletons > gene.sites / 2
    carriers = [len(c) for c in gene.haplotypes.column("carriers").to_pylist()]
    assert max(carriers) > 100  # common variants make shared haplotypes


def test_batches_carry_recipes_not_sequences(gene):
    """Bytes handed to the object store per gene <= 5% of the distinct window sequences' bytes."""
    from neuro_caduceus.genome.haplotypes import build_sequence
    from neuro_caduceus.genome.variant_schema import Variant

    plan, batches = _plan(gene, WINDOW)
    distinct = {tuple(sorted((v["pos"], v["ref"], v["alt"]) for v in vs))
                for vs in gene.haplotypes.column("variants").to_pylist()}
    assert plan.counts["windows_embedded"] == len(distinct) + 1  # + the reference window
    ref = build_sequence(plan_reference(gene), gene.region, []).sequence
    seq_bytes = len(ref) + sum(
        len(build_sequence(plan_reference(gene), gene.region, [Variant("chr1", *v) for v in combo]).sequence)
        for combo in distinct)
    assert plan.counts["tokens_embedded"] == seq_bytes
    handed = sum(b.nbytes for b in batches)
    assert sum(len(b.column("jobs")[0]) for b in batches) == plan.counts["windows_embedded"]
    assert handed <= 0.05 * seq_bytes, (handed, seq_bytes)


def plan_reference(gene):
    from neuro_caduceus.cohort.plan import open_reference

    return open_reference(gene.fasta)


def test_iupac_codes_in_a_gene_reference_are_counted(tmp_path):
    """IUPAC codes other than N in a gene's windows are read as N and counted in the plan (the manifest sums
    them and the run summary prints them)."""
    import pysam

    from neuro_caduceus.cohort.manifest import SUMMED
    from neuro_caduceus.cohort.plan import GeneUnit, open_reference, plan_gene
    from neuro_caduceus.genome.regions import Region, tile_windows
    from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA

    seq = "ACGT" * 50 + "ACRYGT" + "ACGT" * 50 + "KKN" + "ACGT" * 50  # R, Y, K, K: four codes; N is no code
    fasta = tmp_path / "ref.fa"
    fasta.write_text(">chr1\n" + seq + "\n")
    pysam.faidx(str(fasta))
    region = Region("G1", "G1", "chr1", "+", ((0, len(seq)),))
    unit = GeneUnit("G1", "G1", region, tile_windows(region, 256))
    plan = plan_gene(open_reference(str(fasta)), unit, HAPLOTYPE_SCHEMA.empty_table()).plan
    assert plan.counts["reference_iupac_as_n"] == 4
    assert "reference_iupac_as_n" in SUMMED
