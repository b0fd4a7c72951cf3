"""Haplotype benchmark: our VCF -> unique haplotypes -> sequences path vs GenVarLoader, same VCF and regions.

    .venv/bin/python benchmarks/bench_haplotypes.py [--samples 2000] [--regions 150] [--length 10000]

Data (deterministic, numpy Generator(seed), in a temp folder): a random genome holding `--regions` regions
of `--length` bases (2 kb apart, over 3 contigs), and a bgzipped, tabix-indexed VCF of `--samples`
unphased diploid samples. Sites: about one per 40 bases inside the regions (none within 30 bases of a
region edge, none overlapping another); ~88% SNVs, 6% deletions and 6% insertions of 1-10 bases;
allele counts with a rare-heavy spectrum (~50% singletons, ~20% doubletons, ~20% AC 3-20, ~8% AF
0.5-5%, ~2% AF 5-50%). Biallelic, no missing calls, so the file is already what GenVarLoader requires.

Ours: `unique_haplotypes_from_vcf` (cyvcf2 read, unique haplotypes + carriers) then `region_haplotypes`
(each unique haplotype built once with `build_sequence`) and, per region, the list of all samples x 2
haplotype sequences (identical haplotypes are the SAME Python string object, shared, not copied).
GenVarLoader: `gvl.write` (VCF + BED -> its dataset; reported separately: a one-off preprocessing) then
`gvl.Dataset.open(path, reference).with_seqs("haplotypes").with_len("ragged")`, every region x all
samples retrieved as ragged byte arrays. Both single process; the timings include reading the VCF.
Check: on a sample of regions x samples, both haplotype sequences must be identical (mismatches reported).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

BASES = np.frombuffer(b"ACGT", dtype="S1")
GAP = 2_000
EDGE = 30
CONTIGS = ("chr1", "chr2", "chr3")


def make_genome(rng: np.random.Generator, n_regions: int, length: int, folder: Path):
    """FASTA + BED: regions spread round-robin over three contigs with GAP bases around each."""
    import pysam

    per_contig = {c: [] for c in CONTIGS}
    for i in range(n_regions):
        per_contig[CONTIGS[i % len(CONTIGS)]].append(i)
    seqs, regions = {}, []
    for chrom, ids in per_contig.items():
        if not ids:
            continue
        size = GAP + len(ids) * (length + GAP)
        seqs[chrom] = BASES[rng.choice(4, size=size, p=[0.295, 0.205, 0.205, 0.295])].tobytes().decode()
        for k, i in enumerate(ids):
            start = GAP + k * (length + GAP)
            regions.append((f"REG{i:04d}", chrom, start, start + length))
    regions.sort(key=lambda r: int(r[0][3:]))
    fasta = folder / "genome.fa"
    with open(fasta, "w") as fh:
        for chrom, seq in seqs.items():
            fh.write(f">{chrom}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    pysam.faidx(str(fasta))
    bed = folder / "regions.bed"
    bed.write_text("".join(f"{c}\t{a}\t{b}\t{n}\t0\t+\n" for n, c, a, b in regions))
    return seqs, regions, fasta, bed


def allele_counts(rng: np.random.Generator, n: int, n_hap: int) -> np.ndarray:
    u = rng.random(n)
    ac = np.select(
        [u < 0.50, u < 0.70, u < 0.90, u < 0.98],
        [1, 2, rng.integers(3, 21, n), (rng.uniform(0.005, 0.05, n) * n_hap).astype(int)],
        (rng.uniform(0.05, 0.5, n) * n_hap).astype(int),
    )
    return np.clip(ac, 1, n_hap - 1)


def make_sites(rng: np.random.Generator, seqs: dict, regions: list, length: int) -> list:
    """Non-overlapping (chrom, pos 1-based, ref, alt) sites, sorted, inside the regions away from edges."""
    sites = []
    for _, chrom, start, end in sorted(regions, key=lambda r: (r[1], r[2])):
        seq = seqs[chrom]
        n = rng.poisson(length / 40)
        starts = np.sort(rng.choice(np.arange(start + EDGE, end - EDGE - 12), size=n, replace=False))
        kinds = rng.choice(3, size=n, p=[0.88, 0.06, 0.06])
        sizes = rng.integers(1, 11, size=n)
        last_end = -1
        for p0, kind, size in zip(starts.tolist(), kinds.tolist(), sizes.tolist(), strict=True):
            if p0 <= last_end:  # keep one base between sites: no overlap, no shared anchor
                continue
            if kind == 0:
                ref = seq[p0]
                alt = "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]
            elif kind == 1:
                ref, alt = seq[p0 : p0 + size + 1], seq[p0]
            else:
                ref, alt = seq[p0], seq[p0] + BASES[rng.integers(0, 4, size)].tobytes().decode()
            sites.append((chrom, p0 + 1, ref, alt))
            last_end = p0 + len(ref)
    return sites


def write_vcf(rng: np.random.Generator, sites: list, samples: list[str], folder: Path) -> Path:
    """Unphased diploid genotypes: AC ALT alleles dropped on distinct haplotype slots, written 0/1 or 1/1."""
    import pysam

    n_hap = 2 * len(samples)
    ac = allele_counts(rng, len(sites), n_hap)
    gt_text = np.array(["0/0", "0/1", "1/1"], dtype=object)
    path = folder / "cohort.vcf"
    lengths = {}
    with open(folder / "genome.fa.fai") as fai:
        for line in fai:
            name, size = line.split("\t")[:2]
            lengths[name] = size
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n")
        fh.writelines(f"##contig=<ID={c},length={n}>\n" for c, n in lengths.items())
        fh.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        fh.write("#" + "\t".join(["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"]))
        fh.write("\t" + "\t".join(samples) + "\n")
        zero = np.zeros(len(samples), dtype=np.int64)
        for (chrom, pos, ref, alt), k in zip(sites, ac.tolist(), strict=True):
            slots = rng.choice(n_hap, size=k, replace=False)
            dosage = zero.copy()
            np.add.at(dosage, slots // 2, 1)
            fh.write(f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(gt_text[dosage]) + "\n")
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return Path(f"{path}.gz")


def to_bcf(vcf: Path) -> Path:
    """The same records as BCF + .csi (htslib parses binary genotypes several times faster than text)."""
    import pysam
    from pysam import bcftools

    bcf = vcf.with_name("cohort.bcf")
    with pysam.VariantFile(str(vcf)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    bcftools.index(str(bcf))
    return bcf


def run_ours(fasta: Path, vcf: Path, regions: list, check_regions: set[str], workers: int = 1) -> dict:
    """All samples x regions x 2 haplotype sequences; returns timings and those of `check_regions`."""
    from neuro_caduceus.genome.fasta import Reference
    from neuro_caduceus.genome.haplotypes import unique_haplotypes_from_vcf
    from neuro_caduceus.genome.personalize import region_haplotypes, vcf_samples
    from neuro_caduceus.genome.regions import Region

    t0 = time.perf_counter()
    spans = [Region(n, n, c, "+", ((a, b),), "reference") for n, c, a, b in regions]
    samples = vcf_samples(str(vcf))
    table = unique_haplotypes_from_vcf(str(vcf), spans, "diploid", workers=workers)
    t_read = time.perf_counter()
    reference = Reference(str(fasta))
    delivered = bases = built = 0
    keep = {}
    for rh in region_haplotypes(reference, table, spans, samples, "diploid"):
        seqs = rh.sequences
        per_sample = [seqs[k] for k in rh.assignment.ravel().tolist()]  # samples x 2, shared strings
        delivered += len(per_sample)
        bases += sum(map(len, per_sample))
        built += len(seqs)
        if rh.region.region_id in check_regions:
            keep[rh.region.region_id] = per_sample
    t_end = time.perf_counter()
    return {"read_s": t_read - t0, "build_s": t_end - t_read, "total_s": t_end - t0, "haplotypes": delivered,
            "bases": bases, "built": built, "unique_rows": table.num_rows, "samples": samples, "seqs": keep}


def run_gvl(job: dict) -> dict:
    """GenVarLoader's side (run in the interpreter that has genvarloader; see --gvl-python)."""
    import genvarloader as gvl
    import polars as pl

    folder = Path(job["folder"])
    t0 = time.perf_counter()
    bed_df = pl.read_csv(job["bed"], separator="\t", has_header=False,
                         new_columns=["chrom", "chromStart", "chromEnd", "name", "score", "strand"])
    gvl.write(folder / "gvl.ds", bed_df, variants=job["vcf"], overwrite=True)
    t_write = time.perf_counter()
    ds = gvl.Dataset.open(folder / "gvl.ds", reference=job["fasta"], region_names="name")
    ds = ds.with_seqs("haplotypes").with_len("ragged")
    names = ds.regions["name"].to_list()
    index = {s: i for i, s in enumerate(ds.samples)}
    delivered = bases = 0
    keep: dict = {}
    for r in range(ds.n_regions):
        haps = ds[r, :]  # all samples: ragged (samples, ploidy, ~length) bytes
        lengths = np.asarray(haps.lengths)
        delivered += lengths.size
        bases += int(lengths.sum())
        if names[r] in job["check_regions"]:
            keep[names[r]] = {s: [np.asarray(haps[index[s], h]).tobytes().decode() for h in (0, 1)]
                              for s in job["check_samples"]}
    t_end = time.perf_counter()
    return {"version": gvl.__version__, "write_s": t_write - t0, "read_s": t_end - t_write,
            "total_s": t_end - t0, "haplotypes": delivered, "bases": bases, "seqs": keep}


def gvl_subprocess(python: str, job: dict) -> dict:
    """GenVarLoader pins polars < 2 and pyarrow < 25, so it runs in its own environment."""
    import subprocess
    import sys

    job_file = Path(job["folder"]) / "gvl_job.json"
    job_file.write_text(json.dumps(job))
    log = Path(job["folder"]) / "gvl.log"
    with open(log, "w") as fh:
        done = subprocess.run([python or sys.executable, __file__, "--gvl-job", str(job_file)],
                              stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        tail = log.read_text()[-3000:]
        exe = python or sys.executable
        raise SystemExit(f"GenVarLoader run failed (exit {done.returncode}) with {exe}:\n"
                         f"{tail}\nInstall it in its own environment: python -m venv ENV && "
                         "ENV/bin/pip install genvarloader; then pass --gvl-python ENV/bin/python")
    return json.loads(Path(job["folder"], "gvl_result.json").read_text())


def compare(ours: dict, theirs: dict, regions: list[str], samples: list[str]) -> tuple[int, int, list]:
    checked, bad = 0, []
    our_index = {s: i for i, s in enumerate(ours["samples"])}
    for region in regions:
        for sample in samples:
            for h in (0, 1):
                a = ours["seqs"][region][our_index[sample] * 2 + h]
                b = theirs["seqs"][region][sample][h]
                checked += 1
                if a != b:
                    bad.append((region, sample, h + 1, len(a), len(b)))
    return checked, len(bad), bad[:5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--regions", type=int, default=150)
    parser.add_argument("--length", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-regions", type=int, default=15)
    parser.add_argument("--check-samples", type=int, default=100)
    parser.add_argument("--no-gvl", action="store_true", help="only our path (GenVarLoader not installed)")
    parser.add_argument("--bcf", action="store_true", help="give both tools the same calls as indexed BCF")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each tool (median shown)")
    parser.add_argument("--workers", type=int, default=1, help="our VCF-reading processes (default 1)")
    parser.add_argument("--gvl-python", default=os.environ.get("GVL_PYTHON"),
                        help="interpreter with genvarloader installed (default: $GVL_PYTHON, else this one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--gvl-job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gvl_job:
        job = json.loads(args.gvl_job.read_text())
        Path(job["folder"], "gvl_result.json").write_text(json.dumps(run_gvl(job)))
        return

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_haplotypes_") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        seqs, regions, fasta, bed = make_genome(rng, args.regions, args.length, folder)
        sites = make_sites(rng, seqs, regions, args.length)
        samples = [f"S{i + 1:05d}" for i in range(args.samples)]
        vcf = write_vcf(rng, sites, samples, folder)
        if args.bcf:
            vcf = to_bcf(vcf)
        print(f"data: {args.samples} samples x {args.regions} regions of {args.length:,} bases, "
              f"{len(sites):,} sites, {vcf.name} {os.path.getsize(vcf) / 1e6:.1f} MB (made in "
              f"{time.perf_counter() - t:.1f} s)", flush=True)
        pick = np.random.default_rng(args.seed + 1)
        check_regions = sorted(pick.choice([r[0] for r in regions], min(args.check_regions, len(regions)),
                                           replace=False).tolist())
        check_samples = sorted(pick.choice(samples, min(args.check_samples, len(samples)),
                                           replace=False).tolist())

        job = {"folder": str(folder), "bed": str(bed), "vcf": str(vcf), "fasta": str(fasta),
               "check_regions": check_regions, "check_samples": check_samples}
        runs_ours, runs_gvl = [], []
        for _ in range(args.repeat):  # alternate the two tools so machine load hits both alike
            runs_ours.append(run_ours(fasta, vcf, regions, set(check_regions), args.workers))
            if not args.no_gvl:
                runs_gvl.append(gvl_subprocess(args.gvl_python, job))
        ours = runs_ours[0]
        figures = {"samples": args.samples, "regions": args.regions, "length": args.length,
                   "sites": len(sites), "input": vcf.name, "haplotypes": ours["haplotypes"],
                   "bases": ours["bases"], "built": ours["built"],
                   "ours": [{k: v for k, v in r.items() if k not in ("samples", "seqs")} for r in runs_ours]}
        steps = [("ours: read + unique haplotypes", runs_ours, "read_s"),
                 ("ours: build sequences + deliver", runs_ours, "build_s"),
                 ("ours: total", runs_ours, "total_s")]
        if runs_gvl:
            theirs = runs_gvl[0]
            steps += [("GenVarLoader: gvl.write (preprocessing)", runs_gvl, "write_s"),
                      ("GenVarLoader: retrieve haplotypes", runs_gvl, "read_s"),
                      ("GenVarLoader: total (write + retrieve)", runs_gvl, "total_s")]
            figures["gvl"] = [{k: v for k, v in r.items() if k != "seqs"} for r in runs_gvl]
            checked, n_bad, examples = compare(ours, theirs, check_regions, check_samples)
            figures["check"] = {"haplotypes_compared": checked, "mismatches": n_bad, "examples": examples}
            assert theirs["haplotypes"] == ours["haplotypes"], (theirs["haplotypes"], ours["haplotypes"])

    n, b = ours["haplotypes"], ours["bases"]
    print(f"\n{n:,} haplotypes ({args.samples} samples x {args.regions} regions x 2), {b:,} bases, from "
          f"{vcf.name}; ours built {ours['built']:,} unique sequences (reference included), shared with "
          f"their carriers. Median of {args.repeat} alternating runs (min-max):")
    print(f"{'step':42s} {'seconds':>18s} {'haplotypes/s':>13s} {'Mbases/s':>9s}")
    median = {}
    for name, runs, key in steps:
        secs = sorted(r[key] for r in runs)
        median[name] = sec = float(np.median(secs))
        rate = "total" in name or "retrieve" in name
        print(f"{name:42s} {sec:6.2f} ({secs[0]:.2f}-{secs[-1]:.2f}) "
              f"{(f'{n / sec:13,.0f}' if rate else ''):>13s} {(f'{b / sec / 1e6:9.1f}' if rate else ''):>9s}")
    figures["median_s"] = median
    if runs_gvl:
        ours_s = median["ours: total"]
        print(f"\nratio ours / GenVarLoader (haplotypes/s, medians): "
              f"{median['GenVarLoader: total (write + retrieve)'] / ours_s:.2f}x including gvl.write, "
              f"{median['GenVarLoader: retrieve haplotypes'] / ours_s:.2f}x against retrieval alone")
        c = figures["check"]
        print(f"check: {c['haplotypes_compared']:,} haplotypes compared ({len(check_regions)} regions x "
              f"{len(check_samples)} samples x 2): {c['mismatches']} mismatches {c['examples'] or ''}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
