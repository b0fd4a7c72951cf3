"""DNABERT-2 against Caduceus on CPU, both through the encoder contract, at the same bases in the same run.

What is timed: `Encoder.pool_windows` on `--windows` random windows of `--bases` bases each, i.e. the cohort
job's unit of work (tokenize, forward, strand-invariant pooling). DNABERT-2 (random weights at the public
117M shape: hidden 768, 12 layers, 12 heads, intermediate 3072, BPE vocabulary 4,096 with the real
tokenizer) runs its forward and reverse-complement passes in padded batches; the baseline, Caduceus PS at
the public 131k shape (d_model 256, 16 layers, random weights), runs one RC-equivariant pass per window.
Reported: seconds, windows/s, bases/s and model tokens/s (tokens of every pass: DNABERT-2's BPE tokens with
[CLS]/[SEP] for both strands, Caduceus's one token per base), and the ratio of bases/s against Caduceus.
A warm-up call per encoder, then `--repeat` interleaved rounds; the minimum is reported. fp32, torch
threads = CPU cores.

    python benchmarks/bench_encoders.py                           # 3,000-base windows, 8 of them
    python benchmarks/bench_encoders.py --bases 1000 --windows 4 --small   # tiny shapes (seconds)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from neuro_caduceus.model import load_encoder, preset_config
from neuro_caduceus.model.dnabert2_config import DnaBert2Config, tiny_dnabert2_config
from neuro_caduceus.model.dnabert2_random import random_dnabert2, save_dnabert2
from neuro_caduceus.model.random_init import random_model

PUBLIC_DNABERT2 = DnaBert2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                 intermediate_size=3072, vocab_size=4096)
CADUCEUS = {"public": "caduceus-ps_seqlen-131k_d_model-256_n_layer-16", "small": "tiny-ps"}


def checkpoints(work: Path, small: bool) -> dict[str, Path]:
    bert = random_dnabert2(tiny_dnabert2_config() if small else PUBLIC_DNABERT2, seed=0)
    save_dnabert2(bert, work / "dnabert2")
    random_model(preset_config(CADUCEUS["small" if small else "public"]), seed=0).save_pretrained(
        work / "caduceus")
    return {"dnabert2": work / "dnabert2", "caduceus": work / "caduceus"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", type=int, default=3000, help="bases per window (DNABERT-2 allows <= 10,000)")
    ap.add_argument("--windows", type=int, default=8, help="windows per timed call")
    ap.add_argument("--batch", type=int, default=8, help="windows per forward (encoder batch size)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (min is reported)")
    ap.add_argument("--small", action="store_true", help="tiny random shapes instead of the public ones")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), args.bases)) for _ in range(args.windows)]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: known
        encoders = {name: load_encoder(path, device="cpu", batch_size=args.batch, window=args.bases)
                    for name, path in checkpoints(Path(tmp), args.small).items()}
        best = {name: float("inf") for name in encoders}
        for enc in encoders.values():
            enc.pool_windows(seqs[:1])  # warm-up (numba compile, allocator)
        for _ in range(args.repeat):
            for name, enc in encoders.items():
                t0 = time.perf_counter()
                enc.pool_windows(seqs)
                best[name] = min(best[name], time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, fp32, CPU, {args.windows} windows of "
          f"{args.bases:,} bases, batch {args.batch}, min of {args.repeat} interleaved rounds, "
          f"{'tiny' if args.small else 'public'} shapes\n")
    print("| encoder | passes | tokens per window | s | windows/s | bases/s | model tokens/s "
          "| bases/s vs Caduceus |")
    print("|---|---|---|---|---|---|---|---|")
    bases_s = {name: args.windows * args.bases / best[name] for name in encoders}
    for name, enc in encoders.items():
        passes = 2 if enc.strand == "averaged" else 1
        tokens = sum(enc.tokens(s) for s in seqs) * passes
        print(f"| {name} | {passes} | {tokens / args.windows / passes:,.0f} | {best[name]:.3f} "
              f"| {args.windows / best[name]:.2f} | {bases_s[name]:,.0f} | {tokens / best[name]:,.0f} "
              f"| {bases_s[name] / bases_s['caduceus']:.2f}x |")


if __name__ == "__main__":
    main()
