"""Mergeable float64 moments (count, mean, centred scatter) of row blocks: the sufficient statistics of PCA.

Why centred: accumulating raw X^T X and subtracting n * mean mean^T at the end cancels catastrophically when
the mean is large against the spread. Each block keeps its own mean and centred scatter M2 and pairs merge
exactly (Chan et al.): M2 = M2a + M2b + delta delta^T * na nb / n, with delta = mean_b - mean_a.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    """count, mean [d] and centred scatter matrix M2 [d, d] = sum_i (x_i - mean)(x_i - mean)^T, float64."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, d: int) -> Moments:
        return cls(0, np.zeros(d), np.zeros((d, d)))

    @classmethod
    def of_block(cls, x: np.ndarray, overwrite: bool = False) -> Moments:
        """Moments of one block of rows (float64; centred on its own mean, in place when `overwrite`)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected a 2-D block of rows, got shape {x.shape}")
        if x.shape[0] == 0:
            return cls.empty(x.shape[1])
        mean = x.mean(axis=0)
        if overwrite and x.flags.c_contiguous and x.flags.writeable:
            x -= mean
            xc = x
        else:
            xc = np.ascontiguousarray(x - mean)
        return cls(x.shape[0], mean, xc.T @ xc)  # numpy uses a symmetric rank-k update for A.T @ A

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def merge(self, other: Moments) -> Moments:
        """Exact pairwise merge (in place on self, which is returned)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge moments of width {other.dim} into width {self.dim}")
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return self
        from scipy.linalg.blas import dger

        n = self.count + other.count
        delta = other.mean - self.mean
        if not (self.m2.flags.c_contiguous and self.m2.flags.writeable):
            self.m2 = np.array(self.m2, order="C")
        self.m2 += other.m2
        # rank-1 update in place (no d x d temporary): M2 is symmetric, so its F-ordered view is M2 itself
        dger(self.count * other.count / n, delta, delta, a=self.m2.T, overwrite_a=1)
        self.mean = self.mean + delta * (other.count / n)
        self.count = n
        return self

    def covariance(self) -> np.ndarray:
        """Unbiased covariance (divides by n - 1, as sklearn's PCA does)."""
        if self.count < 2:
            raise ValueError(f"need at least 2 rows for a covariance, got {self.count}")
        return self.m2 / (self.count - 1)

