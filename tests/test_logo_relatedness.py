"""Relatedness: UKB kinship reader, related groups, maximal unrelated set, grouped folds and permutations."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import polars as pl
import pytest
from helpers import write_matrix
from typer.testing import CliRunner

from neuro_caduceus.analysis.cca import CCAConfig, run_cca
from neuro_caduceus.analysis.folds import kfolds, stratified_folds
from neuro_caduceus.analysis.logo import LogoConfig, run_logo
from neuro_caduceus.analysis.relatedness import (
    apply_relatedness,
    block_permutation,
    maximal_unrelated,
    read_kinship,
    related_groups,
)
from neuro_caduceus.analysis.simulate import make_cca_pair, make_planted_gene_blocks
from neuro_caduceus.cli import app

HEADER = "ID1 ID2 HetHet IBS0 Kinship\n"


def write_kinship(path, rows: list[tuple[str, str, float]]) -> str:
    path.write_text(HEADER + "".join(f"{a}\t{b} 0.05 0.001  {k}\n" for a, b, k in rows))
    return str(path)


def random_pairs(ids: list[str], m: int, seed: int) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(m):
        a, b = rng.choice(len(ids), 2, replace=False)
        out.append((ids[a], ids[b], float(rng.choice([0.02, 0.0442, 0.1, 0.25]))))
    return out


def test_reader_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "rel.txt"
    bad.write_text("ID1 ID2 Kinship\n")
    with pytest.raises(ValueError, match=r"rel.txt:1: expected the header ID1 ID2 HetHet IBS0 Kinship"):
        read_kinship(bad)
    bad.write_text(HEADER + "a b 0.1 0.0 0.2\na c 0.1 0.0\n")
    with pytest.raises(ValueError, match=r"rel.txt:3: expected 5 fields .* got 4"):
        read_kinship(bad)
    bad.write_text(HEADER + "a b 0.1 0.0 high\n")
    with pytest.raises(ValueError, match=r"rel.txt:2: Kinship 'high' is not a number"):
        read_kinship(bad)
    with pytest.raises(FileNotFoundError, match="no such kinship file"):
        read_kinship(tmp_path / "missing.txt")
    pairs = read_kinship(write_kinship(tmp_path / "ok.txt", [("1001", "1002", 0.25)]))
    assert pairs.id1 == ["1001"] and pairs.id2 == ["1002"] and pairs.kinship.tolist() == [0.25]


def test_groups_are_connected_components_above_the_threshold(tmp_path):
    ids = [f"S{i}" for i in range(60)]
    rows = random_pairs(ids, 40, seed=1) + [("S1", "X_not_in_cohort", 0.3)]
    pairs = read_kinship(write_kinship(tmp_path / "rel.txt", rows))
    rel = related_groups(ids, pairs, threshold=0.0442)
    graph = nx.Graph()  # networkx as the oracle
    graph.add_nodes_from(ids)
    graph.add_edges_from((a, b) for a, b, k in rows if k >= 0.0442 and b in ids)
    expected = {frozenset(c) for c in nx.connected_components(graph)}
    got = {frozenset(np.array(ids)[rel.groups == g]) for g in np.unique(rel.groups)}
    assert got == expected
    assert rel.pairs_in_file == 41 and rel.pairs_used == sum(k >= 0.0442 and b in ids for a, b, k in rows)
    assert rel.counts["related_groups"] == sum(len(c) > 1 for c in expected)


def test_maximal_unrelated_set_is_independent_maximal_and_deterministic(tmp_path):
    ids = [f"S{i}" for i in range(80)]
    rows = random_pairs(ids, 70, seed=2)
    pairs = read_kinship(write_kinship(tmp_path / "rel.txt", rows))
    keep = maximal_unrelated(ids, pairs, 0.0442)
    kept = {ids[i] for i in keep}
    edges = [(a, b) for a, b, k in rows if k >= 0.0442]
    assert not any(a in kept and b in kept for a, b in edges)  # independent
    for s in set(ids) - kept:  # maximal: every removed subject has a kept relative
        assert any((a == s and b in kept) or (b == s and a in kept) for a, b in edges), s
    assert np.array_equal(keep, maximal_unrelated(ids, pairs, 0.0442))
    involved = {x for e in edges for x in e}
    assert {s for s in ids if s not in involved} <= kept  # unrelated subjects always stay
    order, groups, summary = apply_relatedness(ids, tmp_path / "rel.txt", 0.0442, unrelated=True)
    assert groups is None and len(order) == len(keep) and summary["removed_for_unrelated"] == 80 - len(keep)


def test_block_permutation_moves_whole_groups_onto_groups_of_the_same_size():
    groups = np.array([0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 7, 7, 8])
    for seed in range(20):
        perm = block_permutation(groups, np.random.default_rng(seed))
        assert sorted(perm) == list(range(len(groups)))
        for g in np.unique(groups):
            src = groups[perm[groups == g]]
            assert len(set(src)) == 1 and (groups == src[0]).sum() == (groups == g).sum()
    singles = np.arange(500)
    perm = block_permutation(singles, np.random.default_rng(0))
    assert sorted(perm) == list(range(500)) and (perm != singles).mean() > 0.9  # an ordinary permutation


def test_folds_never_split_a_related_group():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), rng.integers(1, 4, 100))
    y = (rng.random(len(groups)) < 0.4).astype(int)
    folds = stratified_folds(y, 5, seed=1, groups=groups) + kfolds(len(groups), 5, 1, groups)
    assert len(folds) == 10
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])


def test_logo_and_cca_keep_relatives_in_one_fold():
    X, blocks, y, _ = make_planted_gene_blocks(n=120, genes=2, dim=4, planted_gene=0, effect=1.0, seed=0)
    groups = np.arange(120) // 2  # 60 sibling pairs
    r = run_logo(X, blocks, y, None, None, LogoConfig(n_folds=3, n_repeats=2, k=4, Cs=(1.0,), n_perm=2,
                                                        parallel=False), groups=groups)
    assert (r.fold_of[:, 0::2] == r.fold_of[:, 1::2]).all()
    A, B = make_cca_pair(n=120, p=5, q=4, rho=0.5, seed=0)
    c = run_cca(A, B, CCAConfig(n_perm=3, reduce_dims=4, n_components=2, parallel=False), groups=groups)
    assert c.n == 120 and c.table.height == 2


def test_logo_command_with_kinship_counts_relatedness(tmp_path):
    X, blocks, y, cov = make_planted_gene_blocks(n=120, genes=2, dim=4, planted_gene=1, effect=2.0, seed=1)
    ids = cov["subject_id"].to_list()
    write_matrix(tmp_path / "m.parquet", ids, X, {"recipe_id": "r", "gene_list": list(blocks), "d_model": 4})
    pl.DataFrame({"subject_id": ids, "mdd": y}).write_csv(tmp_path / "p.tsv", separator="\t")
    kin = write_kinship(tmp_path / "rel.txt", [(ids[0], ids[1], 0.25), (ids[1], ids[2], 0.1),
                                               (ids[3], ids[4], 0.03), (ids[5], "999", 0.5)])
    base = ["logo", "--features", str(tmp_path / "m.parquet"), "--phenotype", str(tmp_path / "p.tsv"),
            "--kinship", kin, "--folds", "3", "--repeats", "1", "--k", "4", "--n-perm", "2", "--serial"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    rel = json.loads((tmp_path / "g" / "logo_summary.json").read_text())["relatedness"]
    assert rel["pairs_in_file"] == 4 and rel["pairs_used"] == 2 and rel["related_groups"] == 1
    assert rel["subjects_with_relatives"] == 3 and rel["largest_group"] == 3 and rel["mode"] == "groups"
    res = CliRunner().invoke(app, [*base, "--unrelated", "--out", str(tmp_path / "u")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "u" / "logo_summary.json").read_text())
    assert s["relatedness"]["removed_for_unrelated"] == 1 and s["n"] == 119  # S1 (2 relatives) goes
    assert "relatedness" in (tmp_path / "u" / "logo_report.md").read_text()
