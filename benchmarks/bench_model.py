"""Caduceus forward throughput: our chunked scan vs the same model with the per-step reference scan.

Each measurement runs in a fresh subprocess so its peak memory (ru_maxrss growth over the process's
high-water mark before the forward) is its own. Batch 1, fp32, torch.inference_mode. A PS model runs both
strand halves, i.e. 2 sequences internally. The per-step reference is linear in L; where running it in
full would take long it is timed on a shorter L and scaled by L / L_ref (the table says which).

    python benchmarks/bench_model.py            # d118-l4 and d256-l16 at L = 1k, 8k, 32k (a few minutes)
    python benchmarks/bench_model.py --quick    # d118-l4 only, L = 1k, 8k
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {"d118-l4": "caduceus-ps_seqlen-1k_d_model-118_n_layer-4",
           "d256-l16": "caduceus-ps_seqlen-131k_d_model-256_n_layer-16"}


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def measure(preset: str, L: int, impl: str, device: str) -> dict[str, float]:
    """One timed forward (after a short warm-up) of a random-weight model."""
    import torch

    from neuro_caduceus.model import preset_config, scan
    from neuro_caduceus.model.random_init import random_model

    model = random_model(preset_config(preset), seed=0).to(device)
    fns = {"ours": scan.selective_scan_chunked, "reference": scan.selective_scan_reference}
    ids = torch.randint(7, 11, (1, L), generator=torch.Generator().manual_seed(0)).to(device)
    ctx = scan.using_scan(fns[impl]) if impl in fns else scan.using_scan(scan.selective_scan)
    with torch.inference_mode(), ctx:
        model.hidden_states(ids[:, :64])
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = _hwm_kib()
        t0 = time.perf_counter()
        model.hidden_states(ids)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    return {"seconds": seconds, "peak_mib": peak}


def run_one(preset: str, L: int, impl: str, device: str = "cpu") -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", preset, str(L), impl, device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="d118-l4 only, L = 1k and 8k")
    ap.add_argument("--ref-budget", type=float, default=60.0,
                    help="run the reference in full when its estimate is below this many seconds")
    ap.add_argument("--one", nargs=4, metavar=("PRESET", "L", "IMPL", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.one[2], args.one[3])))
        return
    import torch

    configs = ["d118-l4"] if args.quick else list(CONFIGS)
    lengths = [1024, 8192] if args.quick else [1024, 8192, 32768]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch 1, CPU\n")
    print("| model | L | ours s | ours tok/s | ours peak MiB | reference s | how | speedup |")
    print("|---|---|---|---|---|---|---|---|")
    ref_at: dict[str, tuple[int, float]] = {}  # model -> (L, seconds) of its longest full reference run
    for name in configs:
        preset = CONFIGS[name]
        for L in lengths:
            ours = run_one(preset, L, "ours")
            if name not in ref_at or ref_at[name][1] * L / ref_at[name][0] <= args.ref_budget:
                L_ref = L if name in ref_at else min(L, 1024)
                ref_at[name] = (L_ref, run_one(preset, L_ref, "reference")["seconds"])
            L_ref, t_ref = ref_at[name]
            ref_s = t_ref * L / L_ref
            how = "measured" if L_ref == L else f"scaled from L={L_ref}"
            print(f"| {name} | {L} | {ours['seconds']:.2f} | {L / ours['seconds']:,.0f} | "
                  f"{ours['peak_mib']:.0f} | {ref_s:.1f} | {how} | {ref_s / ours['seconds']:.1f}x |",
                  flush=True)
    if torch.cuda.is_available():
        print("\n| model | L | torch scan on GPU s | mamba-ssm kernels s (if installed) |\n|---|---|---|---|")
        for name in configs:
            for L in lengths:
                t = run_one(CONFIGS[name], L, "ours", "cuda")["seconds"]
                k = run_one(CONFIGS[name], L, "dispatch", "cuda")["seconds"]
                print(f"| {name} | {L} | {t:.3f} | {k:.3f} |", flush=True)


if __name__ == "__main__":
    main()
