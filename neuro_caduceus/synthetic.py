"""A deterministic synthetic demo cohort: genome, annotation, VCF, covariates, phenotype, brain vectors.

Why: the demo, the tests and the benchmarks need a cohort that exercises every real-data feature (multi-exon
genes on both strands, soft-masked and N stretches, a rare-heavy allele-frequency spectrum, indels, MNVs,
multi-allelic sites, phased and unphased calls, missing and low-quality calls, non-PASS sites, hemizygous
chrX calls) and that carries known planted signals (a gene effect on a binary phenotype, a gene-brain
canonical correlation) so the analyses have a ground truth. Everything derives from one numpy
`Generator(seed)`, so the same arguments give byte-identical files.

Conventions written into the files (and `synth_manifest.json`):
- `sex` is 0 = female, 1 = male (UK Biobank field 31 coding). Males carry chrX non-PAR genotypes as
  homozygous diploid calls (as DeepVariant writes hemizygous sites).
- Unphased genotypes are written with allele indices ascending (0/1, 1/2), as DeepVariant/GLnexus do;
  phased ones (0|1 or 1|0) keep haplotype order.
- Every VCF record has its own position (no two records share a locus), REF always matches the FASTA.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neuro_caduceus.genome.gene_regions import regions_from_gene_set
from neuro_caduceus.genome.genotype_counts import GENOTYPE_COUNTS_SCHEMA
from neuro_caduceus.genome.regions import Region, RegionSpec
from neuro_caduceus.genome.variant_schema import HAPLOTYPE_SCHEMA, Variant, haplotype_key
from neuro_caduceus.io import atomic_writer, write_atomic, write_csv, write_parquet, write_text

BASES = np.array(list("ACGT"))
CONTIG_PAD = 1_500  # bases before the first gene of a contig (the first N_TELOMERE are N)
N_TELOMERE = 300
GENE_GAP = 2_500  # intergenic bases between genes (holds an N stretch and soft-masked repeats)
FLANK_VARIANTS = 600  # variants are also placed up to this far outside a gene (promoters, flanks)
PAR_LENGTH = 1_000  # chrX pseudo-autosomal region at its start


@dataclass
class Gene:
    """One synthetic gene: its canonical transcript's exons (and CDS) in ascending reference order."""

    gene_id: str
    gene_name: str
    chrom: str
    strand: str
    start: int  # 0-based, inclusive
    end: int  # 0-based, exclusive
    exons: list[tuple[int, int]]
    cds: tuple[int, int]  # 0-based half-open CDS span over the exons
    alt_skip: int | None = None  # index of the exon the second, non-canonical transcript skips


@dataclass
class Site:
    """One VCF record (one locus): REF and 1-2 ALT alleles."""

    chrom: str
    pos0: int
    ref: str
    alts: list[str]
    gene: int
    kind: str
    filter: str = "PASS"
    afs: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- genome


def gene_layout(rng: np.random.Generator, n_genes: int) -> tuple[dict[str, int], list[Gene]]:
    """Place genes round-robin on chr1, chr2, chrX (chrX only with >= 3 genes) and size the contigs."""
    contigs = ["chr1", "chr2", "chrX"] if n_genes >= 3 else ["chr1", "chr2"][: max(1, n_genes)]
    cursor = {c: CONTIG_PAD for c in contigs}
    genes: list[Gene] = []
    for g in range(n_genes):
        chrom = contigs[g % len(contigs)]
        n_exons = int(rng.integers(3, 7))
        exon_lens = rng.integers(120, 320, size=n_exons)
        intron_lens = rng.integers(250, 900, size=n_exons - 1)
        start = cursor[chrom]
        exons = []
        pos = start
        for i in range(n_exons):
            exons.append((pos, pos + int(exon_lens[i])))
            pos += int(exon_lens[i]) + (int(intron_lens[i]) if i < n_exons - 1 else 0)
        end = exons[-1][1]
        strand = "+" if rng.random() < 0.5 else "-"
        cds = (exons[0][0] + int(rng.integers(20, 80)), exons[-1][1] - int(rng.integers(20, 80)))
        alt_skip = int(rng.integers(1, n_exons - 1)) if rng.random() < 0.5 else None
        genes.append(
            Gene(
                gene_id=f"ENSG{90000000000 + g + 1:011d}",
                gene_name=f"SYN{g + 1}",
                chrom=chrom,
                strand=strand,
                start=start,
                end=end,
                exons=exons,
                cds=cds,
                alt_skip=alt_skip,
            )
        )
        cursor[chrom] = end + GENE_GAP
    lengths = {c: cursor[c] + CONTIG_PAD - GENE_GAP + 1_000 for c in contigs}
    return lengths, genes


def _make_sequences(rng: np.random.Generator, lengths: dict[str, int], genes: list[Gene]) -> dict[str, str]:
    """Random GC~41% sequence; N telomeres and an N gap between genes; soft-masked repeats outside exons."""
    seqs = {}
    for chrom, length in lengths.items():
        idx = rng.choice(4, size=length, p=[0.295, 0.205, 0.205, 0.295])
        arr = BASES[idx].astype("<U1")
        arr[:N_TELOMERE] = "N"
        arr[-N_TELOMERE:] = "N"
        chrom_genes = [g for g in genes if g.chrom == chrom]
        for g in chrom_genes:  # an N stretch in the middle of the following gap (never near variants)
            gap_mid = g.end + GENE_GAP // 2
            if gap_mid + 100 < length - N_TELOMERE:
                arr[gap_mid - 50 : gap_mid + 50] = "N"
        seq = "".join(arr.tolist())
        lower = np.zeros(length, dtype=bool)
        for g in chrom_genes:  # soft-masked stretches in introns and just outside the gene
            for (_, a), (b, _) in zip(g.exons[:-1], g.exons[1:], strict=True):
                if b - a > 200:
                    s = a + int(rng.integers(30, b - a - 130))
                    lower[s : s + 80] = True
            lower[max(0, g.start - 400) : g.start - 250] = True
        seq_arr = np.frombuffer(seq.encode(), dtype="S1").copy()
        seq_arr[lower] = np.char.lower(seq_arr[lower])
        seqs[chrom] = seq_arr.tobytes().decode()
    return seqs


def _write_fasta(path: Path, seqs: dict[str, str]) -> None:
    import pysam

    lines = []
    for chrom, seq in seqs.items():
        lines.append(f">{chrom}")
        lines.extend(seq[i : i + 60] for i in range(0, len(seq), 60))
    write_text(path, "\n".join(lines) + "\n")
    pysam.faidx(str(path))


def hail_reference_json(name: str, lengths: dict[str, int]) -> dict:
    """Hail's own ReferenceGenome JSON (what `hl.ReferenceGenome.read` takes)."""
    return {
        "name": name,
        "contigs": [{"name": c, "length": n} for c, n in lengths.items()],
        "xContigs": [c for c in lengths if c == "chrX"],
        "yContigs": [],
        "mtContigs": [],
        "par": [
            {"start": {"contig": "chrX", "position": 1}, "end": {"contig": "chrX", "position": PAR_LENGTH}}
        ]
        if "chrX" in lengths
        else [],
    }


# ------------------------------------------------------------------------------------------- annotation


def _gtf_attr(**kv: str | list[str]) -> str:
    parts = []
    for k, v in kv.items():
        for item in v if isinstance(v, list) else [v]:
            parts.append(f'{k} "{item}";' if k not in {"level", "exon_number"} else f"{k} {item};")
    return " ".join(parts)


def _transcript_lines(g: Gene, exons: list[tuple[int, int]], tid: str, tname: str, tags: list[str]) -> list:
    """GENCODE-style transcript, exon, CDS and UTR lines (1-based inclusive coordinates)."""
    base = {
        "gene_id": g.gene_id,
        "transcript_id": tid,
        "gene_type": "protein_coding",
        "gene_name": g.gene_name,
        "transcript_type": "protein_coding",
        "transcript_name": tname,
    }
    rows = [(exons[0][0], exons[-1][1], "transcript", ".", {**base, "level": "2", "tag": tags})]
    ordered = exons if g.strand == "+" else exons[::-1]
    cds_done = 0
    for n, (a, b) in enumerate(ordered, start=1):
        exon_id = f"ENSE{tid[4:-2]}{n:03d}.1"
        ex = {**base, "exon_number": str(n), "exon_id": exon_id, "level": "2", "tag": tags}
        rows.append((a, b, "exon", ".", ex))
        ca, cb = max(a, g.cds[0]), min(b, g.cds[1])
        if ca < cb:
            phase = (3 - cds_done % 3) % 3
            rows.append((ca, cb, "CDS", str(phase), ex))
            cds_done += cb - ca
        for ua, ub in ((a, min(b, g.cds[0])), (max(a, g.cds[1]), b)):
            if ua < ub:
                rows.append((ua, ub, "UTR", ".", ex))
    return [
        "\t".join([g.chrom, "SYNTHETIC", feat, str(a + 1), str(b), ".", g.strand, phase, _gtf_attr(**attrs)])
        for a, b, feat, phase, attrs in rows
    ]


def write_gtf(path: Path, genes: list[Gene]) -> None:
    lines = ["##description: synthetic GENCODE-style annotation (neuro_caduceus.synthetic)", "##format: gtf"]
    for i, g in enumerate(sorted(genes, key=lambda g: (g.chrom, g.start))):
        gid = f"{g.gene_id}.{1 + i % 3}"
        gattr = _gtf_attr(gene_id=gid, gene_type="protein_coding", gene_name=g.gene_name, level="2")
        cols = [g.chrom, "SYNTHETIC", "gene", str(g.start + 1), str(g.end), ".", g.strand, ".", gattr]
        lines.append("\t".join(cols))
        gg = Gene(**{**g.__dict__, "gene_id": gid})
        num = int(g.gene_id[4:])
        lines += _transcript_lines(gg, g.exons, f"ENST{num:011d}.1", f"{g.gene_name}-201",
                                   ["basic", "Ensembl_canonical", "CCDS"])
        if g.alt_skip is not None:
            alt = [e for k, e in enumerate(g.exons) if k != g.alt_skip]
            alt_tid = f"ENST{num + 500000000:011d}.1"
            lines += _transcript_lines(gg, alt, alt_tid, f"{g.gene_name}-202", ["basic"])
    write_atomic(None, path, gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))


# --------------------------------------------------------------------------------------------- variants


def _draw_ac(rng: np.random.Generator, n_hap: int, size: int, rare_boost: bool) -> np.ndarray:
    """Allele counts with a rare-heavy spectrum: ~55% singletons, ~25% AC 2-5, ~14% AF<5%, ~6% common."""
    u = rng.random(size)
    p_single = 0.65 if rare_boost else 0.55
    ac = np.where(
        u < p_single,
        1,
        np.where(
            u < p_single + 0.25,
            rng.integers(2, 6, size),
            np.where(
                u < 0.94,
                np.maximum(1, (rng.uniform(0.003, 0.05, size) * n_hap).astype(int)),
                np.maximum(1, (rng.uniform(0.05, 0.45, size) * n_hap).astype(int)),
            ),
        ),
    )
    return np.minimum(ac, n_hap // 2)


def _make_sites(
    rng: np.random.Generator, seqs: dict[str, str], genes: list[Gene], planted: int
) -> list[Site]:
    """Variant sites, ~70% in exons, the rest in introns and flanks; one record per position."""
    sites: list[Site] = []
    for gi, g in enumerate(genes):
        seq = seqs[g.chrom]
        exon_len = sum(b - a for a, b in g.exons)
        n_exonic = int(rng.poisson(exon_len / 25)) + (12 if gi == planted else 0)
        n_other = int(rng.poisson((g.end - g.start + 2 * FLANK_VARIANTS - exon_len) / 150))
        exon_pos = np.concatenate([np.arange(a, b) for a, b in g.exons])
        other = np.setdiff1d(np.arange(g.start - FLANK_VARIANTS, g.end + FLANK_VARIANTS), exon_pos)
        cand = np.concatenate([rng.choice(exon_pos, n_exonic), rng.choice(other, n_other)])
        cand = np.unique(cand)
        taken_until = -1
        for p in cand.tolist():
            if p <= taken_until + 1 or seq[p].upper() == "N":
                continue
            u = rng.random()
            ref0 = seq[p].upper()
            others = [b for b in "ACGT" if b != ref0]
            if u < 0.74:
                kind, ref, alts = "snv", ref0, [str(rng.choice(others))]
            elif u < 0.78:  # MNV: 2-3 bases, first and last both changed (already minimal)
                k = int(rng.integers(2, 4))
                ref = seq[p : p + k].upper()
                if "N" in ref:
                    continue
                mid = ref[1:-1]
                alts = [str(rng.choice([b for b in "ACGT" if b != ref[0]])) + mid
                        + str(rng.choice([b for b in "ACGT" if b != ref[-1]]))]
                kind = "mnv"
            elif u < 0.86:
                k = int(rng.integers(1, 7))
                kind, ref, alts = "ins", ref0, [ref0 + "".join(rng.choice(list("ACGT"), k))]
            elif u < 0.94:
                k = int(rng.integers(1, 7))
                ref = seq[p : p + 1 + k].upper()
                if "N" in ref:
                    continue
                kind, alts = "del", [ref0]
            else:  # multi-allelic: two SNVs, or a deletion plus an SNV (as GLnexus writes them)
                if rng.random() < 0.5:
                    a1, a2 = rng.choice(others, 2, replace=False)
                    kind, ref, alts = "multi_snv", ref0, [str(a1), str(a2)]
                else:
                    ref = seq[p : p + 3].upper()
                    if "N" in ref:
                        continue
                    snv = str(rng.choice(others))
                    kind, alts = "multi_del_snv", [ref0, snv + ref[1:]]
            sites.append(Site(g.chrom, p, ref, alts, gi, kind))
            taken_until = p + len(ref) - 1
    return sites


def _assign_alleles(
    rng: np.random.Generator, sites: list[Site], n: int, male: np.ndarray, planted: int, x_par_end: int
) -> np.ndarray:
    """Allele index per (site, sample, haplotype) [S, N, 2] int8, each ALT on AC distinct haplotypes."""
    a = np.zeros((len(sites), n, 2), dtype=np.int8)
    n_hap = 2 * n
    for s, site in enumerate(sites):
        acs = _draw_ac(rng, n_hap, len(site.alts), rare_boost=site.gene == planted)
        slots = rng.permutation(n_hap)[: int(acs.sum())]
        flat = a[s].reshape(-1)  # index = sample * 2 + hap
        start = 0
        for k, ac in enumerate(acs.tolist(), start=1):
            flat[slots[start : start + ac]] = k
            start += ac
        if len(acs) == 2 and rng.random() < 0.5:  # a 1/2 subject: the partner of an allele-1 haplotype
            first = int(slots[0])
            flat[first ^ 1] = 2
        hemizygous = site.chrom == "chrX" and site.pos0 >= x_par_end
        if hemizygous:  # males carry one X: the diploid call is homozygous for hap 1
            a[s, male, 1] = a[s, male, 0]
        site.afs = [float((a[s] == k).mean()) for k in range(1, len(site.alts) + 1)]
    return a


def _format_entries(
    rng: np.random.Generator, a: np.ndarray, n_alt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """GT:GQ:DP:AD strings [S, N] and the missing mask: ~10% phased, ~1.5% missing, some low GQ/DP/AB."""
    s_n, n, _ = a.shape
    h1, h2 = a[..., 0].astype(np.int64), a[..., 1].astype(np.int64)
    phased = rng.random((s_n, n)) < 0.10
    missing = rng.random((s_n, n)) < 0.015
    lo, hi = np.minimum(h1, h2), np.maximum(h1, h2)
    g1 = np.where(phased, h1, lo).astype(str)
    g2 = np.where(phased, h2, hi).astype(str)
    gt = np.strings.add(np.strings.add(g1, np.where(phased, "|", "/")), g2)

    dp = np.where(rng.random((s_n, n)) < 0.03, rng.integers(2, 10, (s_n, n)), rng.integers(15, 61, (s_n, n)))
    gq = np.where(rng.random((s_n, n)) < 0.03, rng.integers(3, 20, (s_n, n)), rng.integers(30, 100, (s_n, n)))
    het = lo != hi
    ab = np.where(rng.random((s_n, n)) < 0.05, rng.uniform(0.04, 0.16, (s_n, n)), 0.5)
    alt_reads = rng.binomial(dp, ab)
    # AD, one value per allele: a hom call puts all reads on its allele, a het call splits them.
    ad = None
    for k in range(3):
        v = np.where(~het & (lo == k), dp, np.where(het & (lo == k), dp - alt_reads, 0))
        v = np.where(het & (hi == k), alt_reads, v).astype(str)
        if k == 0:
            ad = v
        else:
            ad = np.where(n_alt[:, None] >= k, np.strings.add(np.strings.add(ad, ","), v), ad)
    out = np.strings.add(np.strings.add(gt, ":"), gq.astype(str))
    out = np.strings.add(np.strings.add(out, ":"), dp.astype(str))
    out = np.strings.add(np.strings.add(out, ":"), ad)
    return np.where(missing, "./.:.:.:.", out), missing


def _write_vcf(
    path: Path, lengths: dict[str, int], samples: list[str], sites: list[Site], alleles: np.ndarray, seed: int
) -> np.ndarray:
    """Write the bgzipped, tabix-indexed VCF in chunks of sites (bounded memory); return the missing mask."""
    import pysam

    header = [
        "##fileformat=VCFv4.2",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FILTER=<ID=LowQual,Description="Low site quality">',
        '##FILTER=<ID=RefCall,Description="Reference call">',
        *[f"##contig=<ID={c},length={n}>" for c, n in lengths.items()],
        '##INFO=<ID=KIND,Number=1,Type=String,Description="Synthetic variant class">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">',
        "#" + "\t".join(["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", *samples]),
    ]
    rng = np.random.default_rng([seed, 1])
    n_alt = np.array([len(s.alts) for s in sites])
    missing = np.zeros(alleles.shape[:2], dtype=bool)
    plain = path.with_name(path.name.removesuffix(".gz"))
    with atomic_writer(plain) as fh:
        fh.write("\n".join(header) + "\n")
        for c0 in range(0, len(sites), 256):
            c1 = min(len(sites), c0 + 256)
            entries, missing[c0:c1] = _format_entries(rng, alleles[c0:c1], n_alt[c0:c1])
            for i in range(c0, c1):
                s = sites[i]
                fixed = [s.chrom, str(s.pos0 + 1), ".", s.ref, ",".join(s.alts), "50", s.filter,
                         f"KIND={s.kind}", "GT:GQ:DP:AD"]
                fh.write("\t".join(fixed) + "\t" + "\t".join(entries[i - c0].tolist()) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True)  # bgzips to `path` and writes `path`.tbi
    return missing


# ------------------------------------------------------------------------------------- subjects & traits


def _carrier_burden(
    a: np.ndarray, sites: list[Site], gene: Gene, gi: int, max_af: float, missing_mask: np.ndarray
) -> np.ndarray:
    """Per sample: number of non-missing rare ALT alleles (AF < max_af) starting inside the gene's exons."""
    burden = np.zeros(a.shape[1], dtype=np.int64)
    for s, site in enumerate(sites):
        if site.gene != gi or not any(x <= site.pos0 < y for x, y in gene.exons):
            continue
        for k, af in enumerate(site.afs, start=1):
            if af < max_af:
                burden += ((a[s] == k).sum(axis=1) * ~missing_mask[s]).astype(np.int64)
    return burden


def make_cohort(
    out: str | Path, n_samples: int = 200, n_genes: int = 6, seed: int = 0, brain_dim: int = 64
) -> dict:
    """Write the whole synthetic cohort into `out` and return its manifest (also `synth_manifest.json`)."""
    import polars as pl
    import yaml

    if n_samples < 10 or n_genes < 1:
        raise ValueError(f"synth needs --samples >= 10 and --genes >= 1 (got {n_samples}, {n_genes})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths, genes = gene_layout(rng, n_genes)
    seqs = _make_sequences(rng, lengths, genes)
    _write_fasta(out / "genome.fa", seqs)
    # Named by its layout: Hail registers a genome name once per session, so two layouts need two names.
    layout = json.dumps(sorted(lengths.items())).encode()
    ref_name = f"synthetic_{hashlib.sha256(layout).hexdigest()[:10]}"
    write_text(out / "genome.json", json.dumps(hail_reference_json(ref_name, lengths), indent=1))
    write_gtf(out / "genes.gtf.gz", genes)
    planted = min(1, n_genes - 1)
    geneset = {"name": "synthetic_demo", "genes": [g.gene_name for g in genes]}
    write_text(out / "geneset.yaml", yaml.safe_dump(geneset, sort_keys=False))

    samples = [f"S{i + 1:04d}" for i in range(n_samples)]
    male = rng.random(n_samples) < 0.45
    sites = _make_sites(rng, seqs, genes, planted)
    sites.sort(key=lambda s: (list(lengths).index(s.chrom), s.pos0))
    filt = rng.random(len(sites))
    for s, u in zip(sites, filt.tolist(), strict=True):
        s.filter = "LowQual" if u < 0.04 else ("RefCall" if u < 0.05 else "PASS")
    alleles = _assign_alleles(rng, sites, n_samples, male, planted, PAR_LENGTH)
    missing = _write_vcf(out / "cohort.vcf.gz", lengths, samples, sites, alleles, seed)

    # Covariates: age, sex (0 F / 1 M), 10 PCs with decreasing scale, batch as a categorical string.
    cov = {"subject_id": samples, "age": rng.integers(40, 71, n_samples), "sex": male.astype(np.int64)}
    for k in range(10):
        cov[f"PC{k + 1}"] = rng.normal(0, 1.0 / (1 + k), n_samples)
    cov["batch"] = np.array(["batch_a", "batch_b", "batch_c"])[rng.integers(0, 3, n_samples)]
    write_csv(pl.DataFrame(cov), out / "covariates.tsv", separator="\t")

    # Phenotype: carriers of rare exonic ALTs in the planted gene are cases far more often.
    max_af = max(0.01, 2.5 / (2 * n_samples))  # "rare": AF < 1%, or AC <= 2 in a tiny cohort
    burden = _carrier_burden(alleles, sites, genes[planted], planted, max_af, missing)
    carrier = burden > 0
    age_z = (cov["age"] - 55) / 9
    logit = np.log(0.3 / 0.7) + 0.15 * age_z + 2.5 * carrier
    mdd = (rng.random(n_samples) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    write_csv(pl.DataFrame({"subject_id": samples, "mdd": mdd}), out / "phenotype.tsv", separator="\t")

    # Brain vectors: X = s w^T + E, s = rho * g + sqrt(1 - rho^2) * e, g = standardized planted burden.
    rho = 0.6
    g_std = (burden - burden.mean()) / (burden.std() or 1.0)
    latent = rho * g_std + np.sqrt(1 - rho**2) * rng.normal(size=n_samples)
    w = rng.normal(0, 0.5, brain_dim)
    brain = (latent[:, None] * w[None, :] + rng.normal(size=(n_samples, brain_dim))).astype(np.float32)
    expected_cc = rho / np.sqrt(1 + 1 / float(w @ w))
    _write_brain(out / "brain.parquet", samples, brain)

    kinds: dict[str, int] = {}
    for s in sites:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    manifest = {
        "generator": "neuro_caduceus.synthetic.make_cohort",
        "seed": seed,
        "n_samples": n_samples,
        "n_genes": n_genes,
        "reference_name": ref_name,
        "files": {
            "fasta": "genome.fa",
            "hail_reference": "genome.json",
            "gtf": "genes.gtf.gz",
            "gene_set": "geneset.yaml",
            "vcf": "cohort.vcf.gz",
            "covariates": "covariates.tsv",
            "phenotype": "phenotype.tsv",
            "brain": "brain.parquet",
        },
        "contigs": lengths,
        "genes": [
            {"gene_id": g.gene_id, "gene_name": g.gene_name, "chrom": g.chrom, "start": g.start, "end": g.end,
             "strand": g.strand, "n_exons": len(g.exons)}
            for g in genes
        ],
        "variants": {"records": len(sites), "by_kind": kinds,
                     "non_pass": sum(s.filter != "PASS" for s in sites)},
        "sex_coding": "0=female, 1=male; males homozygous on chrX outside the PAR",
        "planted_gene": {
            "gene_id": genes[planted].gene_id,
            "gene_name": genes[planted].gene_name,
            "carrier_definition": f"has >= 1 non-missing ALT with cohort AF < {max_af} in the gene's exons",
            "n_carriers": int(carrier.sum()),
            "case_rate_carriers": float(mdd[carrier].mean()) if carrier.any() else None,
            "case_rate_noncarriers": float(mdd[~carrier].mean()) if (~carrier).any() else None,
            "logit_effect": 2.5,
        },
        "phenotype": {"column": "mdd", "base_rate": 0.3, "case_rate": float(mdd.mean())},
        "brain": {
            "dim": brain_dim,
            "genetic_factor": "standardized rare-allele burden in the planted gene",
            "planted_correlation": rho,
            "expected_canonical_correlation": float(expected_cc),
        },
    }
    write_text(out / "synth_manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _write_brain(path: Path, samples: list[str], brain: np.ndarray) -> None:

    flat = pa.array(brain.reshape(-1), type=pa.float32())
    features = pa.FixedSizeListArray.from_arrays(flat, brain.shape[1])
    table = pa.table({"subject_id": pa.array(samples, pa.string()), "features": features})
    write_parquet(table, path)


# ------------------------------------------------------------------------- one exome-like gene at scale


@dataclass
class ExomeGene:
    """One synthetic gene in a large cohort: reference, region and unique haplotypes (HAPLOTYPE_SCHEMA)."""

    fasta: str
    region: Region
    haplotypes: object  # pyarrow.Table, HAPLOTYPE_SCHEMA
    sites: int
    singletons: int


def _missing_records(rng: np.random.Generator, sites: list[tuple[int, str, str, int]],
                     n_samples: int) -> tuple[np.ndarray, pa.StructArray]:
    """Missing calls at `EXOME_MISSING_RATE` per (subject, site), vectorized: per subject the count and, in
    subject then position order, the records (POS, REF) themselves (what `missing: impute` reads)."""
    n_sites = len(sites)
    draws = rng.binomial(n_sites, EXOME_MISSING_RATE, n_samples)
    subject = np.repeat(np.arange(n_samples, dtype=np.int64), draws)
    keys = np.unique(subject * n_sites + rng.integers(0, n_sites, subject.size))  # one record once
    subject, site = keys // n_sites, keys % n_sites
    pos = np.array([p + 1 for p, _, _, _ in sites], dtype=np.int64)
    ref = np.array([r for _, r, _, _ in sites], dtype=object)
    records = pa.StructArray.from_arrays(
        [pa.array(pos[site], pa.int64()), pa.array(ref[site].tolist(), pa.string())], names=["pos", "ref"])
    return np.bincount(subject, minlength=n_samples), records


def _exome_sites(rng: np.random.Generator, seq: str, exons: list[tuple[int, int]], n_hap: int,
                 n_sites: int, n_common: int) -> list[tuple[int, str, str, int]]:
    """(pos0, ref, alt, allele count): SNVs and 1-6 bp indels in the captured exons, rare-heavy spectrum
    (allele counts ~ k^-1.8 below AF 1%, most of them singletons) plus `n_common` common ones."""
    captured = np.concatenate([np.arange(a, b) for a, b in exons])
    positions = np.unique(rng.choice(captured, n_sites, replace=False))
    k = np.arange(1, max(2, n_hap // 100))
    weights = k ** -1.8
    acs = rng.choice(k, len(positions), p=weights / weights.sum())
    common = rng.choice(len(positions), min(n_common, len(positions)), replace=False)
    acs[common] = (rng.uniform(0.02, 0.4, len(common)) * n_hap).astype(int)
    sites, taken_until = [], -1
    for p, ac in zip(positions.tolist(), acs.tolist(), strict=True):
        if p <= taken_until:
            continue
        u, ref0 = rng.random(), seq[p]
        if u < 0.9:
            ref, alt = ref0, str(rng.choice([b for b in "ACGT" if b != ref0]))
        elif u < 0.95:
            ref, alt = ref0, ref0 + "".join(rng.choice(list("ACGT"), int(rng.integers(1, 7))))
        else:
            ref, alt = seq[p : p + 1 + int(rng.integers(1, 7))], ref0
        sites.append((p, ref, alt, int(ac)))
        taken_until = p + len(ref)
    return sites


def exome_gene(out: str | Path, n_samples: int, seed: int = 0, gene_length: int = 60_000,
               captured: int = 10_000, n_exons: int = 12, n_common: int = 4) -> ExomeGene:
    """One gene of `gene_length` bases with `captured` exonic bases in `n_exons` exons, in `n_samples`
    subjects with unphased calls (het ALT alleles on haplotype 2, as GT 0/1 is written); the number of
    sites grows with the cohort (~400 at 50,000 subjects), most of them singletons.

    Why: the scale benchmark needs the haplotype diversity of an exome cohort (one distinct haplotype per
    rare-variant carrier, a few common variants combined) without writing or reading a biobank VCF.
    """
    import pysam

    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pad = 1_000
    seq = "".join(rng.choice(BASES, gene_length + 2 * pad))
    fasta = out / "exome_gene.fa"
    _write_fasta(fasta, {"chr1": seq})
    pysam.faidx(str(fasta))
    size = captured // n_exons
    starts = np.sort(rng.choice(np.arange(pad, pad + gene_length - size, 2 * size), n_exons, replace=False))
    exons = [(int(s), int(s) + size) for s in starts]
    n_hap = 2 * n_samples
    sites = _exome_sites(rng, seq, exons, n_hap, int(400 * (n_samples / 50_000) ** 0.5), n_common)
    hap_ids, site_ids = [], []
    for i, (_, _, _, ac) in enumerate(sites):
        subjects, copies = np.unique(rng.choice(n_hap, ac, replace=False) // 2, return_counts=True)
        hap_ids += [subjects * 2 + 1, subjects[copies == 2] * 2]  # unphased: hap 2 first, hap 1 if hom
        site_ids += [np.full(len(subjects), i), np.full(int((copies == 2).sum()), i)]
    hap, site = np.concatenate(hap_ids), np.concatenate(site_ids)
    order = np.lexsort((site, hap))
    hap, site = hap[order], site[order]
    bounds = np.flatnonzero(np.diff(hap)) + 1
    groups: dict[tuple, list[int]] = {}
    for h, s in zip(np.split(hap, bounds), np.split(site, bounds), strict=True):
        groups.setdefault(tuple(s.tolist()), []).append(int(h[0]))
    region = Region("EXOME1", "EXOME1", "chr1", "+", ((pad, pad + gene_length),))
    rows = []
    for combo, haps in groups.items():
        variants = [Variant("chr1", sites[i][0] + 1, sites[i][1], sites[i][2]) for i in combo]
        key = haplotype_key(region.region_id, variants)
        rows.append({"gene_id": region.region_id, "haplotype_key": key,
                     "variants": [dataclasses.asdict(v) for v in variants],
                     "carriers": [{"subject_id": f"S{h // 2:07d}", "hap_index": h % 2 + 1} for h in haps]})
    table = pa.Table.from_pylist(rows, schema=HAPLOTYPE_SCHEMA)
    singletons = sum(1 for s in sites if s[3] == 1)
    return ExomeGene(str(fasta), region, table, len(sites), singletons)


# ------------------------------------------------------------ an exome cohort as a haplotype export


EXOME_GENE_LENGTH = 12_000  # gene body bases of each exome-cohort gene
EXOME_EXONS = 10  # exons per gene (exome capture: only these are embedded, regions.mode exons)
EXOME_EXON_LENGTH = 180
EXOME_HELD_OUT = 3  # annotation genes outside the gene set (the job's reverse-complement check uses them)
EXOME_MISSING_RATE = 0.003  # missing calls per (subject, site)


def exome_cohort(out: str | Path, n_samples: int, n_genes: int, seed: int = 0, n_batches: int = 20) -> dict:
    """A cohort of `n_samples` subjects x `n_genes` exome-like genes, written as the Parquet haplotype
    export (`export-variants` layout: haplotypes/, genotype_counts/, samples.parquet, qc_summary.json) with
    genome.fa, genes.gtf.gz, geneset.yaml and covariates.parquet (age, sex, 10 PCs, `batch`).

    Why: a biobank-size rehearsal of the pipeline needs the haplotype diversity of an exome cohort (sites
    that grow with the cohort, most of them singletons, a few common ones combining) without a 470,000-sample
    VCF. Calls are unphased (het ALT alleles on haplotype 2, as GT 0/1 is written), with
    `EXOME_MISSING_RATE` missing calls counted in genotype_counts/. Everything is vectorized: no Python
    object per subject or carrier.
    """
    import yaml

    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    genes = _exome_layout(rng, n_genes + EXOME_HELD_OUT)
    length = genes[-1].end + CONTIG_PAD
    seq = "".join(BASES[rng.choice(4, length, p=[0.295, 0.205, 0.205, 0.295])].tolist())
    _write_fasta(out / "genome.fa", {"chr1": seq})
    write_gtf(out / "genes.gtf.gz", genes)
    geneset = {"name": "exome_rehearsal", "genes": [g.gene_name for g in genes[:n_genes]]}
    write_text(out / "geneset.yaml", yaml.safe_dump(geneset, sort_keys=False))
    regions = regions_from_gene_set(out / "genes.gtf.gz", out / "geneset.yaml", RegionSpec(mode="exons"))

    ids = np.array([f"S{i:07d}" for i in range(n_samples)], dtype=object)
    export = out / "export"
    (export / "haplotypes").mkdir(parents=True, exist_ok=True)
    (export / "genotype_counts").mkdir(exist_ok=True)
    n_hap, totals = 2 * n_samples, {"sites": 0, "singletons": 0, "haplotype_rows": 0, "carriers": 0}
    for region in regions:
        captured = np.concatenate([np.arange(a, b) for a, b in region.segments])
        n_sites = int(len(captured) * 0.04 * (n_samples / 50_000) ** 0.5)  # ~1 site / 8 bp at 470k
        sites = _exome_sites(rng, seq, list(region.segments), n_hap, min(n_sites, len(captured) // 2), 4)
        table, het, carriers = _exome_haplotypes(rng, region, sites, n_hap, ids)
        pq.write_table(table, export / "haplotypes" / f"{region.region_id}.parquet")
        missing, records = _missing_records(rng, sites, n_samples)
        keep = np.flatnonzero((missing > 0) | (het > 0))
        offsets = np.concatenate([[0], np.cumsum(missing[keep])]).astype(np.int32)
        counts = pa.table({"subject_id": pa.array(ids[keep].tolist(), pa.string()),
                           "gene_id": pa.array([region.region_id] * len(keep), pa.string()),
                           "n_missing": pa.array(missing[keep], pa.int32()),
                           "n_unphased_het": pa.array(het[keep], pa.int32()),
                           "missing_records": pa.ListArray.from_arrays(offsets, records)},
                          schema=GENOTYPE_COUNTS_SCHEMA)
        pq.write_table(counts, export / "genotype_counts" / f"{region.region_id}.parquet")
        totals["sites"] += len(sites)
        totals["singletons"] += sum(1 for s in sites if s[3] == 1)
        totals["haplotype_rows"] += table.num_rows
        totals["carriers"] += carriers
    pq.write_table(pa.table({"subject_id": pa.array(ids.tolist(), pa.string())}), export / "samples.parquet")
    qc = {"strategy": "diploid", "generator": "neuro_caduceus.synthetic.exome_cohort", "samples": n_samples}
    write_text(export / "qc_summary.json", json.dumps(qc, indent=1))
    _write_exome_covariates(rng, out / "covariates.parquet", ids, n_batches)
    return {"subjects": n_samples, "genes": n_genes, **totals, "export": str(export)}


def _exome_layout(rng: np.random.Generator, n_genes: int) -> list[Gene]:
    """Genes one after another on chr1, each with EXOME_EXONS exons of EXOME_EXON_LENGTH bases."""
    genes, start = [], CONTIG_PAD
    slots = EXOME_GENE_LENGTH // EXOME_EXONS
    for g in range(n_genes):
        offsets = rng.integers(0, slots - EXOME_EXON_LENGTH, EXOME_EXONS)
        exons = [(start + k * slots + int(o), start + k * slots + int(o) + EXOME_EXON_LENGTH)
                 for k, o in enumerate(offsets)]
        cds = (exons[0][0] + 30, exons[-1][1] - 30)
        genes.append(Gene(f"ENSG{80000000000 + g + 1:011d}", f"EXO{g + 1}", "chr1",
                          "+" if rng.random() < 0.5 else "-", exons[0][0], exons[-1][1], exons, cds))
        start = exons[-1][1] + GENE_GAP
    return genes


def _exome_haplotypes(rng: np.random.Generator, region: Region, sites: list, n_hap: int,
                      ids: np.ndarray) -> tuple[object, np.ndarray, int]:
    """HAPLOTYPE_SCHEMA rows of one gene, unphased het calls per subject and the carrier count, grouping
    haplotypes by their variant combination with a 64-bit sum of random site codes (numpy, no loop per
    carrier)."""

    hap_parts, site_parts, het = [], [], np.zeros(len(ids), dtype=np.int64)
    for i, (_, _, _, ac) in enumerate(sites):
        subjects, copies = np.unique(rng.choice(n_hap, ac, replace=False) // 2, return_counts=True)
        het[subjects[copies == 1]] += 1
        hap_parts += [subjects * 2 + 1, subjects[copies == 2] * 2]  # unphased: hap 2 first, hap 1 if hom
        site_parts += [np.full(len(subjects), i), np.full(int((copies == 2).sum()), i)]
    hap = np.concatenate(hap_parts) if hap_parts else np.zeros(0, np.int64)
    site = np.concatenate(site_parts) if site_parts else np.zeros(0, np.int64)
    order = np.lexsort((site, hap))
    hap, site = hap[order], site[order]
    starts = np.flatnonzero(np.r_[True, np.diff(hap) != 0]) if len(hap) else np.zeros(0, np.int64)
    codes = rng.integers(1, 2**63, len(sites), dtype=np.int64).astype(np.uint64)
    combo = np.add.reduceat(codes[site], starts) if len(hap) else np.zeros(0, np.uint64)
    haps = hap[starts]
    _, first, group = np.unique(combo, return_index=True, return_inverse=True)
    by_group = np.argsort(group, kind="stable")
    carrier_haps = haps[by_group]
    carrier_offsets = np.r_[0, np.cumsum(np.bincount(group, minlength=len(first)))]
    ends = np.r_[starts[1:], len(hap)]
    variants, keys = [], []
    for f in first.tolist():
        combo_sites = site[starts[f] : ends[f]].tolist()
        vs = [Variant(region.chrom, sites[i][0] + 1, sites[i][1], sites[i][2]) for i in combo_sites]
        variants.append([dataclasses.asdict(v) for v in vs])
        keys.append(haplotype_key(region.region_id, vs))
    carrier = pa.StructArray.from_arrays(
        [pa.array(ids[carrier_haps // 2].tolist(), pa.string()), pa.array(carrier_haps % 2 + 1, pa.int8())],
        fields=list(HAPLOTYPE_SCHEMA.field("carriers").type.value_type))
    table = pa.table({
        "gene_id": pa.array([region.region_id] * len(first), pa.string()),
        "haplotype_key": pa.array(keys, pa.string()),
        "variants": pa.array(variants, HAPLOTYPE_SCHEMA.field("variants").type),
        "carriers": pa.ListArray.from_arrays(pa.array(carrier_offsets, pa.int32()), carrier),
    }, schema=HAPLOTYPE_SCHEMA)
    return table, het, len(haps)


def _write_exome_covariates(rng: np.random.Generator, path: Path, ids: np.ndarray, n_batches: int) -> None:

    n = len(ids)
    cov = {"subject_id": pa.array(ids.tolist(), pa.string()), "age": rng.integers(40, 71, n),
           "sex": (rng.random(n) < 0.45).astype(np.int64)}
    for k in range(10):
        cov[f"PC{k + 1}"] = rng.normal(0, 1.0 / (1 + k), n)
    cov["batch"] = pa.array([f"batch_{b:02d}" for b in rng.integers(0, n_batches, n).tolist()], pa.string())
    write_parquet(pa.table(cov), path)
