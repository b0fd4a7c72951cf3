"""Data with known answers for the analyses' tests and benchmarks (no model, no genome needed).

Why here: the tests and benchmarks of LOGO and CCA need ground truth (a planted gene, a planted canonical
correlation) independent of the embedding model; one seeded generator keeps them reproducible.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def make_covariates(n: int, rng: np.random.Generator):
    """A covariates table like the synthetic cohort's: age, sex (0/1), PC1..PC3, batch (categorical)."""
    return pl.DataFrame({
        "subject_id": [f"S{i + 1:05d}" for i in range(n)],
        "age": rng.integers(40, 71, n).astype(np.float64),
        "sex": rng.integers(0, 2, n),
        **{f"PC{k + 1}": rng.normal(0, 1.0 / (1 + k), n) for k in range(3)},
        "batch": np.array(["batch_a", "batch_b", "batch_c"])[rng.integers(0, 3, n)],
    })


def make_planted_gene_blocks(n: int = 300, genes: int = 5, dim: int = 16, planted_gene: int = 1,
                             effect: float = 2.0, seed: int = 0):
    """Gene blocks where one gene's latent factor drives a binary phenotype; covariates shift every feature.

    Returns (X [n, genes*dim], blocks {gene: slice}, y [n] 0/1, covariates polars DataFrame). Each block is
    a per-gene latent factor (loading norm 2, so it survives PCA) plus unit noise; the planted gene's factor
    enters the phenotype's logit with `effect` (per SD); age, sex and batch add to all features, so
    residualization has something to remove.
    """
    rng = np.random.default_rng(seed)
    cov = make_covariates(n, rng)
    names = [f"GENE{g + 1}" for g in range(genes)]
    blocks = {g: slice(i * dim, (i + 1) * dim) for i, g in enumerate(names)}
    latent = rng.normal(size=(n, genes))
    load = rng.normal(size=(genes, dim))
    load *= 2.0 / np.linalg.norm(load, axis=1, keepdims=True)
    X = np.concatenate([latent[:, [g]] * load[g] for g in range(genes)], axis=1)
    X += rng.normal(size=(n, genes * dim))
    batch_shift = {"batch_a": 0.0, "batch_b": 0.8, "batch_c": -0.8}
    age_z = (cov["age"].to_numpy() - 55) / 9
    shift = 0.5 * age_z + 0.5 * cov["sex"].to_numpy() + np.array([batch_shift[b] for b in cov["batch"]])
    X += shift[:, None] * rng.normal(size=genes * dim)[None, :]
    logit = -0.5 + effect * latent[:, planted_gene]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return X, blocks, y, cov


def make_cca_pair(n: int = 2000, p: int = 30, q: int = 20, rho: float = 0.6, seed: int = 0):
    """X [n, p], Y [n, q] whose only non-zero population canonical correlation is `rho` (rho=0: independent).

    One shared latent pair (corr rho) in the first coordinate of each side, independent unit noise in the
    rest, then each side mixed by a random invertible matrix (canonical correlations are invariant to it).
    """
    rng = np.random.default_rng(seed)
    X0, Y0 = rng.normal(size=(n, p)), rng.normal(size=(n, q))
    Y0[:, 0] = rho * X0[:, 0] + np.sqrt(1 - rho**2) * Y0[:, 0]
    A = rng.normal(size=(p, p)) + 3 * np.eye(p)
    B = rng.normal(size=(q, q)) + 3 * np.eye(q)
    return X0 @ A, Y0 @ B


def make_confounded_pair(n: int, rng: np.random.Generator, rho: float = 0.0):
    """(X [n, 6], Y [n, 4], covariates): both sides driven by batch and age, and with rho > 0 by one shared
    latent beyond the covariates (the CCA calibration's null and power scenarios)."""
    cov = make_covariates(n, rng)
    confound = 2.0 * ((cov["batch"] == "batch_b").to_numpy() + (cov["age"].to_numpy() - 55) / 9)
    shared = rng.normal(size=n)
    X = rng.normal(size=(n, 6)) + confound[:, None] * rng.normal(size=6)
    Y = rng.normal(size=(n, 4)) + confound[:, None] * rng.normal(size=4)
    X[:, 0] += 2 * rho * shared
    Y[:, 0] += 2 * rho * shared
    return X, Y, cov


def make_stratified_cohort(n: int = 400, genes: int = 8, dim: int = 4, seed: int = 0):
    """A null cohort with fine-scale stratification that the covariates' ancestry PCs do not carry.

    A subpopulation (30% of subjects, absent from PC1-3) has a higher case rate (logit +1.5) and shifts
    every gene's features a little (so the genetic features' own top principal component tags it); the
    last gene ("PRIVATE") carries a large subpopulation-specific shift and no effect of its own. Returns
    (X, blocks, y, covariates, subpopulation 0/1): a test that ignores the subpopulation credits PRIVATE.
    """
    rng = np.random.default_rng(seed)
    cov = make_covariates(n, rng)
    sub = (rng.random(n) < 0.3).astype(np.int64)
    names = [f"GENE{g + 1}" for g in range(genes - 1)] + ["PRIVATE"]
    blocks = {g: slice(i * dim, (i + 1) * dim) for i, g in enumerate(names)}
    X = rng.normal(size=(n, genes * dim)) + sub[:, None] * rng.normal(0, 0.3, genes * dim)[None, :]
    X[:, blocks["PRIVATE"]] += 1.5 * sub[:, None]
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1.0 + 1.5 * sub)))).astype(np.int64)
    return X, blocks, y, cov, sub
