"""The RC check stage: deviations against direct model passes, held-out genes, the gate, verify-rc options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from neuro_caduceus.cli import app
from neuro_caduceus.cohort.rc_check import RCCheckFailed, check_or_raise, run_rc_check
from neuro_caduceus.model import from_pretrained, save_pretrained, tokenizer
from neuro_caduceus.model.embedder import Embedder
from neuro_caduceus.model.rc import RCWindow, check_windows, reverse_complement

SEQS = ["ACGTTGCAAGCTAGCTAGGATCCGATNACGT", "TTTTACGATCGGGCATCGACTAGCAGTACAGTACGATCA"]


def _windows() -> list[RCWindow]:
    return [RCWindow(f"g{i}", "chr1", 0, s) for i, s in enumerate(SEQS)]


def test_ph_reports_the_pass_disagreement_before_averaging(golden_dir):
    model = from_pretrained(golden_dir / "ph_d32_l2")
    rec = check_windows(Embedder(model, device="cpu"), _windows())
    assert rec["max_abs_deviation"] < 1e-5  # averaged: invariant by construction
    for w, got in zip(SEQS, rec["windows"], strict=True):
        with torch.inference_mode():
            f = model.hidden_states(torch.from_numpy(tokenizer.tokenize(w))[None]).double().mean(1)[0].numpy()
            r = model.hidden_states(torch.from_numpy(tokenizer.tokenize(reverse_complement(w)))[None])
            r = r.double().mean(1)[0].numpy()
        expect = np.abs(f - r).max() / np.abs(f).max()
        assert got["ph_pass_disagreement"] == pytest.approx(expect, rel=1e-6)
        assert expect > 1e-3  # a random PH model is strand-specific before averaging
    assert rec["ph_pass_disagreement"] == max(w["ph_pass_disagreement"] for w in rec["windows"])


def test_ps_is_invariant_and_has_no_pass_disagreement(golden_dir):
    rec = check_windows(Embedder(from_pretrained(golden_dir / "ps_d32_l2"), device="cpu"), _windows())
    assert rec["max_abs_deviation"] < 1e-5 and rec["ph_pass_disagreement"] is None


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from neuro_caduceus.synthetic import make_cohort

    out = tmp_path_factory.mktemp("rc")
    make_cohort(out, n_samples=10, n_genes=4, seed=1)
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory, golden_dir) -> Path:
    """A self-consistent PS checkpoint whose complement map is the identity: not RC-equivariant."""
    model = from_pretrained(golden_dir / "ps_d32_l2")
    model.config.complement_map = {i: i for i in range(16)}
    backbone = model.caduceus.backbone
    for buf in (backbone.embeddings.word_embeddings.complement_map, model.lm_head.complement_map):
        buf.copy_(torch.arange(len(buf)))
    return save_pretrained(model, tmp_path_factory.mktemp("ck") / "broken")


def _genes(cohort: Path) -> list[str]:
    from neuro_caduceus.genome.annotation import read_genes

    return sorted(read_genes(str(cohort / "genes.gtf.gz"))["gene_id"].to_list())


def test_stage_uses_held_out_genes_and_stops_above_tolerance(cohort, broken, golden_dir):
    genes = _genes(cohort)
    inputs = (str(cohort / "genome.fa"), str(cohort / "genes.gtf.gz"))
    args = (*inputs, genes[:2], 64, None, "float32", "cpu", 2, 2)
    ok = run_rc_check(str(golden_dir / "ps_d32_l2"), *args, 1e-4)
    assert ok["passed"] and ok["held_out_genes"] and check_or_raise(ok) is ok
    assert {w["gene_id"] for w in ok["windows"]} <= set(genes[2:]) and len(ok["windows"]) == 4
    assert all(w["length"] == 64 for w in ok["windows"])
    bad = run_rc_check(str(broken), *args, 1e-4)
    assert not bad["passed"] and bad["max_abs_deviation"] > 1e-4
    with pytest.raises(RCCheckFailed, match="RC check failed"):
        check_or_raise(bad)


def test_verify_rc_window_stride_dtype_device(golden_dir, tmp_path):
    fa = tmp_path / "in.fa"
    fa.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(SEQS)))
    args = ["verify-rc", "--checkpoint", str(golden_dir / "ph_d32_l2"), "--fasta", str(fa), "--window", "16",
            "--stride", "8", "--dtype", "float32", "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.output.count("PH passes differ") == 2 and "window 16, dtype float32, device cpu" in res.output
    res = CliRunner().invoke(app, [*args[:-4], "--dtype", "bfloat16", "--device", "cpu"])
    assert res.exit_code != 0 and "needs a CUDA device" in res.output


def test_docs_verify_rc_command_runs_as_written(golden_dir, tmp_path):
    """The command of docs/rc_check.md, with its placeholders (CKPT, seqs.fa) pointed at real files."""
    import shlex

    doc = (Path(__file__).parents[1] / "docs" / "rc_check.md").read_text()
    line = next(ln for ln in doc.splitlines() if ln.startswith("neuro-caduceus verify-rc"))
    (tmp_path / "seqs.fa").write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(SEQS)))
    args = [str(golden_dir / "ps_d32_l2") if a == "CKPT" else str(tmp_path / a) if a == "seqs.fa" else a
            for a in shlex.split(line)[1:]]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "all records RC-invariant" in res.output, res.output
