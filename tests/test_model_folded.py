"""The strand-folded PS forward (CPU) against the unfolded one, with and without its compiled kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_caduceus.model import from_pretrained, modules

GOLDEN = Path(__file__).parent / "data" / "golden"


def test_folded_forward_equals_unfolded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folded forward (compiled block entry and final norm, then their torch fallbacks) and the
    layer-by-layer hidden states it collects equal the unfolded forward's (cat/flip per layer), batch of 2."""
    name = "ps_d32_l2"
    model = from_pretrained(GOLDEN / name)
    backbone = model.caduceus.backbone
    ids = torch.from_numpy(np.load(GOLDEN / name / "golden.npz")["input_ids"][:2])
    with torch.inference_mode():
        assert backbone.folds(ids)
        compiled_layers: list[torch.Tensor] = []
        compiled = backbone(ids, compiled_layers)
        with monkeypatch.context() as m:
            m.setattr(modules, "kernel", lambda name: None)
            fallback = backbone(ids)
        with monkeypatch.context() as m:
            m.setattr(modules.Backbone, "folds", lambda self, ids: False)
            unfolded_layers: list[torch.Tensor] = []
            unfolded = backbone(ids, unfolded_layers)
    torch.testing.assert_close(compiled, unfolded, rtol=0, atol=1e-5)
    torch.testing.assert_close(fallback, unfolded, rtol=0, atol=1e-5)
    assert len(compiled_layers) == len(unfolded_layers) == model.config.n_layer + 1
    for a, b in zip(compiled_layers, unfolded_layers, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
