"""One prepared GPU check (under 8 minutes on an H100/H200): correctness, precision, throughput, cohort job.

Sections (each records its own error instead of stopping the run; the exit status is 1 if any failed):
  device     device name, torch/CUDA/Triton versions, which scan backends import
  golden     the shipped golden checkpoints (tests/data/golden) on the device in fp32, per scan path
             (torch chunked, Triton, mamba-ssm when importable): max |diff| to the official outputs
  precision  pooled strand-invariant embeddings under bf16/fp16 autocast vs fp32 on the same sequences
             (relative deviation = the noise floor of variant effects), RC invariance under each dtype, and
             the fp32 effect of one SNV for scale
  speed      forward tokens/s of d256-l16 PS (random weights) at L = 8,192 / 32,768 / 131,072 for the batch
             sizes that fit, per path and dtype, with peak GPU memory, beside a lower bound on time from the
             FLOPs and the bytes moved between the model's unfused ops
  cohort     the demo cohort job (synthetic cohort, tiny-ps) with a GPU actor, fp32 and bf16, its shards
             compared with a CPU run's
  dnabert2   DNABERT-2 through the encoder contract: the golden checkpoint on the device in fp32 (max |diff|
             to the official outputs), a padded batch of mixed lengths against the unpadded runs, pooled
             vectors under bf16 vs fp32 and RC invariance, and tokens/s + bases/s of the public 117M shape
             (random weights) at a few window lengths and batch sizes with peak memory

    python benchmarks/gpu_check.py --out gpu_check.json               # on the GPU machine
    python benchmarks/gpu_check.py --cpu-smoke --out smoke.json       # tiny sizes on CPU: the script works
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
D256 = "caduceus-ps_seqlen-131k_d_model-256_n_layer-16"
# Peak rates for the bound (dense, SXM parts): fp32 without tensor cores, bf16/fp16 with; HBM bandwidth.
PEAKS = {"H200": (67e12, 989e12, 4.8e12), "H100": (67e12, 989e12, 3.35e12)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _autocast(device: str, dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=DTYPES[dtype])


def scan_paths(device: str) -> list[str]:
    """The scan backends this run can exercise on `device`."""
    from neuro_caduceus.model import scan

    if device == "cuda":
        return ["torch", *sorted(scan.available_backends("cuda"), key=["triton", "mamba-ssm"].index)]
    return ["torch", *sorted(scan.available_backends("cpu"))]


@contextlib.contextmanager
def on_path(path: str) -> Iterator[None]:
    from neuro_caduceus.model import scan

    with scan.using_backend(path):
        yield


def section_device(device: str) -> dict[str, Any]:
    from neuro_caduceus.model import scan

    out: dict[str, Any] = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "backends": scan_paths(device),
                           "auto_backend": scan.pick_backend(device, scan.available_backends(device))}
    out["name"] = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    if device == "cuda":
        out["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    with contextlib.suppress(ImportError):
        import triton

        out["triton"] = triton.__version__
    return out


def section_golden(device: str, folders: list[str]) -> dict[str, Any]:
    """fp32 on the device, per path: max |diff| of last_hidden_state and logits to the official outputs."""
    from neuro_caduceus.model import from_pretrained

    rows = []
    for name in folders:
        golden = np.load(GOLDEN / name / "golden.npz")
        model = from_pretrained(GOLDEN / name).to(device)
        ids = torch.from_numpy(golden["input_ids"]).to(device)
        for path in scan_paths(device):
            with torch.inference_mode(), on_path(path):
                hidden = model.hidden_states(ids).float().cpu().numpy()
                logits = model(ids).float().cpu().numpy()
            diff = max(float(np.abs(hidden - golden["last_hidden_state"]).max()),
                       float(np.abs(logits - golden["logits"]).max()))
            rows.append({"checkpoint": name, "path": path, "max_abs_diff": diff, "ok": diff <= 1e-4})
    return {"rows": rows, "ok": all(r["ok"] for r in rows)}


def _random_seqs(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), length)) for _ in range(n)]


def _revcomp(s: str) -> str:
    return s[::-1].translate(str.maketrans("ACGT", "TGCA"))


def _pooled(emb: Any, seqs: list[str]) -> np.ndarray:
    sums, counts = emb.pool_windows(seqs)
    return sums / counts[:, None]


def section_precision(device: str, n_seqs: int, length: int, dtypes: list[str], golden: str,
                      random_preset: str | None) -> dict[str, Any]:
    """Per checkpoint, path and dtype: deviation of pooled embeddings from fp32 and RC invariance."""
    from neuro_caduceus.model import from_pretrained, preset_config
    from neuro_caduceus.model.embedder import Embedder
    from neuro_caduceus.model.random_init import random_model

    seqs = _random_seqs(n_seqs, length, seed=1)
    snv = [s[: length // 2] + ("A" if s[length // 2] != "A" else "C") + s[length // 2 + 1:] for s in seqs]
    models = {f"{golden} (golden)": from_pretrained(GOLDEN / golden)}
    if random_preset:
        models[f"{random_preset} (random)"] = random_model(preset_config(random_preset), seed=0)
    rows = []
    for label, model in models.items():
        for path in scan_paths(device):
            base = None
            for dtype in dtypes:
                emb = Embedder(model, device=device, dtype=dtype, batch_size=n_seqs)
                with on_path(path):
                    fwd, rc = _pooled(emb, seqs), _pooled(emb, [_revcomp(s) for s in seqs])
                    alt = _pooled(emb, snv) if base is None else None
                norm = np.linalg.norm(fwd, axis=1)
                row = {"model": label, "path": path, "dtype": dtype,
                       "rc_rel": float((np.linalg.norm(fwd - rc, axis=1) / norm).max())}
                if base is None:  # the first dtype is fp32: the reference, and the SNV effect for scale
                    base = fwd
                    row["snv_effect_rel_median"] = float(np.median(np.linalg.norm(alt - fwd, axis=1) / norm))
                else:
                    rel = np.linalg.norm(fwd - base, axis=1) / np.linalg.norm(base, axis=1)
                    row |= {"dev_rel_max": float(rel.max()), "dev_rel_median": float(np.median(rel)),
                            "dev_abs_max": float(np.abs(fwd - base).max())}
                rows.append(row)
    return {"seqs": n_seqs, "length": length, "rows": rows}


def model_cost(cfg: Any, dtype: str) -> tuple[float, float]:
    """(FLOPs, bytes) per token of a PS forward: both strand halves, both directions, every layer.

    FLOPs: the projections (2 per multiply-add), the conv, and ~9 per scan element (exp counted as one).
    Bytes: every tensor the unfused layer writes and reads back once (activations in `dtype`, scan in fp32).
    """
    d, E, N, r, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank_value, cfg.d_conv
    halves = 2 if cfg.rcps else 1
    proj = 2 * (d * 2 * E + 2 * (E * (r + 2 * N) + r * E) + E * d)
    per_dir = 2 * K * E + 9 * E * N + 6 * E
    flops = halves * cfg.n_layer * (proj + 2 * per_dir)
    act = 4 if dtype == "float32" else 2
    per_dir_bytes = act * 2 * (E + (r + 2 * N)) + 4 * 2 * (2 * E)  # conv out, x_proj out; delta, y (fp32)
    bytes_ = halves * cfg.n_layer * (act * 2 * (d + 2 * E + E + d) + 2 * per_dir_bytes)
    return float(flops), float(bytes_)


def _bound_s(name: str, dtype: str, flops: float, bytes_: float) -> float | None:
    peaks = next((v for k, v in PEAKS.items() if k in name), None)
    if peaks is None:
        return None
    fp32, half, bw = peaks
    return max(flops / (fp32 if dtype == "float32" else half), bytes_ / bw)


def section_speed(device: str, preset: str, lengths: list[int], batches: list[int], dtypes: list[str],
                  budget_s: float) -> dict[str, Any]:
    """tokens/s per (path, dtype, L, batch); a case predicted to exceed its share of the budget is skipped."""
    from neuro_caduceus.model import preset_config
    from neuro_caduceus.model.random_init import random_model

    cfg = preset_config(preset)
    model = random_model(cfg, seed=0).to(device).eval()
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    total = torch.cuda.get_device_properties(0).total_memory if device == "cuda" else None
    rows: list[dict[str, Any]] = []
    paths = scan_paths(device)[::-1]  # compiled kernels first; each path gets an equal share of the budget
    for path in paths:
        deadline = time.perf_counter() + budget_s / len(paths)
        for dtype in dtypes:
            per_token_s = per_token_mem = None  # from the last measured case, to predict the next one
            for L in lengths:
                for batch in batches:
                    row: dict[str, Any] = {"path": path, "dtype": dtype, "L": L, "batch": batch}
                    tokens = L * batch
                    left = deadline - time.perf_counter()
                    if per_token_s is not None and 3 * per_token_s * tokens > left:
                        rows.append(row | {"skipped": "over the time budget"})
                        continue
                    if per_token_mem is not None and total and per_token_mem * tokens > 0.8 * total:
                        rows.append(row | {"skipped": "would not fit in memory"})
                        continue
                    ids = torch.randint(7, 11, (batch, L), device=device)
                    try:
                        with torch.inference_mode(), on_path(path), _autocast(device, dtype):
                            model.hidden_states(ids[:, : min(L, 1024)])  # warm-up (kernel compiles)
                            if device == "cuda":
                                torch.cuda.empty_cache()
                                torch.cuda.reset_peak_memory_stats()
                            times = []
                            for _ in range(2):
                                _sync(device)
                                t0 = time.perf_counter()
                                model.hidden_states(ids)
                                _sync(device)
                                times.append(time.perf_counter() - t0)
                    except torch.OutOfMemoryError:
                        rows.append(row | {"skipped": "out of memory"})
                        torch.cuda.empty_cache()
                        break
                    s = min(times)
                    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
                    per_token_s, per_token_mem = s / tokens, peak / tokens if peak else None
                    flops, bytes_ = model_cost(cfg, dtype)
                    bound = _bound_s(name, dtype, flops * tokens, bytes_ * tokens)
                    rows.append(row | {"seconds": s, "tokens_per_s": tokens / s, "peak_gib": peak / 2**30,
                                       "bound_tokens_per_s": tokens / bound if bound else None,
                                       "of_bound": bound / s if bound else None})
                    del ids
    return {"preset": preset, "rows": rows}


def _shard_embeddings(out_dir: Path) -> dict[tuple[str, str], np.ndarray]:
    import pyarrow.parquet as pq

    got = {}
    for f in sorted((out_dir / "shards").glob("*.parquet")):
        t = pq.read_table(f, columns=["subject_id", "gene_id", "embedding"]).to_pydict()
        for s, g, e in zip(t["subject_id"], t["gene_id"], t["embedding"], strict=True):
            got[(s, g)] = np.asarray(e, dtype=np.float64)
    return got


def section_cohort(device: str, work: Path, samples: int, genes: int, window: int) -> dict[str, Any]:
    """The cohort job on a CPU actor and on `device` actors (fp32, and bf16 on CUDA): shard differences."""

    from neuro_caduceus.cohort.config import CohortConfig
    from neuro_caduceus.cohort.job import run_embed_cohort
    from neuro_caduceus.model import preset_config
    from neuro_caduceus.model.random_init import random_model
    from neuro_caduceus.ray_session import ensure_ray
    from neuro_caduceus.synthetic import make_cohort

    data = work / "cohort"
    make_cohort(data, n_samples=samples, n_genes=genes, seed=7)
    random_model(preset_config("tiny-ps"), seed=0).save_pretrained(work / "checkpoint")
    if device == "cuda":
        torch.cuda.empty_cache()  # the actor shares the GPU with this process
    gpu = device == "cuda"
    ensure_ray(num_cpus=4 if gpu else 2, num_gpus=int(gpu), include_dashboard=False)
    runs = [("cpu", "float32")] + [(device, "float32")] + ([(device, "bfloat16")] if device == "cuda" else [])
    results: dict[str, dict] = {}
    for dev, dtype in runs:
        key = f"{dev}-{dtype}" if f"{dev}-{dtype}" not in results else f"{dev}-{dtype}-again"
        cfg = CohortConfig.model_validate({
            "inputs": {"vcf": str(data / "cohort.vcf.gz"), "reference_fasta": str(data / "genome.fa"),
                       "gtf": str(data / "genes.gtf.gz"), "gene_set": str(data / "geneset.yaml"),
                       "reference_version": "synthetic"},
            "model": {"checkpoint": str(work / "checkpoint"), "device": dev, "dtype": dtype,
                      "window": window},
            "compute": {"actors_min": 1, "actors_max": 1, "window_batch_size": 8, "cpus_per_task": 0.5,
                        "gpus_per_actor": 1 if dev == "cuda" else 0},
            "output": {"dir": str(work / key)},
        })
        t0 = time.perf_counter()
        run_embed_cohort(cfg, quiet=True)
        results[key] = {"seconds": time.perf_counter() - t0, "emb": _shard_embeddings(work / key)}
    base = results["cpu-float32"]["emb"]
    rows = []
    for key, res in results.items():
        emb = res["emb"]
        same_keys = set(emb) == set(base)
        rel = [np.linalg.norm(emb[k] - base[k]) / np.linalg.norm(base[k]) for k in base if k in emb]
        rows.append({"run": key, "seconds": res["seconds"], "subject_genes": len(emb), "same_keys": same_keys,
                     "max_abs_diff": max(float(np.abs(emb[k] - base[k]).max()) for k in base if k in emb),
                     "rel_max": float(max(rel)), "rel_median": float(np.median(rel))})
    fp32_ok = all(r["same_keys"] and r["max_abs_diff"] <= 1e-4 for r in rows if "float32" in r["run"])
    return {"samples": samples, "genes": genes, "window": window, "rows": rows, "ok": fp32_ok}


def section_dnabert2(device: str, dtypes: list[str], public: bool, windows: list[int], batches: list[int],
                     budget: float) -> dict[str, Any]:
    """Golden, padding, precision and speed of the DNABERT-2 encoder on `device`."""
    from neuro_caduceus.model import from_pretrained, load_encoder
    from neuro_caduceus.model.dnabert2_config import DnaBert2Config, tiny_dnabert2_config
    from neuro_caduceus.model.dnabert2_random import random_dnabert2, save_dnabert2

    folder = GOLDEN / "dnabert2_tiny"
    golden = np.load(folder / "golden.npz")
    model = from_pretrained(folder / "checkpoint").to(device)
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        diff = 0.0
        for case in ("short", "repeat", "gc_rich", "with_n", "long"):
            ids = torch.from_numpy(golden[f"{case}/input_ids"])[None].to(device)
            diff = max(diff, float(np.abs(model.hidden_states(ids)[0].float().cpu().numpy()
                                          - golden[f"{case}/hidden"]).max()))
        ids = torch.from_numpy(golden["padded/input_ids"]).to(device)
        mask = torch.from_numpy(golden["padded/attention_mask"]).to(device)
        padded = model.hidden_states(ids, mask).float().cpu().numpy()
        diff = max(diff, float(np.abs(padded - golden["padded/hidden"]).max()))
    rows.append({"check": "golden fp32 (5 cases + padded batch)", "value": diff, "ok": diff <= 1e-4})
    work = Path(tempfile.mkdtemp(prefix="gpu_check_dnabert2_"))
    shape = DnaBert2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, vocab_size=4096) if public else tiny_dnabert2_config()
    save_dnabert2(random_dnabert2(shape, seed=0), work / "ckpt")
    seqs = _random_seqs(6, max(windows), seed=3)
    mixed = [s[: max(windows) // (i + 1)] for i, s in enumerate(seqs)]  # six lengths: real padding
    base = None
    for dtype in dtypes:
        enc = load_encoder(work / "ckpt", device=device, dtype=dtype, batch_size=len(mixed))
        batched = _pooled(enc, mixed)
        alone = np.concatenate([_pooled(enc, [s]) for s in mixed])
        rc = _pooled(enc, [_revcomp(s) for s in mixed])
        scale, tol = np.abs(batched).max(), 1e-5 if dtype == "float32" else 2e-2
        base = batched if base is None else base
        for check, other, bound in (("padded batch vs one window per forward", alone, tol),
                                    ("RC invariance of pooled vectors", rc, tol), ("vs fp32", base, np.inf)):
            rel = float(np.abs(batched - other).max() / scale)
            rows.append({"check": f"{dtype}: {check} (rel)", "value": rel, "ok": rel < bound})
    speed = []
    t_end = time.perf_counter() + budget
    for dtype in dtypes:
        for window in windows:
            for batch in batches:
                if time.perf_counter() > t_end:
                    break
                enc = load_encoder(work / "ckpt", device=device, dtype=dtype, batch_size=batch, window=window)
                part = [s[:window] for s in _random_seqs(batch, window, seed=window)]
                try:
                    enc.pool_windows(part)  # warm-up
                    if device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    _sync(device)
                    t0 = time.perf_counter()
                    enc.pool_windows(part)
                    _sync(device)
                    sec = time.perf_counter() - t0
                except torch.OutOfMemoryError:
                    speed.append({"dtype": dtype, "window": window, "batch": batch, "note": "out of memory"})
                    continue
                tokens = 2 * sum(enc.tokens(s) for s in part)  # both strand passes
                speed.append({"dtype": dtype, "window": window, "batch": batch, "seconds": sec,
                              "tokens_per_s": tokens / sec, "bases_per_s": batch * window / sec,
                              "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                              else None})
    return {"rows": rows + speed, "ok": all(r.get("ok", True) for r in rows),
            "shape": "public 117M" if public else "tiny"}


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _run(report: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as exc:  # noqa: BLE001 - a failing section is recorded, the others still run
        report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                        "ok": False}
    report[name]["section_seconds"] = round(time.perf_counter() - t0, 1)
    body = report[name]
    print(f"\n## {name} ({body['section_seconds']} s)")
    if "error" in body:
        print(body["traceback"])
    elif "rows" in body:
        print(_table(body["rows"]))
    else:
        print(json.dumps(body, indent=1))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="JSON report path")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (checks the script itself)")
    ap.add_argument("--sections", default="device,golden,precision,speed,cohort,dnabert2",
                    help="comma-separated subset of the sections")
    ap.add_argument("--speed-budget", type=float, default=180.0, help="seconds for the speed section")
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        device, folders, dtypes = "cpu", ["ps_d32_l2"], ["float32"]
        prec = (2, 64, "ps_d32_l2", None)
        speed = ("tiny-ps", [256], [1, 2], 10.0)
        cohort = (10, 1, 256)
        bert = (False, [300], [1, 2], 10.0)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --cpu-smoke on a machine without a GPU", file=sys.stderr)
            return 2
        device, folders, dtypes = "cuda", ["ps_d32_l2", "ph_d32_l2", "ps_d118_l4", "ph_d118_l4"], list(DTYPES)
        prec = (16, 4096, "ps_d118_l4", D256)
        speed = (D256, [8192, 32768, 131072], [1, 4, 16], args.speed_budget)
        cohort = (200, 6, 1024)
        bert = (True, [1000, 3000, 10000], [8, 32], 90.0)
    wanted = args.sections.split(",")
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "device": lambda: section_device(device),
        "golden": lambda: section_golden(device, folders),
        "precision": lambda: section_precision(device, prec[0], prec[1], dtypes, prec[2], prec[3]),
        "speed": lambda: section_speed(device, speed[0], speed[1], speed[2], dtypes, speed[3]),
        "cohort": lambda: section_cohort(device, Path(tempfile.mkdtemp(prefix="gpu_check_")), *cohort),
        "dnabert2": lambda: section_dnabert2(device, ["float32", "bfloat16"] if device == "cuda"
                                             else ["float32"], *bert),
    }
    t0 = time.perf_counter()
    for name in wanted:
        _run(report, name, sections[name])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))  # after each section
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    failed = [n for n in wanted if report[n].get("ok") is False]
    report["failed"] = failed
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n{len(wanted) - len(failed)}/{len(wanted)} sections ok in {report['total_seconds']} s; "
          f"failed: {failed or 'none'}; report: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
