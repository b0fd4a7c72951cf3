"""How two encoders' subject x feature matrices relate, and how each one spreads subjects: plain numpy.

Why these measures: two encoders of different widths cannot be compared coordinate by coordinate, only by
the geometry they give the same subjects. Linear CKA (Kornblith et al. 2019) compares that geometry and is
invariant to rotations and isotropic scaling of either side; a row permutation of one side gives its chance
level for this n and these widths. The participation ratio (sum of the covariance eigenvalues, squared,
over the sum of their squares) counts how many directions carry the spread. The carrier measures say how
far, and how coherently, carriers of a gene's variants move away from the non-carriers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _centered(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X - X.mean(axis=0)


def _gram_norm2(Xc: np.ndarray) -> float:
    """||Xc^T Xc||_F^2 through the smaller of the two Gram matrices (equal: same nonzero eigenvalues)."""
    G = Xc.T @ Xc if Xc.shape[1] <= Xc.shape[0] else Xc @ Xc.T
    return float((G * G).sum())


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) on column-centred X [n, p] and Y [n, q].

    NaN when a side does not vary across the rows (every subject has the same vector).
    """
    Xc, Yc = _centered(X), _centered(Y)
    den = np.sqrt(_gram_norm2(Xc) * _gram_norm2(Yc))
    if den <= 0:
        return float("nan")
    cross = Yc.T @ Xc
    return float((cross * cross).sum() / den)


@dataclass(frozen=True)
class CKATest:
    """Observed CKA, its row-permutation null (mean, 95% quantile) and the one-sided permutation p."""

    cka: float
    null_mean: float
    null_q95: float
    p_value: float
    n_perm: int


def cka_permutation_test(X: np.ndarray, Y: np.ndarray, n_perm: int, rng: np.random.Generator) -> CKATest:
    """CKA of X and Y against CKA of X and Y with its rows shuffled (the subjects' pairing broken).

    p = (1 + #{null >= observed}) / (1 + n_perm), the analyses' convention; NaN without permutations or
    when the CKA is undefined.
    """
    Xc, Yc = _centered(X), _centered(Y)
    den = np.sqrt(_gram_norm2(Xc) * _gram_norm2(Yc))
    if den <= 0:
        return CKATest(float("nan"), float("nan"), float("nan"), float("nan"), n_perm)

    def cka(rows: np.ndarray | None) -> float:
        cross = (Yc if rows is None else Yc[rows]).T @ Xc
        return float((cross * cross).sum() / den)

    observed = cka(None)
    null = np.array([cka(rng.permutation(len(Yc))) for _ in range(n_perm)])
    if not n_perm:
        return CKATest(observed, float("nan"), float("nan"), float("nan"), 0)
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + n_perm)
    return CKATest(observed, float(null.mean()), float(np.quantile(null, 0.95)), p, n_perm)


def total_variance(X: np.ndarray) -> float:
    """Trace of the sample covariance (ddof 1): the summed variance of every coordinate."""
    Xc = _centered(X)
    return float((Xc * Xc).sum() / max(len(Xc) - 1, 1))


def participation_ratio(X: np.ndarray) -> float:
    """(sum of covariance eigenvalues)^2 / sum of their squares, in [1, rank]; NaN without variation."""
    Xc = _centered(X)
    ss = float((Xc * Xc).sum())
    g2 = _gram_norm2(Xc)
    return ss * ss / g2 if g2 > 0 else float("nan")


@dataclass(frozen=True)
class CarrierShift:
    """How a gene block differs between carriers (c) and non-carriers (0) of the gene's variants.

    relative_shift: mean over carriers of ||e_s - mean_0|| / ||mean_0||, how far a carrier's vector moves from
    the non-carriers' (which is the reference embedding when no non-carrier has a variant), in units of that
    vector's length, so encoders of any scale compare. eta_squared: the share of the block's total sum of
    squares between the two groups, n_c n_0 / n ||mean_c - mean_0||^2 / sum_s ||e_s - mean||^2: 1 when every
    carrier moves the same way, near 0 when carriers move in different directions.
    """

    n_carriers: int
    n_noncarriers: int
    relative_shift: float
    eta_squared: float


def carrier_shift(X: np.ndarray, carrier: np.ndarray) -> CarrierShift:
    """CarrierShift of rows X [n, d] split by the boolean mask `carrier` [n]; NaN where a group is empty."""
    X = np.asarray(X, dtype=np.float64)
    carrier = np.asarray(carrier, dtype=bool)
    n_c, n_0 = int(carrier.sum()), int((~carrier).sum())
    if not n_c or not n_0:
        return CarrierShift(n_c, n_0, float("nan"), float("nan"))
    mean_0, mean_c = X[~carrier].mean(axis=0), X[carrier].mean(axis=0)
    norm_0 = float(np.linalg.norm(mean_0))
    shift = float(np.linalg.norm(X[carrier] - mean_0, axis=1).mean() / norm_0) if norm_0 > 0 else float("nan")
    total = float(((X - X.mean(axis=0)) ** 2).sum())
    between = n_c * n_0 / len(X) * float(((mean_c - mean_0) ** 2).sum())
    return CarrierShift(n_c, n_0, shift, between / total if total > 0 else float("nan"))
