"""Embedder: strand invariance, exact window pooling, batch-composition independence, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_caduceus.model import from_pretrained
from neuro_caduceus.model.embedder import Embedder
from neuro_caduceus.model.modules import flip_lc
from neuro_caduceus.model.tokenizer import reverse_complement_ids, tokenize
from neuro_caduceus.tiling import tile

GOLDEN = Path(__file__).parent / "data" / "golden"
RNG = np.random.default_rng(0)


def _seq(n: int) -> str:
    return "".join(RNG.choice(list("ACGT"), size=n))


def _revcomp(s: str) -> str:
    return s.translate(str.maketrans("ACGTN", "TGCAN"))[::-1]


@pytest.fixture(scope="module")
def ps() -> Embedder:
    return Embedder(from_pretrained(GOLDEN / "ps_d32_l2"), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def ph() -> Embedder:
    return Embedder(from_pretrained(GOLDEN / "ph_d32_l2"), device="cpu", batch_size=4)


def test_ps_per_position_equivariance() -> None:
    model = from_pretrained(GOLDEN / "ps_d118_l4")
    ids = torch.from_numpy(tokenize(_seq(97) + "NNAC"))[None]
    rc = torch.from_numpy(reverse_complement_ids(ids[0].numpy()).copy())[None]
    with torch.inference_mode():
        out, out_rc = model.hidden_states(ids), model.hidden_states(rc)
    torch.testing.assert_close(out_rc, flip_lc(out), rtol=0, atol=1e-5)


def test_pooled_is_rc_invariant_and_matches_an_independent_pooling(ps: Embedder, ph: Embedder) -> None:
    s = _seq(150)
    for emb in (ps, ph):
        np.testing.assert_allclose(emb.embed(s), emb.embed(_revcomp(s)), rtol=0, atol=1e-5)
    with torch.inference_mode():  # oracle: pool the raw model outputs by hand
        h = ps.model.hidden_states(torch.from_numpy(tokenize(s))[None])[0].double()
        want_ps = ((h[:, :32] + h[:, 32:].flip(-1)) / 2).mean(0)
        h1 = ph.model.hidden_states(torch.from_numpy(tokenize(s))[None])[0].double().mean(0)
        h2 = ph.model.hidden_states(torch.from_numpy(tokenize(_revcomp(s)))[None])[0].double().mean(0)
    np.testing.assert_allclose(ps.embed(s), want_ps.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ph.embed(s), ((h1 + h2) / 2).numpy(), rtol=0, atol=1e-6)
    # the raw 2d-wide PS output is NOT invariant when mean-pooled: the test above is not vacuous
    with torch.inference_mode():
        h_rc = ps.model.hidden_states(torch.from_numpy(tokenize(_revcomp(s)))[None])[0].double()
    assert float((h.mean(0) - h_rc.mean(0)).abs().max()) > 1e-3


def test_windows_pool_exactly(ps: Embedder) -> None:
    s = _seq(250)
    windowed = Embedder(ps.model, device="cpu", window=100, stride=100)
    spans = tile(250, 100, 100)
    assert spans == [(0, 100), (100, 200), (200, 250)]
    sums, counts = ps.pool_windows([s[a:b] for a, b in spans])
    assert counts.tolist() == [100, 100, 50] and sums.dtype == np.float64
    np.testing.assert_allclose(windowed.embed(s), sums.sum(0) / counts.sum(), rtol=0, atol=1e-6)
    short = Embedder(ps.model, device="cpu", window=1000)
    np.testing.assert_allclose(short.embed(s), ps.embed(s), rtol=0, atol=0)  # shorter than window: one window
    assert tile(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]


def test_batch_composition_independence(ps: Embedder, ph: Embedder) -> None:
    seqs = [_seq(60), _seq(80), _seq(60), _seq(60), _seq(80), _seq(33)]
    for emb in (ps, ph):
        together, counts = emb.pool_windows(seqs)
        assert counts.tolist() == [len(s) for s in seqs]
        for i, s in enumerate(seqs):
            alone, _ = emb.pool_windows([s])
            np.testing.assert_allclose(together[i] / counts[i], alone[0] / len(s), rtol=0, atol=1e-5)


def test_bad_input(ps: Embedder) -> None:
    with pytest.raises(ValueError, match="empty sequence"):
        ps.embed("")
    with pytest.raises(ValueError, match="empty sequence at index 1"):
        ps.pool_windows(["ACGT", ""])
    # unknown characters are [UNK] (id 6), documented; lower case is the same as upper case
    np.testing.assert_array_equal(ps.embed("acgtRYacgt"), ps.embed("ACGT??ACGT"))
    with pytest.raises(ValueError, match="CUDA"):
        Embedder(ps.model, device="cpu", dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        Embedder(ps.model, device="cpu", dtype="float64")


def test_recipe_and_logging(ps: Embedder, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="neuro_caduceus.model.embedder"):
        emb = Embedder(ps.model, device="cpu", window=64, stride=32)
    assert "kmer_size: 1" in caplog.text and "caduceus-char" in caplog.text
    r = emb.recipe()
    assert r["kmer_size"] == 1 and r["window"] == 64 and r["stride"] == 32 and emb.dim == 32
    assert r["checkpoint_sha256"] == ps.model.checkpoint_sha256 and len(r["checkpoint_sha256"]) == 64
