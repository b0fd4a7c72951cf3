"""CCA: exact solver vs an independent oracle, planted correlation recovered held-out, null p-values, Ray."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from neuro_caduceus.analysis.cca import CCAConfig, fit_cca, permutation_p, reduced_model, run_cca
from neuro_caduceus.analysis.simulate import make_cca_pair, make_confounded_pair, make_covariates


def _oracle_canonical_correlations(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Singular values of Qx^T Qy (orthonormal bases of the centred data): Björck-Golub, no whitening."""
    qx, _ = np.linalg.qr(X - X.mean(axis=0))
    qy, _ = np.linalg.qr(Y - Y.mean(axis=0))
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def test_fit_cca_matches_qr_oracle_and_variates_are_canonical():
    rng = np.random.default_rng(0)
    X, Y = make_cca_pair(n=400, p=6, q=4, rho=0.7, seed=1)
    Y = Y + 0.3 * X[:, :4] @ rng.normal(size=(4, 4))  # more than one non-zero correlation
    m = fit_cca(X, Y, n_components=4, ridge=0.0)
    np.testing.assert_allclose(m.corr, _oracle_canonical_correlations(X, Y)[:4], atol=1e-8)
    U, V = m.transform(X, Y)
    C = np.corrcoef(U.T, V.T)
    np.testing.assert_allclose(np.diag(C[:4, 4:]), m.corr, atol=1e-8)  # corr(U_j, V_j) = rho_j
    np.testing.assert_allclose(C[:4, :4], np.eye(4), atol=1e-8)  # U uncorrelated with unit variance


def test_planted_canonical_correlation_recovered_on_held_out_folds():
    X, Y = make_cca_pair(n=2000, p=10, q=8, rho=0.6, seed=0)
    r = run_cca(X, Y, CCAConfig(n_perm=19, n_components=3, seed=0, parallel=False))
    first = r.table.row(0, named=True)
    assert abs(first["heldout_r"] - 0.6) < 0.05, first
    assert first["p_value"] == pytest.approx(1 / 20)  # no permutation reaches it
    assert abs(r.table["heldout_r"][1]) < 0.1  # nothing else is shared


def test_independent_data_gives_large_permutation_p():
    X, Y = make_cca_pair(n=300, p=30, q=20, rho=0.0, seed=0)
    r = run_cca(X, Y, CCAConfig(n_perm=99, reduce_dims=20, seed=0, parallel=False))
    assert r.dims["genetic_reduced"] == 20  # PCA before CCA: 30 -> 20 dims
    assert (r.table["p_value"] > 0.05).all(), r.table
    # in-sample correlations are inflated, held-out ones are not
    assert r.table["train_r"][0] > 0.4 and abs(r.table["heldout_r"][0]) < 0.15


def test_structure_coefficients_point_to_the_shared_gene():
    rng = np.random.default_rng(4)
    n, dim = 600, 6
    shared = rng.normal(size=n)
    genes = {f"G{i}": slice(i * dim, (i + 1) * dim) for i in range(4)}
    X = rng.normal(size=(n, 4 * dim))
    X[:, genes["G2"]] += 2 * shared[:, None] * rng.normal(size=dim)
    Y = rng.normal(size=(n, 5))
    Y[:, 0] += shared
    cfg = CCAConfig(n_perm=0, reduce_dims=10, n_components=2, seed=0, parallel=False)
    r = run_cca(X, Y, cfg, blocks=genes)
    s1 = r.structure.filter(r.structure["component"] == 1)
    best = s1.sort("structure_r", descending=True).row(0, named=True)
    assert best["gene"] == "G2" and best["structure_r"] > 0.5
    assert s1.filter(s1["gene"] != "G2")["structure_r"].abs().max() < 0.2


def test_permutations_on_ray_equal_serial(ray_session):
    X, Y = make_cca_pair(n=200, p=12, q=6, rho=0.3, seed=2)
    cfg = CCAConfig(n_perm=24, perms_per_task=5, reduce_dims=8, n_components=2, seed=7)
    par = run_cca(X, Y, cfg)
    ser = run_cca(X, Y, CCAConfig(**{**cfg.__dict__, "parallel": False, "perms_per_task": 24}))
    np.testing.assert_array_equal(par.null, ser.null)
    assert par.table.equals(ser.table)


def test_covariate_confound_removed_within_folds():
    """Both sides load on batch and age only: raw CCA finds a 'link', residualized CCA does not."""
    rng = np.random.default_rng(0)
    n = 400
    cov = make_covariates(n, rng)
    confound = (cov["batch"] == "batch_b").to_numpy() * 2.0 + (cov["age"].to_numpy() - 55) / 9
    X = rng.normal(size=(n, 8)) + confound[:, None] * rng.normal(size=8)
    Y = rng.normal(size=(n, 5)) + confound[:, None] * rng.normal(size=5)
    cfg = CCAConfig(n_perm=49, reduce_dims=8, n_components=2, seed=0, parallel=False, categorical=("batch",))
    raw = run_cca(X, Y, cfg)
    adjusted = run_cca(X, Y, cfg, cov=cov, covariates=["age", "sex", "batch"])
    assert raw.table["heldout_r"][0] > 0.5 and raw.table["p_value"][0] == pytest.approx(1 / 50)
    assert abs(adjusted.table["heldout_r"][0]) < 0.15 and adjusted.table["p_value"][0] > 0.05


def _confounded(seed: int, n: int = 120, rho: float = 0.0):
    return make_confounded_pair(n, np.random.default_rng(seed), rho)


def test_freedman_lane_null_type_one_error_within_monte_carlo_bounds_and_power():
    """Covariates drive both sides, no link beyond them: P(p <= 0.05) within the binomial 99.9% bound for the
    first component (per-component p) and for any component (FWER p); a planted link is found every time."""
    sims = 32
    cfg = dict(n_perm=19, reduce_dims=4, n_components=2, parallel=False, categorical=("batch",))
    first = any_fwer = 0
    for s in range(sims):
        X, Y, cov = _confounded(200 + s)
        r = run_cca(X, Y, CCAConfig(seed=s, **cfg), cov=cov, covariates=["age", "sex", "batch"])
        first += r.table["p_value"][0] <= 0.05
        any_fwer += (r.table["p_fwer"] <= 0.05).any()
    bound = binom.ppf(0.999, sims, 0.05)
    assert first <= bound and any_fwer <= bound, (first, any_fwer, bound)
    for s in range(3):
        X, Y, cov = _confounded(300 + s, rho=0.8)
        r = run_cca(X, Y, CCAConfig(seed=s, **cfg), cov=cov, covariates=["age", "sex", "batch"])
        assert r.table["p_fwer"][0] == pytest.approx(1 / 20), r.table


def test_freedman_lane_reduced_model_matches_lstsq():
    X, Y, cov = _confounded(1)
    fitted, resid = reduced_model(Y, cov, ["age", "sex", "batch"], ("batch",))
    D = np.column_stack([np.ones(len(Y)), cov["age"], cov["sex"], cov["batch"] == "batch_b",
                         cov["batch"] == "batch_c"]).astype(float)
    beta = np.linalg.lstsq(D, Y, rcond=None)[0]
    np.testing.assert_allclose(fitted, D @ beta, atol=1e-8)
    np.testing.assert_allclose(fitted + resid, Y, atol=1e-12)
    f0, r0 = reduced_model(Y, None, None)  # no covariates: the means, so permuting residuals = permuting rows
    np.testing.assert_allclose(f0, np.broadcast_to(Y.mean(axis=0), Y.shape))


def test_permutation_p_per_component_and_max_statistic():
    obs = np.array([0.5, 0.2])
    null = np.array([[0.1, 0.3], [0.6, 0.0], [0.2, 0.1], [0.3, 0.25]])
    p, p_fwer = permutation_p(obs, null)
    np.testing.assert_allclose(p, [(1 + 1) / 5, (1 + 2) / 5])
    np.testing.assert_allclose(p_fwer, [(1 + 1) / 5, (1 + 4) / 5])  # maxima per permutation: .3 .6 .2 .3
