"""Calibration of the analyses' inference: type I error under the null and power under a planted signal.

    python benchmarks/bench_calibration.py [--part genes,logo-genes,stratification,logo,cca] [--gene-sims 200]
        [--logo-gene-sims 16] [--logo-sims 40] [--cca-sims 200] [--perms 19] [--workers 2]

genes: a planted gene among 6, 60 and 600 null genes (make_planted_gene_blocks: 8 dims per gene, covariates
age/sex/PC1-3/batch shifting every feature, n=300; planted logit effect 0.6 per SD of its latent factor).
The per-gene score test (gene-test) at every size: per-gene type I error (null genes, p <= 0.05; its SE from
the spread over simulations, as the genes of one simulation share its phenotype), family-wise error (any
null gene with Holm p <= 0.05, all genes null) and power (planted gene Holm p <= 0.05).
logo-genes: LOGO with
the family-wise max-ΔAUC permutation p (3-fold x 1 repeat, C fixed, --perms permutations) at 6 genes: FWER
and power; at 6 and 60 genes the planted gene's ΔAUC and rank with per-gene block reduction against the
baseline measured in the same run, one PCA (k=16) over all genes (no permutations).

stratification: make_stratified_cohort (a subpopulation missing from the covariates' PCs, with a higher case
rate and a null gene private to it): how often the private null gene has p <= 0.05 (gene-test) and ranks
first (LOGO), with no genetic PCs (the baseline) and with 2 genetic PCs as covariates.

logo: per gene test (3 genes x 4 dims, n=120, 3-fold x 2 repeats, C fixed, 3 components per gene): the rate of
permutation p <= 0.05 (phenotype and block/Freedman-Lane schemes) and of corrected-t 95% intervals
excluding 0, under the null (effect 0) and with a planted gene (effect 1.0, power for the planted gene).
Baseline measured in the same run: the pooled out-of-fold AUC of the all-genes model next to the mean
per-fold AUC under the null.

cca (n=150, 6 x 4 dims, both sides driven by batch and age, 5-fold, reduce to 4 dims, 2 components): rate of
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
GENE_COUNTS = (6, 60, 600)
PLANTED_EFFECT = 0.6


def _planted(null_genes: int, effect: float, seed: int):
    from neuro_caduceus.analysis.simulate import make_planted_gene_blocks

    return make_planted_gene_blocks(n=300, genes=null_genes + 1, dim=8, planted_gene=0, effect=effect,
                                    seed=30_000 + seed)


def gene_test_sim(args: tuple[int, int, float]) -> dict:
    from neuro_caduceus.analysis.gene_test import run_gene_test

    null_genes, seed, effect = args
    X, blocks, y, cov = _planted(null_genes, effect, seed)
    t = {r["gene"]: r for r in run_gene_test(X, blocks, y, cov, COVS, categorical=["batch"]).table.to_dicts()}
    nulls = [t[g] for g in list(blocks)[1:]]
    planted = t[next(iter(blocks))]
    return {"null_p": [r["p_value"] for r in nulls], "any_null_holm": any(r["p_holm"] <= 0.05 for r in nulls),
            "planted_holm": planted["p_holm"] <= 0.05, "planted_first": planted["rank"] == 1}


def logo_gene_sim(args: tuple[int, int, float, int, str]) -> dict:
    from neuro_caduceus.analysis.logo import LogoConfig, run_logo

    null_genes, seed, effect, n_perm, reduce = args
    X, blocks, y, cov = _planted(null_genes, effect, seed)
    cfg = LogoConfig(n_folds=3, n_repeats=1, Cs=(1.0,), n_perm=n_perm, reduce=reduce, k=16, seed=seed,
                     parallel=False)  # type: ignore[arg-type]
    t = {r["gene"]: r for r in run_logo(X, blocks, y, cov, COVS, cfg, ["batch"]).table.to_dicts()}
    planted = t[next(iter(blocks))]
    return {"any_fwer": any(t[g]["p_fwer"] <= 0.05 for g in list(blocks)[1:]),
            "planted_fwer": planted["p_fwer"] <= 0.05, "planted_rank": planted["rank"],
            "planted_delta": planted["delta_auc"]}


def stratified_sim(args: tuple[int, int]) -> dict:
    from neuro_caduceus.analysis.gene_test import GeneTestConfig, run_gene_test
    from neuro_caduceus.analysis.logo import LogoConfig, run_logo
    from neuro_caduceus.analysis.simulate import make_stratified_cohort

    seed, pcs = args
    X, blocks, y, cov, _ = make_stratified_cohort(n=400, seed=40_000 + seed)
    test = run_gene_test(X, blocks, y, cov, COVS, GeneTestConfig(genetic_pcs=pcs), ["batch"]).table
    cfg = LogoConfig(n_folds=3, n_repeats=1, Cs=(1.0,), n_perm=0, genetic_pcs=pcs, seed=seed, parallel=False)
    logo = run_logo(X, blocks, y, cov, COVS, cfg, ["batch"]).table
    return {"test_p": test.filter(test["gene"] == "PRIVATE")["p_value"][0],
            "other_p": test.filter(test["gene"] != "PRIVATE")["p_value"].to_list(),
            "logo_first": logo["gene"][0] == "PRIVATE"}


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


def clustered_rate(per_sim: list[list[bool]]) -> str:
    """A per-test rate whose tests share a simulation's phenotype: SE from the spread of per-simulation
    rates (tests within one simulation are correlated, so the binomial SE over all tests is too small)."""
    rates = np.array([np.mean(h) for h in per_sim])
    r, se = float(np.mean(rates)), float(rates.std(ddof=1) / np.sqrt(len(rates)))
    ok = "yes" if abs(r - 0.05) <= 2 * se else "no"
    return f"{r:.3f} ± {se:.3f} (S={len(rates)} simulations; 0.05 within 2 SE: {ok})"


def run_genes(pool, a) -> None:
    print(f"\n## a planted gene (logit effect {PLANTED_EFFECT}) among null genes, n=300, 8 dims per gene")
    for g in GENE_COUNTS:
        t0 = time.time()
        null = list(pool.map(gene_test_sim, [(g, s, 0.0) for s in range(a.gene_sims)]))
        planted = list(pool.map(gene_test_sim, [(g, s, PLANTED_EFFECT) for s in range(a.gene_sims)]))
        per_gene = [[p <= 0.05 for p in r["null_p"]] for r in null]
        print(f"gene-test, {g} null genes: type I error per gene {clustered_rate(per_gene)}; FWER (any Holm "
              f"p <= 0.05, "
              f"all null) {rate([r['any_null_holm'] for r in null])}; power (planted Holm p <= 0.05) "
              f"{np.mean([r['planted_holm'] for r in planted]):.3f}, planted ranked first "
              f"{np.mean([r['planted_first'] for r in planted]):.3f} [{time.time() - t0:.0f} s]")


def run_logo_genes(pool, a) -> None:
    print(f"\n## LOGO: a planted gene (logit effect {PLANTED_EFFECT}) among null genes, n=300, 8 dims each")
    t0 = time.time()
    S = a.logo_gene_sims
    null = list(pool.map(logo_gene_sim, [(6, s, 0.0, a.perms, "gene") for s in range(S)]))
    planted = list(pool.map(logo_gene_sim, [(6, s, PLANTED_EFFECT, a.perms, "gene") for s in range(S)]))
    print(f"LOGO (per-gene blocks, max-ΔAUC p, {a.perms} permutations), 6 null genes: FWER "
          f"{rate([r['any_fwer'] for r in null])}; power (planted p_fwer <= 0.05) "
          f"{np.mean([r['planted_fwer'] for r in planted]):.3f} [{time.time() - t0:.0f} s]")
    for g in GENE_COUNTS[:2]:
        t0 = time.time()
        jobs = {red: [(g, s, PLANTED_EFFECT, 0, red) for s in range(a.logo_dilution_sims)]
                for red in ("gene", "all")}
        runs = {red: list(pool.map(logo_gene_sim, args)) for red, args in jobs.items()}
        line = "; ".join(f"{'per-gene blocks' if red == 'gene' else 'one PCA (baseline)'}: planted ΔAUC "
                         f"{np.mean([r['planted_delta'] for r in rs]):+.3f}, ranked first "
                         f"{np.mean([r['planted_rank'] == 1 for r in rs]):.2f}" for red, rs in runs.items())
        ratio = np.mean([r["planted_delta"] for r in runs["gene"]]) / max(
            abs(np.mean([r["planted_delta"] for r in runs["all"]])), 1e-3)
        print(f"LOGO dilution, {g} null genes (S={a.logo_dilution_sims}): {line}; ΔAUC ratio {ratio:.1f}x "
              f"[{time.time() - t0:.0f} s]")


def run_stratification(pool, a) -> None:
    print("\n## stratification: a null gene private to a subpopulation the covariates' PCs miss (n=400)")
    for pcs in (0, 2):
        rs = list(pool.map(stratified_sim, [(s, pcs) for s in range(a.strat_sims)]))
        print(f"genetic PCs {pcs}{' (baseline)' if pcs == 0 else ''}: gene-test P(private p <= 0.05) "
              f"{rate([r['test_p'] <= 0.05 for r in rs])}, other null genes "
              f"{clustered_rate([[p <= 0.05 for p in r['other_p']] for r in rs])}; LOGO ranks the private "
              "gene first "
              f"{sum(r['logo_first'] for r in rs)} of {len(rs)}")


def run_logo_per_gene(pool, a) -> None:
    t0 = time.time()
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


def run_cca_calibration(pool, a) -> None:
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


PARTS = {"genes": run_genes, "logo-genes": run_logo_genes, "stratification": run_stratification,
         "logo": run_logo_per_gene, "cca": run_cca_calibration}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--gene-sims", type=int, default=200)
    ap.add_argument("--logo-gene-sims", type=int, default=16)
    ap.add_argument("--logo-dilution-sims", type=int, default=4)
    ap.add_argument("--strat-sims", type=int, default=40)
    ap.add_argument("--logo-sims", type=int, default=40)
    ap.add_argument("--cca-sims", type=int, default=200)
    ap.add_argument("--perms", type=int, default=19)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    parts = [p.strip() for p in a.part.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown --part {unknown}; choose from {', '.join(PARTS)}")
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; {a.workers} worker processes; {a.perms} permutations per test")
    with ProcessPoolExecutor(a.workers) as pool:
        for part in parts:
            PARTS[part](pool, a)


if __name__ == "__main__":
    main()
