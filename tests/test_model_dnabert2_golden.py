"""Our DNABERT-2 against outputs of the official MosaicBERT code (tests/data/golden/dnabert2_tiny, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_caduceus.model import from_pretrained, load_tokenizer
from neuro_caduceus.model.alibi import alibi_slopes

FOLDER = Path(__file__).parent / "data" / "golden" / "dnabert2_tiny"
CHECKPOINT = FOLDER / "checkpoint"
CASES = ["short", "repeat", "gc_rich", "with_n", "long"]


@pytest.fixture(scope="module")
def golden():
    return np.load(FOLDER / "golden.npz")


@pytest.fixture(scope="module")
def model():
    return from_pretrained(CHECKPOINT)


@pytest.mark.parametrize("case", CASES)
def test_hidden_states_and_logits_match_official(case: str, golden, model) -> None:
    ids = torch.from_numpy(golden[f"{case}/input_ids"])[None]
    with torch.inference_mode():
        hidden = model.hidden_states(ids)[0].numpy()
        logits = model(ids)[0].numpy()
    np.testing.assert_allclose(hidden, golden[f"{case}/hidden"], rtol=0, atol=1e-4)
    if f"{case}/logits" in golden:
        np.testing.assert_allclose(logits, golden[f"{case}/logits"], rtol=0, atol=1e-4)


def test_long_case_outgrows_the_alibi_table(golden) -> None:
    assert len(golden["long/input_ids"]) > 512


@pytest.mark.parametrize("case", CASES)
def test_tokenizer_gives_official_ids(case: str, golden) -> None:
    tok = load_tokenizer(CHECKPOINT)
    seq = str(golden[f"{case}/sequence"])
    assert tok.encode(seq, add_special_tokens=True) == golden[f"{case}/input_ids"].tolist()
    assert tok.encode(seq.lower()) == golden[f"{case}/input_ids"].tolist()


def test_a_run_of_n_is_one_unk_per_base(golden) -> None:
    tok = load_tokenizer(CHECKPOINT)
    ids, spans = tok.encode_with_spans("ACGTACGT" + "N" * 7 + "GGCATG")
    unk = spans[ids == 0]
    assert len(unk) == 7 and (unk[:, 1] - unk[:, 0] == 1).all() and unk[0, 0] == 8


def test_spans_cover_every_base_once(golden) -> None:
    tok = load_tokenizer(CHECKPOINT)
    seq = str(golden["with_n/sequence"])
    ids, spans = tok.encode_with_spans(seq)
    assert ids[0] == 1 and ids[-1] == 2 and (spans[[0, -1]] == 0).all()
    inner = spans[1:-1]
    assert inner[0, 0] == 0 and inner[-1, 1] == len(seq) and (inner[1:, 0] == inner[:-1, 1]).all()


def test_padded_batch_equals_official_and_unpadded_runs(golden, model) -> None:
    ids = torch.from_numpy(golden["padded/input_ids"])
    mask = torch.from_numpy(golden["padded/attention_mask"])
    with torch.inference_mode():
        batch = model.hidden_states(ids, mask).numpy()
        alone = [model.hidden_states(ids[i, : int(mask[i].sum())][None])[0].numpy() for i in range(len(ids))]
    np.testing.assert_allclose(batch, golden["padded/hidden"], rtol=0, atol=1e-4)
    for i, row in enumerate(alone):
        np.testing.assert_allclose(batch[i, : len(row)], row, rtol=0, atol=1e-5)
        assert not batch[i, len(row):].any()


def test_alibi_slopes_for_any_head_count() -> None:
    # power of two: 2^(-8/n * (i+1)); 12 heads: the 8-head slopes then every other 16-head slope
    assert alibi_slopes(4) == pytest.approx([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8])
    eight, sixteen = [2 ** (-(i + 1)) for i in range(8)], [2 ** (-(i + 1) / 2) for i in range(16)]
    assert alibi_slopes(12) == pytest.approx(eight + sixteen[0::2][:4])


def test_state_dict_keys_are_the_official_ones(model) -> None:
    stored = torch.load(CHECKPOINT / "pytorch_model.bin", weights_only=True)
    assert set(model.state_dict()) == set(stored)
