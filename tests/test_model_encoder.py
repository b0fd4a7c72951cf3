"""The encoder contract for both families: strand invariance, exact pooling, batching, limits, identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_caduceus.model import load_encoder, load_tokenizer
from neuro_caduceus.model.families import family_of
from neuro_caduceus.model.rc import reverse_complement

GOLDEN = Path(__file__).parent / "data" / "golden"
DNABERT2 = GOLDEN / "dnabert2_tiny" / "checkpoint"
RNG = np.random.default_rng(7)


def _seq(n: int) -> str:
    return "".join(RNG.choice(list("ACGT"), size=n))


@pytest.fixture(scope="module")
def bert():
    return load_encoder(DNABERT2, device="cpu", batch_size=3, window=400)


def test_dnabert2_window_vector_is_strand_invariant_and_base_aligned(bert) -> None:
    s = _seq(333) + "NNNN" + _seq(40)
    per_base, per_base_rc = bert.per_base(s), bert.per_base(reverse_complement(s))
    assert per_base.shape == (len(s), bert.dim)
    np.testing.assert_allclose(per_base, per_base_rc[::-1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(bert.embed(s), bert.embed(reverse_complement(s)), rtol=0, atol=1e-5)
    assert max(bert.pass_disagreement([s])) > 1e-3  # the passes alone differ: the average is doing the work


def test_dnabert2_pooling_matches_an_independent_oracle(bert) -> None:
    """Oracle: the tokenizer's offsets and the model's unpadded outputs, weighted by bases per token."""
    tok = load_tokenizer(DNABERT2)
    seqs = [_seq(n) for n in (60, 250, 7)]

    def strand_sum(s: str) -> np.ndarray:
        ids = tok.encode(s)
        offsets = tok._tok.encode(s).offsets
        with torch.inference_mode():
            h = bert.model.hidden_states(torch.tensor([ids]))[0].double().numpy()
        return sum(h[t] * (b - a) for t, (a, b) in enumerate(offsets))

    sums, counts = bert.pool_windows(seqs)  # one padded batch of three lengths (and their RCs)
    for i, s in enumerate(seqs):
        want = (strand_sum(s) + strand_sum(reverse_complement(s))) / 2
        np.testing.assert_allclose(sums[i], want, rtol=0, atol=1e-5)
        assert counts[i] == len(s)
    np.testing.assert_allclose(bert.per_base(seqs[1]).sum(0), sums[1], rtol=0, atol=1e-5)


def test_limits_refuse_a_window_too_long_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"window = 20000 bases is longer than dnabert2 allows \(10000"):
        load_encoder(DNABERT2, device="cpu", window=20_000)
    whole = load_encoder(DNABERT2, device="cpu")  # no window: each sequence is one window, checked too
    with pytest.raises(ValueError, match="a window of 10001 bases is longer than DNABERT-2 allows"):
        whole.embed("A" * 10_001)


def test_identities_name_family_tokenizer_and_window(bert) -> None:
    cad = load_encoder(GOLDEN / "ps_d32_l2", device="cpu", window=400)
    a, b = bert.identity(), cad.identity()
    for ident in (a, b):
        assert {"family", "checkpoint_sha256", "tokenizer", "tokenizer_sha256", "kmer_size", "window",
                "stride", "pooling", "dtype", "model_code"} <= set(ident)
    assert (a["family"], a["kmer_size"], a["window"]) == ("dnabert2", "bpe", 400)
    assert (b["family"], b["kmer_size"], b["stride"]) == ("caduceus", 1, 400)
    assert a["tokenizer_sha256"] != b["tokenizer_sha256"] and a["model_code"] != b["model_code"]
    assert bert.recipe()["encoder"]["family"] == "dnabert2" and cad.pass_disagreement(["ACGT"]) is None
    assert bert.masked_lm() is None and "BPE" in bert.masked_lm_absent and cad.masked_lm() is not None
    assert bert.tokens("ACGTACGTAC") == len(load_tokenizer(DNABERT2).encode("ACGTACGTAC"))
    assert cad.tokens("ACGTACGTAC") == 10


def test_caduceus_per_base_sums_to_its_pooled_window() -> None:
    for name in ("ps_d32_l2", "ph_d32_l2"):
        cad = load_encoder(GOLDEN / name, device="cpu")
        s = _seq(90)
        np.testing.assert_allclose(cad.per_base(s).sum(0), cad.pool_windows([s])[0][0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(cad.per_base(s), cad.per_base(reverse_complement(s))[::-1], atol=1e-5)
    assert load_tokenizer(GOLDEN / "ps_d32_l2").encode("ACGN") == [7, 8, 9, 11, 1]


def test_a_config_of_no_known_family_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="neither a Caduceus"):
        load_encoder(tmp_path)
    assert family_of({"d_model": 8, "n_layer": 1}) == "caduceus"


def test_pilot_score_columns_say_why_a_masked_lm_is_absent(bert) -> None:
    import polars as pl

    from neuro_caduceus.analysis.pilot import absent_scores
    from neuro_caduceus.analysis.variant_scores import SCORE_COLUMNS

    variants = pl.DataFrame({"gene_id": ["G1", "G2"], "pos": [10, 20]})
    scored = absent_scores(variants, bert.masked_lm_absent)
    assert scored.columns == ["gene_id", "pos", *SCORE_COLUMNS]
    assert scored["llr"].is_nan().all() and scored["llr_forward"].is_nan().all()
    assert scored["llr_method"].to_list() == [f"absent: {bert.masked_lm_absent}"] * 2
