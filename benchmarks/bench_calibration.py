"""Calibration of the analyses' inference: type I error under the null and power under a planted signal.

    python benchmarks/bench_calibration.py [--logo-sims 40] [--cca-sims 200] [--perms 19] [--workers 2]

LOGO (make_planted_gene_blocks: 3 genes x 4 dims, covariates age/sex/PC1-3/batch shifting every feature,
n=120, 3-fold x 2 repeats, C fixed): per gene test, the rate of permutation p <= 0.05 (phenotype and
block/Freedman-Lane schemes) and of corrected-t 95% intervals excluding 0, under the null (effect 0) and
with a planted gene (effect 1.0, power for the planted gene). Baseline measured in the same run: the
pooled out-of-fold AUC of the all-genes model (scores of separately fitted fold models pooled) next to the
mean per-fold AUC under the null.

CCA (n=150, 6 x 4 dims, both sides driven by batch and age, 5-fold, reduce to 4 dims, 2 components): rate of
p <= 0.05 for component 1 (per-component p) and for any component (FWER p), with Freedman-Lane; baseline
in the same run: brain rows permuted together with their covariates (the scheme Freedman-Lane replaces).
Power: a latent shared beyond the covariates (rho 0.3).

Each rate is printed with its Monte-Carlo standard error sqrt(r (1 - r) / S) and whether 0.05 lies within
2 SE. Simulations run in --workers processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

COVS = ["age", "sex", "PC1", "PC2", "PC3", "batch"]


def logo_sim(args: tuple[int, float, str, int]) -> dict:
    from neuro_caduceus.analysis.logo import ALL, LogoConfig, rank_auc, run_logo
    from neuro_caduceus.analysis.simulate import make_planted_gene_blocks

    seed, effect, permute, n_perm = args
    X, blocks, y, cov = make_planted_gene_blocks(n=120, genes=3, dim=4, planted_gene=0, effect=effect,
                                                 seed=10_000 + seed)
    cfg = LogoConfig(n_folds=3, n_repeats=2, k=6, Cs=(1.0,), n_perm=n_perm, permute=permute, seed=seed,
                     simultaneous=False, parallel=False)
    r = run_logo(X, blocks, y, cov, COVS, cfg, ["batch"])
    t = {row["gene"]: row for row in r.table.to_dicts()}
    pooled = float(np.mean([rank_auc(y, r.scores[ALL][rep]) for rep in range(cfg.n_repeats)]))
    return {"p": [t[g]["p_value"] for g in blocks], "excl": [t[g]["ci_excludes_zero"] for g in blocks],
            "pooled_auc": pooled, "fold_auc": r.auc_all}


def cca_sim(args: tuple[int, float, str, int]) -> dict:
    from neuro_caduceus.analysis.cca import CCAConfig, _heldout, _reduce, permutation_p, run_cca
    from neuro_caduceus.analysis.folds import kfolds, single_threaded
    from neuro_caduceus.analysis.simulate import make_confounded_pair

    seed, rho, scheme, n_perm = args
    rng = np.random.default_rng(20_000 + seed)
    n = 150
    X, Y, cov = make_confounded_pair(n, rng, rho)
    covs, cats = ["age", "sex", "batch"], ("batch",)
    cfg = CCAConfig(n_perm=n_perm, reduce_dims=4, n_components=2, seed=seed, parallel=False, categorical=cats)
    if scheme == "freedman_lane":
        r = run_cca(X, Y, cfg, cov=cov, covariates=covs)
        p, p_fwer = r.table["p_value"].to_numpy(), r.table["p_fwer"].to_numpy()
    else:  # rows permuted with their covariates, the whole CV rerun
        folds = kfolds(n, cfg.n_folds, seed)
        with single_threaded():
            xp = _reduce(X, cov, covs, folds, 4, cats)
            obs = _heldout(xp, _reduce(Y, cov, covs, folds, 4, cats), 2, cfg.ridge)[0]
            null = []
            for b in range(n_perm):
                perm = np.random.default_rng([seed, b]).permutation(n)
                null.append(_heldout(xp, _reduce(Y[perm], cov[perm], covs, folds, 4, cats), 2, cfg.ridge)[0])
        p, p_fwer = permutation_p(obs, np.array(null))
    return {"p1": float(p[0]), "any_fwer": bool((p_fwer <= 0.05).any())}


def rate(hits: list[bool]) -> str:
    r, s = float(np.mean(hits)), len(hits)
    se = np.sqrt(max(r * (1 - r), 1e-12) / s)
    ok = "yes" if abs(r - 0.05) <= 2 * se else "no"
    return f"{r:.3f} ± {se:.3f} (S={s}; 0.05 within 2 SE: {ok})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logo-sims", type=int, default=40)
    ap.add_argument("--cca-sims", type=int, default=200)
    ap.add_argument("--perms", type=int, default=19)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; {a.workers} worker processes; {a.perms} permutations per test")
    t0 = time.time()
    with ProcessPoolExecutor(a.workers) as pool:
        for permute in ("phenotype", "block"):
            null = list(pool.map(logo_sim, [(s, 0.0, permute, a.perms) for s in range(a.logo_sims)]))
            hits = [p <= 0.05 for r in null for p in r["p"]]
            print(f"LOGO null, permute={permute}: P(p <= 0.05) per gene test {rate(hits)}")
            if permute == "phenotype":
                excl = [e for r in null for e in r["excl"]]
                print(f"LOGO null: corrected-t 95% interval excludes 0, per gene: {rate(excl)}")
                fold = np.mean([r["fold_auc"] for r in null])
                pooled = np.mean([r["pooled_auc"] for r in null])
                print(f"LOGO null: mean per-fold AUC {fold:.3f} vs pooled out-of-fold AUC (baseline) "
                      f"{pooled:.3f}")
            power = list(pool.map(logo_sim, [(s, 1.0, permute, a.perms) for s in range(a.logo_sims // 2)]))
            print(f"LOGO planted gene (effect 1.0), permute={permute}: power P(p <= 0.05) "
                  f"{np.mean([r['p'][0] <= 0.05 for r in power]):.3f}; other genes "
                  f"{np.mean([p <= 0.05 for r in power for p in r['p'][1:]]):.3f}")
        print(f"[LOGO {time.time() - t0:.0f} s]")
        t1 = time.time()
        for scheme in ("freedman_lane", "rows_with_covariates"):
            null = list(pool.map(cca_sim, [(s, 0.0, scheme, a.perms) for s in range(a.cca_sims)]))
            print(f"CCA null with confounding covariates, {scheme}: P(p1 <= 0.05) "
                  f"{rate([r['p1'] <= 0.05 for r in null])}; P(any FWER p <= 0.05) "
                  f"{rate([r['any_fwer'] for r in null])}")
        power = list(pool.map(cca_sim, [(s, 0.3, "freedman_lane", a.perms) for s in range(a.cca_sims // 4)]))
        print(f"CCA planted latent (rho 0.3) beyond the covariates, freedman_lane: power P(p1 <= 0.05) "
              f"{np.mean([r['p1'] <= 0.05 for r in power]):.3f}, P(FWER) "
              f"{np.mean([r['any_fwer'] for r in power]):.3f}")
        print(f"[CCA {time.time() - t1:.0f} s]")


if __name__ == "__main__":
    main()
