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


def test_compiled_forward_in_reused_buffers_gives_the_same_bits() -> None:
    """The compiled CPU forward writes every layer into the thread's kept buffers: the same bits call after
    call and in other threads (a kept buffer never leaks into a result; other threads get buffers of their
    own), the layer-by-layer modules' numbers within an ulp (the two directions share one gate there)."""
    from concurrent.futures import ThreadPoolExecutor

    from neuro_caduceus.model import buffers

    name = "ps_d32_l2"
    model = from_pretrained(GOLDEN / name)
    backbone = model.caduceus.backbone
    ids = torch.from_numpy(np.load(GOLDEN / name / "golden.npz")["input_ids"][:2])
    emb = backbone.embeddings.word_embeddings
    with torch.inference_mode():
        folded = torch.cat([emb.embedding(ids), emb.embedding(emb.complement_map[ids.flip(-1)])], dim=0)
        plain = backbone.folded_layers(folded, None, None)  # the modules' own forward, fresh tensors
        first = backbone(ids)
        kept = buffers.kept()
        assert kept is not None and kept.nbytes > 0
        second = backbone(ids)
        assert buffers.kept() is kept
        def in_a_thread(_: int) -> torch.Tensor:
            with torch.inference_mode():  # grad mode is per thread
                return backbone(ids)

        with ThreadPoolExecutor(2) as pool:
            others = list(pool.map(in_a_thread, range(2)))
        assert buffers.kept() is kept
        shorter = backbone(ids[:, :100])  # new shapes: new buffers, same numbers as the modules
        short = ids[:, :100]
        short_folded = torch.cat([emb.embedding(short), emb.embedding(emb.complement_map[short.flip(-1)])])
        short_plain = backbone.folded_layers(short_folded, None, None)
    torch.testing.assert_close(first, plain, rtol=0, atol=1e-5)
    assert torch.equal(second, first)
    assert all(torch.equal(o, first) for o in others)
    torch.testing.assert_close(shorter, short_plain, rtol=0, atol=1e-5)
    with torch.inference_mode():
        first.add_(1.0)  # a caller writing into a result must not touch the next forward
        assert torch.equal(backbone(ids), second)
    buffers.release()
    assert buffers.kept() is None


def test_large_buffer_sets_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from neuro_caduceus.model import buffers

    model = from_pretrained(GOLDEN / "ps_d32_l2")
    ids = torch.from_numpy(np.load(GOLDEN / "ps_d32_l2" / "golden.npz")["input_ids"][:1])
    monkeypatch.setattr(buffers, "KEEP_BYTES", 1024)
    buffers.release()
    with torch.inference_mode():
        model.hidden_states(ids)
    assert buffers.kept() is None


def test_kept_buffers_serve_a_later_forward_outside_inference_mode() -> None:
    """Buffers first made under torch.inference_mode, then the same shapes under no_grad (d118: out_proj
    padded to 128 rows too): torch refuses writes into inference tensors outside that mode, so the kept
    buffers are remade there; the numbers are the same."""
    from neuro_caduceus.model import buffers

    name = "ps_d118_l4"
    model = from_pretrained(GOLDEN / name)
    ids = torch.from_numpy(np.load(GOLDEN / name / "golden.npz")["input_ids"][:2])
    buffers.release()
    with torch.inference_mode():
        inside = model.hidden_states(ids)
    with torch.no_grad():
        outside = model.hidden_states(ids)
        again = model.hidden_states(ids)
    assert torch.equal(inside, outside) and torch.equal(outside, again)
