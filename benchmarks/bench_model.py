"""Caduceus forward throughput: the shipped CPU path (numba scan) vs the same model with a per-step scan loop.

"ours" is the model as shipped: on CPU the numba-compiled convolution and scan (softplus, D skip and gate
fused, the backward direction walked in place). "chunked" is the same model on the pure-PyTorch chunked
scan (the fallback without numba). Baseline ("per-step"): the very same model (same modules, projections,
convolution, norms and flips), with only its selective scan swapped for a plain loop over positions, in
the form of mamba-ssm's `selective_scan_ref`: exp(delta*A) and delta*B*x are computed for the whole
sequence at once, then one Python iteration per position does s = dA_t * s + dBu_t and
y_t = <s, C_t> (`per_step_scan` below). Our own oracle `selective_scan_reference` (which computes the
decay inside the loop) is timed too; the speedup is taken against the FASTER of the two loops, so it is
never flattered by a slow baseline. "official" is the official reference path: one `selective_scan_ref`
call per direction and strand half, batch 1 (`official_scan`), as the official model runs without its
CUDA kernels.

Timing: one subprocess per (model, L); a warm-up forward per variant, one untimed full-length forward of
ours (its peak memory; a job embeds many windows of one length, so the timed rounds are the steady
state), then `--repeat` rounds in which
every variant runs once (interleaved, so load from other processes hits all of them alike); the minimum
per variant is reported, and the median over rounds of the per-round ratio per-step (`selective_scan_ref`
form) / ours. Batch 1, fp32, torch.inference_mode, torch threads = CPU cores. A PS model runs
both strand halves (2 sequences internally). Peak memory = growth of the process's peak RSS during our
forward, measured before any baseline runs. Where a per-step loop would run longer than `--ref-budget`
seconds it is timed at a shorter L and scaled by L / L_ref (it is linear in L; the table says so).
"no-scan" times the same forward with a scan that costs nothing (D*x): the work both variants share, so
"bound" = per-step time / no-scan time is the largest speedup any scan alone could give inside the torch
model; the shipped path goes past it only by also fusing the work around the scan (convolution, softplus,
gate, the backward direction's flips).

    python benchmarks/bench_model.py            # d118-l4 and d256-l16 at L = 1k, 8k, 32k (many minutes)
    python benchmarks/bench_model.py --quick    # d118-l4 only, L = 1k, 8k
    python benchmarks/bench_model.py --models d118-l4 --lengths 8192 --repeat 3   # the headline row
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

CONFIGS = {"d118-l4": "caduceus-ps_seqlen-1k_d_model-118_n_layer-4",
           "d256-l16": "caduceus-ps_seqlen-131k_d_model-256_n_layer-16"}


def per_step_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor) -> torch.Tensor:
    """Per-step baseline (selective_scan_ref form): whole-sequence dA and dBu, one iteration a position."""
    x, delta, B, C = (t.float() for t in (x, delta, B, C))
    dA = torch.exp(delta.unsqueeze(-1) * A.float())                  # (b, L, E, N)
    dBu = (delta * x).unsqueeze(-1) * B.unsqueeze(2)                  # (b, L, E, N)
    s = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for t in range(x.shape[1]):
        s = dA[:, t] * s + dBu[:, t]
        ys.append(torch.einsum("ben,bn->be", s, C[:, t]))
    return torch.stack(ys, dim=1) + D.float() * x


def official_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor) -> torch.Tensor:
    """One per-step (selective_scan_ref form) call per batch row: the official path runs halves apart."""
    return torch.cat([per_step_scan(x[i:i + 1], delta[i:i + 1], A, B[i:i + 1], C[i:i + 1], D)
                      for i in range(x.shape[0])])


def _no_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor) -> torch.Tensor:
    """A scan that costs nothing (wrong numbers): times the rest of the model, which both variants share."""
    return D * x


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def measure(preset: str, L: int, impls: list[str], repeat: int, device: str) -> dict[str, float]:
    """Min seconds per variant over `repeat` interleaved rounds, plus our forward's peak memory (MiB)."""
    from neuro_caduceus.model import preset_config, scan
    from neuro_caduceus.model.random_init import random_model

    torch.set_num_threads(os.cpu_count() or 1)
    model = random_model(preset_config(preset), seed=0).to(device)
    fns = {"chunked": scan.selective_scan_chunked, "loop": per_step_scan, "official": official_scan,
           "reference": scan.selective_scan_reference, "no-scan": _no_scan}
    ids = torch.randint(7, 11, (1, L), generator=torch.Generator().manual_seed(0)).to(device)

    def forward(impl: str, n: int) -> float:
        with scan.using_scan(fns[impl]) if impl in fns else contextlib.nullcontext():  # dispatch: as shipped
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.hidden_states(ids[:, :n])
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

    out: dict[str, float] = {}
    with torch.inference_mode():
        for impl in impls:
            forward(impl, min(L, 256))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        before = _hwm_kib()
        forward(impls[0], L)  # the first variant (ours) runs first, untimed: its own peak memory
        out["peak_mib"] = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                           else max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        rounds: dict[str, list[float]] = {}
        for _ in range(repeat):  # steady state: a job embeds many windows of one length
            for impl in impls:
                rounds.setdefault(impl, []).append(forward(impl, L))
                out[impl] = min(rounds[impl])
    if "loop" in rounds:  # the headline ratio, round by round: both sides of each ratio saw the same load
        out["loop_ratio_median"] = statistics.median(a / b for a, b in zip(rounds["loop"], rounds[impls[0]],
                                                                            strict=False))
    return out


def run_one(preset: str, L: int, impls: list[str], repeat: int, device: str = "cpu") -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", preset, str(L), ",".join(impls), str(repeat), device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="d118-l4 only, L = 1k and 8k")
    ap.add_argument("--models", default=",".join(CONFIGS), help="comma-separated subset of the models")
    ap.add_argument("--lengths", default="1024,8192,32768", help="comma-separated sequence lengths")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (min is reported)")
    ap.add_argument("--ref-budget", type=float, default=30.0,
                    help="time the per-step loops at full L when one forward is estimated below this (s)")
    ap.add_argument("--one", nargs=5, metavar=("PRESET", "L", "IMPLS", "REPEAT", "DEVICE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        p, L, impls, rep, dev = args.one
        print(json.dumps(measure(p, int(L), impls.split(","), int(rep), dev)))
        return
    configs = ["d118-l4"] if args.quick else args.models.split(",")
    lengths = [1024, 8192] if args.quick else [int(n) for n in args.lengths.split(",")]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, fp32, "
          f"batch 1, CPU, min of {args.repeat} interleaved rounds\n")
    print("| model | L | ours s | ours tok/s | ours peak MiB | chunked s | per-step s (ref form) "
          "| per-step s (oracle) | official s | how | vs faster loop | vs official | vs chunked "
          "| no-scan s | bound | vs ref-form loop, median of rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    loops = ("loop", "reference", "official")
    loop_at: dict[str, tuple[int, dict[str, float]]] = {}  # model -> (L, times) of its longest full run
    for name in configs:
        preset = CONFIGS[name]
        for L in lengths:
            prev = loop_at.get(name)
            if prev is None or max(prev[1][k] for k in loops) * L / prev[0] <= args.ref_budget:
                res = run_one(preset, L, ["ours", "chunked", *loops, "no-scan"], args.repeat)
                loop_at[name] = (L, res)
            else:
                res = run_one(preset, L, ["ours", "chunked", "no-scan"], args.repeat)
            L_ref, t = loop_at[name]
            loop_s, ref_s, off_s = (t[k] * L / L_ref for k in loops)
            how = "measured" if L_ref == L else f"scaled from L={L_ref}"
            ours = res["ours"]
            median = f"{t['loop_ratio_median']:.1f}x" if L_ref == L else "-"
            print(f"| {name} | {L} | {ours:.3f} | {L / ours:,.0f} | {res['peak_mib']:.0f} "
                  f"| {res['chunked']:.3f} | {loop_s:.2f} | {ref_s:.2f} | {off_s:.2f} | {how} "
                  f"| {min(loop_s, ref_s) / ours:.1f}x "
                  f"| {off_s / ours:.1f}x | {res['chunked'] / ours:.1f}x | {res['no-scan']:.3f} "
                  f"| {min(loop_s, ref_s) / res['no-scan']:.1f}x "
                  f"| {median} |", flush=True)
    if torch.cuda.is_available():
        print("\nGPU: run benchmarks/gpu_check.py (every scan path, dtypes, batch sizes, peak memory).")


if __name__ == "__main__":
    main()
