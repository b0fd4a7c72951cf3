"""Scale benchmark of the cohort job's planning stage on one exome-like gene: what a gene costs the planner
and the object store when windows travel as recipes (window jobs) instead of sequences.

    python benchmarks/bench_scale.py [--samples 50000 200000] [--windows 8192 131072] [--embed-one-batch]

Per cohort size and window: planning time and peak RSS of the planning worker (a child process running the
job's own `plan_gene` and batch packing), bytes handed to the object store for the gene (the Arrow window-job
batches), distinct windows and tokens to embed, the bytes of those distinct window sequences, and the old
design's pickled per-gene plan (every distinct window held as a string, one object per gene) for the same
gene. `--embed-one-batch` also embeds two windows of the first batch in a child process with the job's actor
class (random tiny-ps checkpoint, CPU) and reports that worker's peak RSS. Gene: `synthetic.exome_gene`
(60 kb, 10 kb captured in 12 exons, unphased calls, rare-heavy spectrum with indels, a few common variants).
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child_plan(workdir: str, n: int, window: int, seed: int) -> dict:
    """Planning in this (child) process: the job's planning of the generated gene."""
    from neuro_caduceus.cohort.plan import GenePlan, GeneUnit, open_reference
    from neuro_caduceus.cohort.window_jobs import job_window
    from neuro_caduceus.genome.haplotypes import build_sequence
    from neuro_caduceus.genome.regions import tile_windows
    from neuro_caduceus.synthetic import exome_gene

    t0 = time.perf_counter()
    gene = exome_gene(Path(workdir) / f"n{n}", n, seed=seed)
    generate_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    unit = GeneUnit("EXOME1", "EXOME1", gene.region, tile_windows(gene.region, window))
    reference = open_reference(gene.fasta)
    t0 = time.perf_counter()
    plan, packed = _plan(reference, unit, gene.haplotypes, window)
    handed, batches, first = sum(b.nbytes for b in packed), len(packed), packed[0]
    plan_s = time.perf_counter() - t0
    rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(workdir, f"first_{n}_{window}.arrow").write_bytes(pickle.dumps(first))
    # the old design's unit of work: the same plan with every distinct window sequence in it, pickled
    keyed = {j["key"]: build_sequence(reference, *job_window(j)).sequence
             for batch in packed for j in batch.column("jobs")[0].as_py()}
    seqs = [keyed[k] for k in plan.keys]
    old = len(pickle.dumps(GenePlan(unit, seqs, plan.ref_slots, plan.hap_keys, plan.hap_repl, plan.carriers,
                                    plan.counts)))
    return {"subjects": n, "window": window, "sites": gene.sites, "singletons": gene.singletons,
            "unique_haplotypes": gene.haplotypes.num_rows, "generate_s": round(generate_s, 2),
            "plan_s": round(plan_s, 2), "planner_peak_rss_mb": round(rss_plan / 1024, 1),
            "planner_rss_before_plan_mb": round(rss_before / 1024, 1),
            "windows": plan.counts["windows_embedded"], "tokens": plan.counts["tokens_embedded"],
            "batches": batches, "handed_bytes": handed, "window_bytes": sum(len(s) for s in seqs),
            "old_plan_bytes": old}


def _plan(reference, unit, haplotypes, window: int):
    """The job's planning of one gene, no stored keys, 8 windows per batch: (plan, batches)."""
    from neuro_caduceus.cohort.plan import plan_gene
    from neuro_caduceus.cohort.window_jobs import BatchPacker

    planned = plan_gene(reference, unit, haplotypes)
    packer = BatchPacker(8 * window)
    return planned.plan, [*packer.add_gene(unit.gene_id, planned.jobs, set()), *packer.flush()]


def _child_embed(workdir: str, n: int, window: int) -> dict:
    """The job's actor class embedding two windows of the gene's first batch in this (child) process."""
    import pyarrow as pa

    from neuro_caduceus.cohort.embed import EmbedWindows
    from neuro_caduceus.model.config import preset_config
    from neuro_caduceus.model.random_init import random_model

    ckpt = Path(workdir) / "ckpt"
    if not ckpt.exists():
        random_model(preset_config("tiny-ps"), seed=0).save_pretrained(ckpt)
    first = pickle.loads(Path(workdir, f"first_{n}_{window}.arrow").read_bytes())
    two = pa.array([first.column("jobs")[0].as_py()[:2]], first.schema.field("jobs").type)
    first = first.set_column(1, "jobs", two)
    actor = EmbedWindows(str(ckpt), "cpu", "float32", 8, 2, str(Path(workdir) / f"n{n}" / "exome_gene.fa"),
                         str(Path(workdir) / f"store_{n}_{window}"), {})
    actor.store.open()
    t0 = time.perf_counter()
    stats = actor(first).to_pylist()[0]
    seconds = time.perf_counter() - t0
    return {"actor_windows": stats["windows"], "actor_tokens": stats["tokens"],
            "actor_tokens_per_s": round(stats["tokens"] / seconds),
            "actor_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _run_child(kind: str, *args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, workdir, n, window = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        out = _child_plan(workdir, n, window, int(sys.argv[6])) if kind == "plan" else \
            _child_embed(workdir, n, window)
        print(json.dumps(out))
        return
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--samples", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--windows", type=int, nargs="+", default=[8_192, 131_072])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-one-batch", action="store_true")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_scale_")
    header = (f"{'subjects':>9} {'window':>8} {'uniq haps':>9} {'windows':>8} {'tokens':>12} {'plan s':>7} "
              f"{'plan RSS MB':>11} {'handed MB':>9} {'windows MB':>10} {'ratio':>6} {'old plan MB':>11}")
    print(header)
    rows = []
    for n in args.samples:
        for window in args.windows:
            r = _run_child("plan", workdir, n, window, args.seed)
            if args.embed_one_batch:
                r.update(_run_child("embed", workdir, n, window))
            r["ratio"] = r["handed_bytes"] / r["window_bytes"]
            rows.append(r)
            print(f"{n:>9,} {window:>8,} {r['unique_haplotypes']:>9,} {r['windows']:>8,} {r['tokens']:>12,} "
                  f"{r['plan_s']:>7.1f} {r['planner_peak_rss_mb']:>11.0f} {r['handed_bytes'] / 1e6:>9.2f} "
                  f"{r['window_bytes'] / 1e6:>10.1f} {r['ratio']:>6.1%} {r['old_plan_bytes'] / 1e6:>11.1f}",
                  flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
