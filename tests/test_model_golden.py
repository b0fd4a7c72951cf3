"""Our Caduceus against outputs of the official implementation (tests/data/golden, fp32 CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_caduceus.model import from_pretrained
from neuro_caduceus.model.tokenizer import tokenize

GOLDEN = Path(__file__).parent / "data" / "golden"
FOLDERS = ["ps_d32_l2", "ph_d32_l2", "ps_d118_l4", "ph_d118_l4"]


@pytest.mark.parametrize("name", FOLDERS)
def test_matches_official_outputs(name: str) -> None:
    folder = GOLDEN / name
    model = from_pretrained(folder)
    golden = np.load(folder / "golden.npz")
    ids = torch.from_numpy(golden["input_ids"])
    with torch.inference_mode():
        hidden = model.hidden_states(ids).numpy()
        logits = model(ids).numpy()
        layers: list[torch.Tensor] = []
        model.hidden_states(ids[:1], collect=layers)
    assert hidden.shape == golden["last_hidden_state"].shape
    np.testing.assert_allclose(hidden, golden["last_hidden_state"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits, golden["logits"], rtol=0, atol=1e-4)
    row0 = golden["hidden_states_row0"]
    for i in range(len(row0) - 1):  # embedding output, then the mixer output of each layer but the last
        np.testing.assert_allclose(layers[i][0].numpy(), row0[i], rtol=0, atol=1e-4, err_msg=f"layer {i}")


@pytest.mark.parametrize("name", FOLDERS)
def test_state_dict_keys_equal_official(name: str) -> None:
    keys = json.loads((GOLDEN / name / "keys.json").read_text())
    model = from_pretrained(GOLDEN / name)
    assert list(model.state_dict()) == keys["state_dict_keys"]
    assert set(model.tied_keys()) == set(keys["state_dict_keys"]) - set(keys["safetensors_keys"])


def test_golden_seqs_tokenize_to_golden_ids() -> None:
    golden = np.load(GOLDEN / "ps_d32_l2" / "golden.npz")
    for seq, ids in zip(golden["seqs"], golden["input_ids"], strict=True):
        np.testing.assert_array_equal(tokenize(str(seq)), ids)


def test_tokenizer_matches_official() -> None:
    gold = json.loads((GOLDEN / "tokenizer_golden.json").read_text())
    for s in gold["strings"]:
        assert tokenize(s, add_special_tokens=True).tolist() == gold["default"][s]
        assert tokenize(s).tolist() == gold["add_special_tokens_false"][s]
    # anything that is not A/C/G/T/N (either case) is [UNK] = 6, one id per character
    assert tokenize("RYé-*u").tolist() == [6] * 6
