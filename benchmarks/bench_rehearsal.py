"""Biobank-size rehearsal on one machine: the real commands over a UK Biobank-size exome cohort, with a random
tiny model, so what grows with the cohort (not with the model) shows before a paid GPU cluster finds it.

    python benchmarks/bench_rehearsal.py [--subjects 470000] [--genes 20] [--window 512] [--workdir DIR]

Cohort: `synthetic.exome_cohort` (exome-like genes of 10 captured exons, sites growing with the cohort, most
of them singletons, a few common ones; unphased calls; a few per-mille missing calls), written as the
Parquet haplotype export that `export-variants` writes, plus covariates with a `batch` column. Then, on a
local Ray cluster started here (the commands join it as drivers): `embed-cohort` (random tiny-ps checkpoint,
one CPU actor, regions.mode exons), `subject-matrix`, `pca` (512 components, capped at the feature count),
`residualize` (age, sex, 10 PCs, one-hot batch) of the PCA scores.

Per stage: wall time, peak RSS of the driver (the command's process) and of the largest Ray worker (VmHWM,
which counts object-store pages a process maps) and their peak private memory (RssAnon, sampled: the
process's own heap), the object store's peak use, the bytes put into it and
spilled from it (the raylet's store stats, sampled every 0.5 s), and the output's size on disk. For the job:
unique haplotypes, distinct windows and model tokens, and GPU hours from tokens at `--gpu-tokens-per-s` (an
assumption: no GPU rate is recorded; the tokens are those of `--window`, production windows differ).
The baseline of the job's token count is naive per-subject embedding of the same windows (same run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

STAGES = ("embed-cohort", "subject-matrix", "pca", "residualize")


def _proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status field in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> set[int]:
    """Every process below `root` (by parent id), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _is_worker(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
    except OSError:
        return False


class Monitor:
    """Samples the stage's peaks every 0.5 s: driver and worker VmHWM (which counts the object-store pages
    a process maps) and their private memory (RssAnon: the process's own heap), object store use."""

    def __init__(self, driver: int) -> None:
        self.driver, self.driver_peak, self.worker_peak, self.store_peak = driver, 0, 0, 0
        self.driver_private, self.worker_private = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.driver_peak = max(self.driver_peak, _proc_status(self.driver, "VmHWM"))
            self.driver_private = max(self.driver_private, _proc_status(self.driver, "RssAnon"))
            for pid in _descendants(os.getpid()) - {self.driver}:
                if _is_worker(pid):
                    self.worker_peak = max(self.worker_peak, _proc_status(pid, "VmHWM"))
                    self.worker_private = max(self.worker_private, _proc_status(pid, "RssAnon"))
            self.store_peak = max(self.store_peak, store_stats()["used"])
            self._stop.wait(0.5)


def store_stats() -> dict:
    """Object store bytes in use now, created so far and spilled so far (the raylet's store stats, what
    `ray memory --stats-only` prints)."""
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = get_state_from_address(ray.get_runtime_context().gcs_address)  # this cluster, not another one
    stats = get_memory_info_reply(state).store_stats
    return {"used": stats.object_store_bytes_used, "created": stats.cumulative_created_bytes,
            "spilled": stats.spilled_bytes_total}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_stage(name: str, args: list[str], out: Path, in_process: bool = False) -> dict:
    """One command as its own driver process joined to this Ray cluster (in_process: in this process, on
    the Ray it already has; the driver peak is then this process's peak so far), with its peaks."""
    before = store_stats()
    t0 = time.perf_counter()
    if in_process:
        from typer.main import get_command

        from neuro_caduceus.cli import app

        with Monitor(os.getpid()) as mon:
            get_command(app).main([name, *args], prog_name="neuro-caduceus", standalone_mode=False)
    else:
        proc = subprocess.Popen([sys.executable, "-m", "neuro_caduceus", name, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with Monitor(proc.pid) as mon:
            log, _ = proc.communicate()
        if proc.returncode:
            sys.exit(f"{name} failed (exit {proc.returncode}):\n{log[-4000:]}")
    seconds = time.perf_counter() - t0
    after = store_stats()
    return {"stage": name, "s": round(seconds, 1), "driver_peak_mb": round(mon.driver_peak / 2**20),
            "driver_private_mb": round(mon.driver_private / 2**20),
            "worker_peak_mb": round(mon.worker_peak / 2**20),
            "worker_private_mb": round(mon.worker_private / 2**20),
            "store_peak_mb": round(mon.store_peak / 2**20),
            "store_created_mb": round((after["created"] - before["created"]) / 2**20),
            "store_spilled_mb": round((after["spilled"] - before["spilled"]) / 2**20),
            "output_mb": round(_size(out) / 2**20, 1)}


def rehearse(work: Path, subjects: int, genes: int, window: int = 512, components: int = 512,
             gpu_tokens_per_s: float = 1e6, seed: int = 0, in_process: bool = False) -> dict:
    """Generate the cohort under `work` and run the four stages on the Ray this process is connected to;
    returns {"job": ..., "stages": [...]}."""
    from neuro_caduceus.synthetic import exome_cohort

    t0 = time.perf_counter()
    cohort = exome_cohort(work / "cohort", subjects, genes, seed=seed)
    generate_s = time.perf_counter() - t0
    c = work / "cohort"
    subprocess.run([sys.executable, "-m", "neuro_caduceus", "make-checkpoint", "--preset", "tiny-ps",
                    "--seed", "0", "--out", str(work / "ckpt")], check=True, capture_output=True)
    body = {
        "inputs": {"haplotypes_parquet": cohort["export"], "reference_fasta": str(c / "genome.fa"),
                   "gtf": str(c / "genes.gtf.gz"), "gene_set": str(c / "geneset.yaml")},
        "regions": {"mode": "exons"},
        "model": {"checkpoint": str(work / "ckpt"), "device": "cpu", "window": window},
        "compute": {"actors_min": 1, "actors_max": 1, "cpus_per_actor": 1, "cpus_per_task": 1},
        "output": {"dir": str(work / "embeddings")},
    }
    (work / "job.yaml").write_text(yaml.safe_dump(body))
    stages = [
        run_stage("embed-cohort", ["--config", str(work / "job.yaml"), "--overwrite"], work / "embeddings",
                  in_process),
        run_stage("subject-matrix", ["--input", str(work / "embeddings"), "--out", str(work / "sm")],
                  work / "sm", in_process),
        run_stage("pca", ["--input", str(work / "sm"), "--n-components", str(components),
                          "--out", str(work / "pca")], work / "pca", in_process),
        run_stage("residualize", ["--input", str(work / "pca"), "--covariates", str(c / "covariates.parquet"),
                                  "--out", str(work / "resid"), "--categorical-covariates", "batch"],
                  work / "resid", in_process),
    ]
    manifest = json.loads((work / "embeddings" / "manifest.json").read_text())
    tokens = manifest["tokens"]
    job = {"subjects": manifest["subjects"], "genes": manifest["genes"], "window": window,
           "sites": cohort["sites"], "singletons": cohort["singletons"],
           "unique_haplotypes": manifest["unique_haplotypes"], "windows": manifest["windows"]["embedded"],
           "tokens": tokens["embedded"], "tokens_naive": tokens["naive"],
           "token_reduction_x": round(tokens["reduction"], 1),
           "gpu_hours_assumed": round(tokens["embedded"] / gpu_tokens_per_s / 3600, 4),
           "gpu_tokens_per_s_assumed": gpu_tokens_per_s, "generate_s": round(generate_s, 1),
           "export_mb": round(_size(Path(cohort["export"])) / 2**20, 1), "cpus": os.cpu_count()}
    return {"job": job, "stages": stages}


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--subjects", type=int, default=470_000)
    parser.add_argument("--genes", type=int, default=20)
    parser.add_argument("--window", type=int, default=512, help="model window (bases); exons are tiled")
    parser.add_argument("--components", type=int, default=512)
    parser.add_argument("--gpu-tokens-per-s", type=float, default=1e6,
                        help="ASSUMED production-model rate on one GPU, for the GPU-hour estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    import ray

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_rehearsal_"))
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s node start-up wait
        try:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            break
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for the time-out
            print(f"Ray did not start ({err}); {'retrying' if attempt < 2 else 'giving up'}", file=sys.stderr)
            ray.shutdown()
    else:
        sys.exit("Ray could not start on this machine")
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address  # the commands join this cluster
    figures = rehearse(work, args.subjects, args.genes, args.window, args.components, args.gpu_tokens_per_s,
                       args.seed)
    ray.shutdown()
    print("MB: peak RSS (VmHWM, object-store pages included) / private (RssAnon) of the driver and of the "
          "largest worker")
    print(f"{'stage':<15} {'wall s':>8} {'driver MB':>13} {'worker MB':>13} {'store peak MB':>13} "
          f"{'store put MB':>12} {'spilled MB':>10} {'output MB':>10}")
    for s in figures["stages"]:
        driver = f"{s['driver_peak_mb']:,}/{s['driver_private_mb']:,}"
        worker = f"{s['worker_peak_mb']:,}/{s['worker_private_mb']:,}"
        print(f"{s['stage']:<15} {s['s']:>8.1f} {driver:>13} {worker:>13} "
              f"{s['store_peak_mb']:>13,} {s['store_created_mb']:>12,} {s['store_spilled_mb']:>10,} "
              f"{s['output_mb']:>10,.1f}")
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
