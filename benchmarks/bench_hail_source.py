"""Throughput and peak memory of the Hail MatrixTable datasource, per Ray worker.

Builds a synthetic cohort (default 5,000 subjects x 20 genes), imports it to a MatrixTable, then runs the
datasource's read-task body (`read_region_group`, exactly what each ReadTask executes) inside Ray workers:
one warm-up gene per worker (JVM start), then the timed genes. Reports variants x samples read per second per
worker (variants = MatrixTable rows inside the requested regions) and the worker's peak resident memory
(Python worker + its Hail JVM, from /proc VmHWM), plus the end-to-end Dataset time.

  .venv/bin/python benchmarks/bench_hail_source.py [--samples 5000] [--genes 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a process plus all its descendants, in MiB (Linux /proc)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM")))
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


def _timed_read(mt_path: str, warmup, regions, strategy: str) -> dict:
    """Runs in a Ray worker: warm up Hail on one gene, then time the read of `regions`."""
    from neuro_caduceus.variants.source import read_region_group

    t0 = time.perf_counter()
    list(read_region_group(mt_path, warmup, strategy, None))
    t1 = time.perf_counter()
    rows = sum(t.num_rows for t in read_region_group(mt_path, regions, strategy, None))
    t2 = time.perf_counter()
    return {
        "pid": os.getpid(),
        "warmup_s": t1 - t0,
        "read_s": t2 - t1,
        "rows": rows,
        "peak_rss_mb": _peak_rss_mb(os.getpid()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--genes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    import ray

    from neuro_caduceus.ray_session import ensure_ray
    from neuro_caduceus.synthetic import make_cohort
    from neuro_caduceus.variants.extract import RegionSpan
    from neuro_caduceus.variants.importer import import_vcf
    from neuro_caduceus.variants.source import read_haplotypes

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_hail_"))
    t = time.perf_counter()
    manifest = make_cohort(work, n_samples=args.samples, n_genes=args.genes, seed=5)
    t_synth = time.perf_counter() - t
    t = time.perf_counter()
    info = import_vcf(
        [str(work / "cohort.vcf.gz")],
        str(work / "cohort.mt"),
        str(work / "genome.json"),
        min_partitions=2 * args.genes,
        overwrite=True,
    )
    t_import = time.perf_counter() - t
    regions = [RegionSpan(g["gene_id"], g["chrom"], ((g["start"], g["end"]),)) for g in manifest["genes"]]

    from neuro_caduceus.variants.hail_session import init_hail

    hl = init_hail()
    mt = hl.read_matrix_table(str(work / "cohort.mt"))
    n_variants = sum(
        mt.filter_rows(
            (mt.locus.contig == r.chrom)
            & (mt.locus.position > r.segments[0][0])
            & (mt.locus.position <= r.segments[0][1])
        ).count_rows()
        for r in regions
    )
    ensure_ray(num_cpus=args.workers, include_dashboard=False)
    per_worker = [regions[i :: args.workers] for i in range(args.workers)]
    remote = ray.remote(num_cpus=1)(_timed_read)
    results = ray.get(
        [remote.remote(str(work / "cohort.mt"), [grp[0]], grp[1:], "diploid") for grp in per_worker]
    )
    timed_variants = []
    for grp in per_worker:
        timed_variants.append(
            sum(
                mt.filter_rows(
                    (mt.locus.contig == r.chrom)
                    & (mt.locus.position > r.segments[0][0])
                    & (mt.locus.position <= r.segments[0][1])
                ).count_rows()
                for r in grp[1:]
            )
        )
    rates = [v * args.samples / r["read_s"] for v, r in zip(timed_variants, results, strict=True)]

    t = time.perf_counter()
    n_rows = read_haplotypes(
        str(work / "cohort.mt"), regions, "diploid", override_num_blocks=args.workers
    ).count()
    t_ds = time.perf_counter() - t
    report = {
        "samples": args.samples,
        "genes": args.genes,
        "variants_in_genes": n_variants,
        "matrix_table_rows": info["rows"],
        "synth_s": round(t_synth, 1),
        "import_s": round(t_import, 1),
        "workers": args.workers,
        "per_worker": [
            {
                "genes": len(g) - 1,
                "variants": v,
                "read_s": round(r["read_s"], 2),
                "warmup_s": round(r["warmup_s"], 1),
                "variant_samples_per_s": round(rate),
                "peak_rss_mb": round(r["peak_rss_mb"]),
            }
            for g, v, r, rate in zip(per_worker, timed_variants, results, rates, strict=True)
        ],
        "variant_samples_per_s_per_worker": round(sum(rates) / len(rates)),
        "peak_worker_rss_mb": round(max(r["peak_rss_mb"] for r in results)),
        "dataset_end_to_end_s": round(t_ds, 1),
        "haplotype_rows": n_rows,
        "cpu": os.cpu_count(),
    }
    print(json.dumps(report, indent=1))
    ray.shutdown()


if __name__ == "__main__":
    main()
