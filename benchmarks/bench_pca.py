"""PCA benchmark: our exact distributed fit + transform on local Ray vs sklearn IncrementalPCA, same data.

    python benchmarks/bench_pca.py [--rows 100000] [--cols 9728] [--n-components 512] [--files 50]

Data: a synthetic float32 matrix (low-rank signal + isotropic noise) written as Parquet part files
(subject_id, features) in a temp folder. Ours: `fit_pca` (per-batch float64 moments merged on the driver)
then `transform_pca` (map_batches), scores consumed by a row count. IncrementalPCA: partial_fit over the
same files in batches of --ipca-batch rows, then transform of every batch. Memory: driver peak RSS
(VmHWM, reset per phase) and the peak of the summed RSS of Ray worker processes (sampled every 0.2 s).
Exactness: on a --subsample rows subset our PCA vs sklearn PCA(svd_solver="full"); on the full data
IncrementalPCA vs ours (exact).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def rss_kb(pid: str = "self", key: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def reset_peak() -> None:
    """Reset this process's VmHWM (Linux: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class WorkerSampler(threading.Thread):
    """Peak of the summed RSS of this user's Ray worker processes (cmdline starting with 'ray::')."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb, self._halt = 0, threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            total = 0
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            if f.read(5) == b"ray::":
                                total += rss_kb(pid)
                    except OSError:
                        continue
            self.peak_kb = max(self.peak_kb, total)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_kb


def make_data(folder: Path, rows: int, cols: int, rank: int, files: int, seed: int) -> None:
    from neuro_caduceus.stats.features_io import features_table

    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, cols)).astype(np.float32) / np.sqrt(cols)
    scales = np.geomspace(30, 1, rank).astype(np.float32)
    mean = rng.normal(size=cols).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        z = rng.normal(size=(len(part), rank)).astype(np.float32) * scales
        noise = rng.normal(size=(len(part), cols)).astype(np.float32)
        x = z @ basis * np.sqrt(cols / rank) + 0.5 * noise + mean
        pq.write_table(features_table([f"S{j:07d}" for j in part], x), folder / f"part-{i:04d}.parquet")


def iter_batches(folder: Path, batch_rows: int):
    from neuro_caduceus.stats.features_io import as_matrix

    for path in sorted(folder.glob("*.parquet")):
        for rb in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield as_matrix(pa.Table.from_batches([rb]))[1].astype(np.float32)


def run_ours(folder: Path, k: int, batch: int) -> tuple[dict, object]:
    from neuro_caduceus.stats.distributed import fit_pca, transform_pca
    from neuro_caduceus.stats.features_io import read_features

    reset_peak()
    sampler = WorkerSampler()
    sampler.start()
    t0 = time.perf_counter()
    ds = read_features(str(folder))
    model = fit_pca(ds, n_components=k, batch_size=batch)
    t_fit = time.perf_counter() - t0
    n_scores = transform_pca(ds, model, batch).count()
    wall = time.perf_counter() - t0
    return {"fit_s": t_fit, "fit_transform_s": wall, "scores": n_scores,
            "driver_peak_gb": rss_kb(key="VmHWM") / 2**20, "workers_peak_gb": sampler.stop() / 2**20,
            "batches": model.fit_info_["n_batches"]}, model


def run_ipca(folder: Path, k: int, batch: int) -> tuple[dict, object]:
    from sklearn.decomposition import IncrementalPCA

    reset_peak()
    t0 = time.perf_counter()
    ipca = IncrementalPCA(n_components=k, batch_size=batch)
    for x in iter_batches(folder, batch):
        if len(x) >= k:  # sklearn refuses a partial_fit batch smaller than n_components
            ipca.partial_fit(x)
    t_fit = time.perf_counter() - t0
    n = sum(len(ipca.transform(x)) for x in iter_batches(folder, batch))
    wall = time.perf_counter() - t0
    return {"fit_s": t_fit, "fit_transform_s": wall, "scores": n,
            "driver_peak_gb": rss_kb(key="VmHWM") / 2**20}, ipca


def agreement(a_ev, a_comp, b_ev, b_comp) -> dict:
    rel = np.abs(a_ev / b_ev - 1)
    cos = np.abs(np.sum(a_comp * b_comp, axis=1))
    return {"ev_max_rel_dev": float(rel.max()), "ev_median_rel_dev": float(np.median(rel)),
            "min_abs_cos": float(cos.min()), "median_abs_cos": float(np.median(cos))}


def exactness_subsample(folder: Path, rows: int, k: int) -> dict:
    from sklearn.decomposition import PCA as SkPCA

    from neuro_caduceus.stats.pca import PCA

    parts, have = [], 0
    for x in iter_batches(folder, 4096):
        parts.append(x)
        have += len(x)
        if have >= rows:
            break
    X = np.concatenate(parts)[:rows].astype(np.float64)
    k = min(k, rows - 1)
    sk = SkPCA(n_components=k, svd_solver="full").fit(X)
    ours = PCA(n_components=k).fit(X)
    out = agreement(ours.explained_variance_, ours.components_, sk.explained_variance_, sk.components_)
    out["scores_max_abs_dev"] = float(np.abs(ours.transform(X[:500]) - sk.transform(X[:500])).max())
    return {"rows": rows, "k": k, **out}


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--cols", type=int, default=9_728)
    parser.add_argument("--rank", type=int, default=64, help="rank of the planted signal")
    parser.add_argument("--n-components", type=int, default=512)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8192, help="our rows per worker batch")
    parser.add_argument("--ipca-batch", type=int, default=2048, help="IncrementalPCA batch_size")
    parser.add_argument("--subsample", type=int, default=2000, help="rows for the exactness check vs sklearn")
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray CPUs (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    from neuro_caduceus.ray_session import ray_session

    with tempfile.TemporaryDirectory(prefix="bench_pca_") as tmp:
        folder = Path(tmp) / "matrix"
        t0 = time.perf_counter()
        make_data(folder, args.rows, args.cols, args.rank, args.files, args.seed)
        print(f"data: {args.rows} x {args.cols} float32 ({args.rows * args.cols * 4 / 1e9:.2f} GB) in "
              f"{args.files} files, written in {time.perf_counter() - t0:.0f} s", flush=True)
        with ray_session(num_cpus=args.num_cpus, include_dashboard=False):
            ours, model = run_ours(folder, args.n_components, args.batch_size)
        print("ours:", json.dumps(ours), flush=True)
        ipca_stats, ipca = run_ipca(folder, args.n_components, args.ipca_batch)
        print("IncrementalPCA:", json.dumps(ipca_stats), flush=True)
        k = min(model.n_components_, ipca.n_components_)
        ipca_dev = agreement(ipca.explained_variance_[:k], ipca.components_[:k],
                             model.explained_variance_[:k], model.components_[:k])
        signal = min(args.rank, k)
        ipca_dev_signal = agreement(ipca.explained_variance_[:signal], ipca.components_[:signal],
                                    model.explained_variance_[:signal], model.components_[:signal])
        exact = exactness_subsample(folder, args.subsample, args.n_components)
    result = {"rows": args.rows, "cols": args.cols, "n_components": args.n_components, "ours": ours,
              "ipca": ipca_stats,
              "speedup_fit_transform": ipca_stats["fit_transform_s"] / ours["fit_transform_s"],
              "ours_vs_sklearn_full_subsample": exact, "ipca_vs_exact_all_components": ipca_dev,
              f"ipca_vs_exact_first_{signal}": ipca_dev_signal}
    print(json.dumps(result, indent=1))
    print(f"fit+transform: ours {ours['fit_transform_s']:.1f} s vs IncrementalPCA "
          f"{ipca_stats['fit_transform_s']:.1f} s -> {result['speedup_fit_transform']:.2f}x; "
          f"driver peak {ours['driver_peak_gb']:.2f} GB vs "
          f"{ipca_stats['driver_peak_gb']:.2f} GB (Ray workers peak {ours['workers_peak_gb']:.2f} GB)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
