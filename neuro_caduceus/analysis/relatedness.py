"""Relatedness: read a kinship table, group related subjects, and pick a maximal unrelated set.

Why: relatives share rare haplotypes (so gene embeddings) and often phenotypes. If one relative is in a
training fold and another in its test fold, held-out performance is optimistic; if a permutation moves a
relative's phenotype onto an unrelated subject, the null forgets the family resemblance and p-values are
too small. Subjects linked by kinship at or above a threshold (transitively: connected components of the
kinship graph) form one group: a group never spans folds, and permutations move whole groups.

Input format: the UK Biobank relatedness file (`ukbA_rel_sP.txt`, KING estimates), whitespace separated with
the header `ID1 ID2 HetHet IBS0 Kinship`; only ID1, ID2 and Kinship are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

THIRD_DEGREE = 0.0442  # KING kinship lower bound of 3rd-degree relatives (2^-4.5)
HEADER = ("ID1", "ID2", "HetHet", "IBS0", "Kinship")


@dataclass
class KinshipPairs:
    """Pairs of subject ids with their kinship coefficient, as read from the file."""

    id1: list[str]
    id2: list[str]
    kinship: np.ndarray
    source: str = ""


def read_kinship(path: str | Path) -> KinshipPairs:
    """Read a UKB-format relatedness file; errors name the file, the line and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such kinship file")
    id1: list[str] = []
    id2: list[str] = []
    kin: list[float] = []
    with open(path) as f:
        header = f.readline().split()
        if tuple(header) != HEADER:
            raise ValueError(f"{path}:1: expected the header {' '.join(HEADER)} (UK Biobank relatedness "
                             f"format), got {' '.join(header) or 'an empty line'}")
        for lineno, line in enumerate(f, start=2):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != len(HEADER):
                raise ValueError(f"{path}:{lineno}: expected {len(HEADER)} fields ({' '.join(HEADER)}), "
                                 f"got {len(fields)}")
            try:
                k = float(fields[4])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: Kinship {fields[4]!r} is not a number") from None
            if not np.isfinite(k):
                raise ValueError(f"{path}:{lineno}: Kinship {fields[4]!r} is not finite")
            if fields[0] == fields[1]:
                raise ValueError(f"{path}:{lineno}: a subject paired with itself ({fields[0]})")
            id1.append(fields[0])
            id2.append(fields[1])
            kin.append(k)
    return KinshipPairs(id1, id2, np.asarray(kin, dtype=np.float64), str(path))


@dataclass
class Relatedness:
    """Related groups of the analysed subjects (in their order) and what was used to form them."""

    groups: np.ndarray  # [n] int group label; singletons have their own label
    threshold: float
    pairs_in_file: int
    pairs_used: int  # both subjects analysed and kinship >= threshold
    counts: dict = field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return int(len(np.unique(self.groups)))


def related_groups(subject_ids: list[str], pairs: KinshipPairs,
                   threshold: float = THIRD_DEGREE) -> Relatedness:
    """Connected components of the graph 'kinship >= threshold' over these subjects (labels 0..G-1)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(subject_ids)
    edges = _edges(subject_ids, pairs, threshold)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    counts = {"subjects": n, "subjects_with_relatives": int((sizes[labels] > 1).sum()),
              "related_groups": int((sizes > 1).sum()), "largest_group": int(sizes.max()) if n else 0}
    return Relatedness(labels.astype(np.int64), threshold, len(pairs.kinship), len(edges), counts)


def _edges(subject_ids: list[str], pairs: KinshipPairs, threshold: float) -> np.ndarray:
    """[m, 2] row indices of analysed pairs at or above the threshold (pairs outside the cohort ignored)."""
    pos = {s: i for i, s in enumerate(subject_ids)}
    keep = [(pos[a], pos[b]) for a, b, k in zip(pairs.id1, pairs.id2, pairs.kinship, strict=True)
            if k >= threshold and a in pos and b in pos]
    return np.asarray(keep, dtype=np.int64).reshape(-1, 2)


def maximal_unrelated(subject_ids: list[str], pairs: KinshipPairs,
                      threshold: float = THIRD_DEGREE) -> np.ndarray:
    """Row indices (ascending) of a maximal set with no pair at or above the threshold.

    Greedy maximal independent set: visit subjects by ascending number of relatives (ties: input order),
    keep a subject unless a kept subject is its relative. Deterministic, keeps every unrelated subject and
    removes at most one per related pair in the common case of pairs.
    """
    n = len(subject_ids)
    edges = _edges(subject_ids, pairs, threshold)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        neighbours[a].append(int(b))
        neighbours[b].append(int(a))
    degree = np.array([len(set(v)) for v in neighbours])
    kept = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    for i in np.lexsort((np.arange(n), degree)):
        if not blocked[i]:
            kept[i] = True
            blocked[neighbours[i]] = True
    return np.flatnonzero(kept)


def block_permutation(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A row permutation that moves whole related groups onto groups of the same size.

    Groups of equal size are exchangeable as units (whole-block permutation): the members of a group land,
    in their order, on the positions of another group of that size. Singletons form the size-1 class, so
    with no relatives this is an ordinary permutation. Returns `perm` with new row i = old row perm[i].
    """
    _, inverse, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # rows grouped by label, input order inside a group
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    perm = np.arange(len(order))
    for size in np.unique(sizes):
        same = np.flatnonzero(sizes == size)
        rows = order[starts[same][:, None] + np.arange(size)[None, :]]  # [groups of this size, size]
        perm[rows.reshape(-1)] = rows[rng.permutation(len(same))].reshape(-1)
    return perm


def apply_relatedness(order: list[str], kinship: str | Path | None, threshold: float = THIRD_DEGREE,
                      unrelated: bool = False) -> tuple[list[str], np.ndarray | None, dict | None]:
    """(subjects kept, group labels or None, summary) for the analysed subjects in `order`.

    Without a kinship file nothing changes (groups None: every subject its own group). With `unrelated`,
    the subjects outside a maximal unrelated set are removed (counted) and the rest need no groups.
    """
    if kinship is None:
        if unrelated:
            raise ValueError("--unrelated needs a --kinship file")
        return order, None, None
    pairs = read_kinship(kinship)
    rel = related_groups(order, pairs, threshold)
    summary = {"kinship": str(kinship), "threshold": threshold, "pairs_in_file": rel.pairs_in_file,
               "pairs_used": rel.pairs_used, **rel.counts, "mode": "unrelated" if unrelated else "groups",
               "removed_for_unrelated": 0}
    if not unrelated:
        return order, rel.groups, summary
    keep = maximal_unrelated(order, pairs, threshold)
    summary["removed_for_unrelated"] = len(order) - len(keep)
    return [order[i] for i in keep], None, summary
