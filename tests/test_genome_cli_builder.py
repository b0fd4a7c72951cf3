"""`personalize.RegionBuilder` (splices plain haplotypes itself) must equal `build_sequence` on each one.

Random multi-segment regions on both strands and random haplotypes drawn from a pool that mixes plain
variants (SNV, MNV, insertion, deletion, complex) with every case the builder must hand to build_sequence:
REF mismatches, `*` and symbolic ALTs, ALT == REF, variants straddling a segment edge or lying in a gap,
overlapping and adjacent variants.
"""

from __future__ import annotations

import random

import pysam
import pytest

from neuro_caduceus.genome.fasta import Reference
from neuro_caduceus.genome.haplotypes import build_sequence
from neuro_caduceus.genome.personalize import RegionBuilder, RegionReference
from neuro_caduceus.genome.regions import Region
from neuro_caduceus.genome.variant_schema import Variant

LENGTH = 3000


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    rng = random.Random(11)
    seq = "".join(rng.choice("ACGT") for _ in range(LENGTH))
    seq = seq[:1200] + seq[1200:1400].lower() + seq[1400:]
    path = tmp_path_factory.mktemp("builder") / "ref.fa"
    path.write_text(">chr1\n" + "".join(seq[i : i + 80] + "\n" for i in range(0, LENGTH, 80)))
    pysam.faidx(str(path))
    return Reference(str(path)), seq.upper()


def _pool(rng: random.Random, seq: str) -> list[Variant]:
    def other(b: str) -> str:
        return rng.choice([x for x in "ACGT" if x != b])

    pool = set()
    for _ in range(160):
        p0 = rng.randint(150, 2800)
        kind = rng.choice(["snv", "snv", "mnv", "ins", "del", "complex", "mismatch", "star", "symbolic",
                           "same"])
        ref = seq[p0 : p0 + (1 if kind in ("snv", "ins", "star", "symbolic", "same") else rng.randint(2, 6))]
        alt = {
            "snv": other(ref[0]),
            "mnv": "".join(other(b) for b in ref),
            "ins": ref + "".join(rng.choice("acgt") for _ in range(rng.randint(1, 5))),
            "del": ref[0],
            "complex": other(ref[0]) + "".join(rng.choice("ACGT") for _ in range(rng.randint(2, 7))),
            "mismatch": "G",
            "star": "*",
            "symbolic": "<DEL>",
            "same": ref,
        }[kind]
        if kind == "mismatch":
            ref = "".join(other(b) for b in ref)
        pool.add(Variant("chr1", p0 + 1, ref, alt))
    return sorted(pool)


@pytest.mark.parametrize("seed, strand, orient", [(1, "+", "transcript"), (2, "-", "transcript"),
                                                  (3, "-", "reference")])
def test_builder_equals_build_sequence(genome, seed, strand, orient):
    reference, seq = genome
    rng = random.Random(seed)
    pool = _pool(rng, seq)
    region = Region("G", "G", "chr1", strand, ((200, 900), (1000, 1700), (1750, 2750)), orient)
    lo = min(200, *(v.start0 for v in pool))
    hi = max(2750, *(v.end0 for v in pool))
    builder = RegionBuilder(RegionReference(reference, "chr1", lo, hi), region, pool, strict_ref=False)
    plain_seen = 0
    for trial in range(400):
        k = rng.choice([0, 1, 1, 2, 3, 5, 8])
        ids = sorted(rng.sample(range(len(pool)), k))
        got = builder.build(ids)
        expected = build_sequence(reference, region, [pool[i] for i in ids])
        assert got == expected, (trial, [pool[i] for i in ids])
        plain_seen += not (expected.skipped_overlap or expected.rejected_ref_mismatch or expected.ignored)
    assert plain_seen > 100  # both paths exercised


def test_builder_strict_ref_raises_like_build_sequence(genome):
    reference, seq = genome
    bad = Variant("chr1", 501, "A" if seq[500] != "A" else "C", "T")
    region = Region("G", "G", "chr1", "+", ((200, 900),), "reference")
    builder = RegionBuilder(RegionReference(reference, "chr1", 200, 900), region, [bad], strict_ref=True)
    with pytest.raises(ValueError, match="REF mismatch at chr1:501"):
        builder.build([0])
