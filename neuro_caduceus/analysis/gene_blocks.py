"""Gene-block reduction: each gene's columns reduced to a few principal components of their own.

Why per gene: one PCA over the concatenation of every gene keeps the directions of largest variance over
all genes, so a gene whose signal lies in its own modest-variance directions is lost as the gene count
grows (its share of the top components shrinks like 1/genes). Reducing each block separately gives every
gene the same few components whatever the number of other genes, so "remove this gene" (LOGO) and "test
this gene" (the per-gene test) act on the same per-gene summary. Per-gene scalars (the deviation from the
reference embedding) are passed through as they are: one number needs no reduction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuro_caduceus.stats.pca import PCA


@dataclass(frozen=True)
class BlockLayout:
    """Which gene each feature column belongs to (`gene_of`, 0..genes-1 in block order) and which columns
    are per-gene scalars used as is (`scalar`)."""

    gene_of: np.ndarray
    scalar: np.ndarray

    @classmethod
    def from_blocks(cls, blocks: dict[str, slice], width: int,
                    scalar: np.ndarray | None = None) -> BlockLayout:
        gene_of = np.full(width, -1, dtype=np.int64)
        for i, sl in enumerate(blocks.values()):
            gene_of[sl] = i
        if (gene_of < 0).any():
            raise ValueError(f"{int((gene_of < 0).sum())} feature columns belong to no gene block")
        mask = np.zeros(width, dtype=bool) if scalar is None else np.asarray(scalar, dtype=bool)
        return cls(gene_of, mask)

    def take(self, cols: np.ndarray) -> BlockLayout:
        """The layout of X[:, cols] (e.g. every gene but one)."""
        return BlockLayout(self.gene_of[cols], self.scalar[cols])

    def genes(self) -> list[np.ndarray]:
        """Column indices of each gene present, in column order."""
        return [np.flatnonzero(self.gene_of == g) for g in dict.fromkeys(self.gene_of.tolist())]


class BlockReducer:
    """Per gene: PCA(k) of its embedding columns fitted on the rows passed to fit(), scalars kept."""

    def __init__(self, layout: BlockLayout, k: int):
        self.layout, self.k = layout, k

    def fit(self, X: np.ndarray) -> BlockReducer:
        self.parts_: list[tuple[np.ndarray, PCA | None, np.ndarray]] = []
        for cols in self.layout.genes():
            reduce = cols[~self.layout.scalar[cols]]
            keep = cols[self.layout.scalar[cols]]
            pca = None
            if len(reduce):
                pca = PCA(n_components=max(1, min(self.k, len(reduce), X.shape[0] - 1))).fit(X[:, reduce])
            self.parts_.append((reduce, pca, keep))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        out = []
        for reduce, pca, keep in self.parts_:
            if pca is not None:
                out.append(pca.transform(X[:, reduce]))
            out.append(X[:, keep])
        return np.hstack(out)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)
