"""Cohort job benchmark: subject-gene embeddings per second and the model-token reduction of haplotype dedup +
window reuse against naive per-subject embedding, on a synthetic cohort with a rare-heavy (UKB-like)
allele-frequency spectrum.

    python benchmarks/bench_cohort.py [--samples 20000] [--genes 20] [--window 1024] [--source vcf|mt]

Source `vcf` (default) reads haplotypes with the pysam VCF oracle path (no Hail import cost); `mt` imports the
VCF into a MatrixTable first and reads it with the Hail path (the import time is reported separately).
Model: the random tiny-ps checkpoint on CPU, so the absolute rate is a floor; the token ratio does not
depend on the model. Naive = every subject's two haplotypes embedded window by window with no reuse.
The same config is then run again into a new output folder sharing the first run's window store (the
baseline of the ratio is the first run, in the same process): every window is a store hit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=20)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--source", choices=["vcf", "mt"], default="vcf")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp folder)")
    args = parser.parse_args()

    import ray

    from neuro_caduceus.cohort.job import run_embed_cohort
    from neuro_caduceus.ray_session import ensure_ray
    from neuro_caduceus.synthetic import make_cohort

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_cohort_"))
    t = time.time()
    make_cohort(work / "cohort", n_samples=args.samples, n_genes=args.genes, seed=args.seed)
    t_synth = time.time() - t
    subprocess.run([sys.executable, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps",
                    "--seed", "0", "--out", str(work / "ckpt")], check=True, capture_output=True)
    source = {"vcf": str(work / "cohort" / "cohort.vcf.gz")}
    t_import = 0.0
    if args.source == "mt":
        t = time.time()
        mt = str(work / "cohort.mt")
        subprocess.run([sys.executable, "-m", "neuro_caduceus.cli", "import-vcf", "--vcf", source["vcf"],
                        "--out", mt, "--reference", str(work / "cohort" / "genome.json")],
                       check=True, capture_output=True)
        t_import = time.time() - t
        source = {"matrix_table": mt}
    cohort = work / "cohort"
    body = {
        "inputs": {**source, "reference_fasta": str(cohort / "genome.fa"),
                   "gtf": str(cohort / "genes.gtf.gz"), "gene_set": str(cohort / "geneset.yaml")},
        "model": {"checkpoint": str(work / "ckpt"), "device": "cpu", "window": args.window},
        "compute": {"actors_min": 1, "actors_max": 1, "cpus_per_task": 0.5},
        "output": {"dir": str(work / "embeddings")},
    }
    (work / "job.yaml").write_text(yaml.safe_dump(body))
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ensure_ray(num_cpus=os.cpu_count(), include_dashboard=False)
    m = run_embed_cohort(work / "job.yaml", overwrite=True, quiet=True)
    # the same cohort again into a new folder, sharing the first run's window store: nothing to embed
    store = str(work / "embeddings" / "window_store")
    body["output"] = {"dir": str(work / "embeddings_again"), "window_store": store}
    (work / "job_again.yaml").write_text(yaml.safe_dump(body))
    again = run_embed_cohort(work / "job_again.yaml", overwrite=True, quiet=True)
    ray.shutdown()
    figures = {
        "subjects": m["subjects"], "genes": m["genes"], "window": args.window, "source": args.source,
        "cpus": os.cpu_count(), "synth_s": round(t_synth, 1), "import_s": round(t_import, 1),
        "job_s": m["throughput"]["seconds"],
        "subject_gene_embeddings_per_s": round(m["throughput"]["subject_gene_embeddings_per_s"], 1),
        "unique_haplotypes": m["unique_haplotypes"],
        "windows_embedded": m["windows"]["embedded"], "windows_naive": m["windows"]["naive"],
        "tokens_embedded": m["tokens"]["embedded"], "tokens_naive": m["tokens"]["naive"],
        "token_reduction_x": round(m["tokens"]["reduction"], 1),
        "window_batches": m["runs"][-1]["batches"], "actors": len(m["runs"][-1]["per_actor"]),
        "same_cohort_shared_store_s": again["throughput"]["seconds"],
        "same_cohort_shared_store_windows_embedded": again["runs"][-1]["windows_embedded"],
        "same_cohort_shared_store_hits": again["runs"][-1]["store_hits"],
        "shared_store_speedup_x": round(m["throughput"]["seconds"] / again["throughput"]["seconds"], 2),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
