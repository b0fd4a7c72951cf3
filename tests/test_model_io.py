"""Checkpoint loading/saving: round trips, URLs, tied weights and loud failures on bad files."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import fsspec
import pytest
import torch
from safetensors.torch import load_file, save_file

from neuro_caduceus.model import CaduceusForMaskedLM, from_pretrained, preset_config, save_pretrained
from neuro_caduceus.model.config import PRESETS, CaduceusConfig
from neuro_caduceus.model.modules import flip_lc
from neuro_caduceus.model.random_init import random_model

GOLDEN = Path(__file__).parent / "data" / "golden"
IDS = torch.tensor([[7, 8, 9, 10, 11, 7, 7, 9, 8, 10, 6, 9, 9, 8, 7, 10, 10, 8, 9, 7]])

PARAMS = {  # the public checkpoints' parameter counts (CADUCEUS_FACTS.md)
    "caduceus-ps_seqlen-131k_d_model-256_n_layer-16": 7_725_312,
    "caduceus-ph_seqlen-131k_d_model-256_n_layer-16": 7_725_312,
    "caduceus-ps_seqlen-1k_d_model-118_n_layer-4": 470_702,
    "caduceus-ph_seqlen-1k_d_model-118_n_layer-4": 470_702,
}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def _outputs(model: CaduceusForMaskedLM, ids: torch.Tensor = IDS) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        return model.hidden_states(ids), model(ids)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_preset_parameter_counts(name: str) -> None:
    model = CaduceusForMaskedLM(preset_config(name))
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_config_parses_complement_map_by_int_key() -> None:
    raw = json.loads((GOLDEN / "ps_d32_l2" / "config.json").read_text())
    raw["complement_map"] = dict(sorted(raw["complement_map"].items()))  # string order: "0","1","10",...
    cfg = CaduceusConfig.from_dict(raw)
    assert cfg.complement_list()[:12] == [0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11]
    assert cfg.complement_list()[12:] == [12, 13, 14, 15]
    assert cfg.dt_rank_value == 2 and cfg.n_vocab_rows == 16


@pytest.mark.parametrize("name", ["ps_d32_l2", "ph_d32_l2"])
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    model = from_pretrained(GOLDEN / name)
    out = model.save_pretrained(tmp_path / "ckpt")
    hub_keys = sorted(load_file(GOLDEN / name / "model.safetensors"))
    assert sorted(load_file(out / "model.safetensors")) == hub_keys
    again = from_pretrained(out)
    for a, b in zip(_outputs(model), _outputs(again), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert again.checkpoint_sha256 == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()


def test_loads_from_file_and_memory_urls(tmp_path: Path) -> None:
    ref = from_pretrained(GOLDEN / "ps_d32_l2")
    via_file = from_pretrained((GOLDEN / "ps_d32_l2").resolve().as_uri())
    mem = fsspec.filesystem("memory")
    for fname in ("config.json", "model.safetensors"):
        mem.pipe(f"/ckpt_ps/{fname}", (GOLDEN / "ps_d32_l2" / fname).read_bytes())
    via_mem = from_pretrained("memory://ckpt_ps")
    for other in (via_file, via_mem):
        torch.testing.assert_close(_outputs(other)[1], _outputs(ref)[1], rtol=0, atol=0)
        assert other.checkpoint_sha256 == ref.checkpoint_sha256


def test_automodel_prefix_and_pytorch_bin(tmp_path: Path) -> None:
    ref = from_pretrained(GOLDEN / "ph_d32_l2")
    sd = load_file(GOLDEN / "ph_d32_l2" / "model.safetensors")
    d = tmp_path / "auto"
    d.mkdir()
    shutil.copy(GOLDEN / "ph_d32_l2" / "config.json", d / "config.json")
    auto = {k.replace("caduceus.backbone.", "backbone.", 1): v for k, v in sd.items()}
    torch.save(auto, d / "pytorch_model.bin")
    loaded = from_pretrained(d)
    torch.testing.assert_close(_outputs(loaded)[1], _outputs(ref)[1], rtol=0, atol=0)


def test_missing_config_or_weights_names_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    shutil.copy(GOLDEN / "ph_d32_l2" / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors, pytorch_model.bin"):
        from_pretrained(tmp_path)


def _rewrite(folder: Path, edit) -> Path:
    path = folder / "model.safetensors"
    sd = load_file(path)
    edit(sd)
    save_file(sd, path, metadata={"format": "pt"})
    return folder


def test_wrong_shape_names_key_and_file(tmp_path: Path) -> None:
    key = "caduceus.backbone.layers.1.mixer.mamba_fwd.D"
    d = _rewrite(_copy(GOLDEN / "ph_d32_l2", tmp_path / "c"), lambda sd: sd.__setitem__(key, torch.ones(5)))
    with pytest.raises(ValueError, match=r"layers\.1\.mixer\.mamba_fwd\.D.*shape \(5,\)") as e:
        from_pretrained(d)
    assert "model.safetensors" in str(e.value)


def test_unexpected_and_missing_keys_fail(tmp_path: Path) -> None:
    d = _copy(GOLDEN / "ps_d32_l2", tmp_path / "u")
    _rewrite(d, lambda sd: sd.__setitem__("extra.w", torch.ones(1)))
    with pytest.raises(ValueError, match="unexpected key 'extra.w'"):
        from_pretrained(d)
    key = "caduceus.backbone.layers.0.mixer.submodule.mamba_rev.A_log"
    d = _rewrite(_copy(GOLDEN / "ps_d32_l2", tmp_path / "m"), lambda sd: sd.pop(key))
    with pytest.raises(ValueError, match="missing key.*mamba_rev.A_log"):
        from_pretrained(d)


def test_complement_map_buffer_must_agree_with_config(tmp_path: Path) -> None:
    d = _copy(GOLDEN / "ps_d32_l2", tmp_path / "c")
    cfg = json.loads((d / "config.json").read_text())
    cfg["complement_map"]["7"], cfg["complement_map"]["10"] = 7, 10
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="complement_map.*disagrees"):
        from_pretrained(d)


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    d = tmp_path / "evil"
    d.mkdir()
    shutil.copy(GOLDEN / "ph_d32_l2" / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="pytorch_model.bin.*weights_only"):
        from_pretrained(d)
    assert not marker.exists()


def test_odd_layer_count_equivariant_and_round_trips(tmp_path: Path) -> None:
    cfg = preset_config("tiny-ps")
    cfg.n_layer = 3
    model = random_model(cfg, seed=3)
    ids = IDS
    rc = model.caduceus.backbone.embeddings.word_embeddings.complement_map[ids.flip(-1)]
    with torch.inference_mode():
        h, h_rc = model.hidden_states(ids), model.hidden_states(rc)
    torch.testing.assert_close(h_rc, flip_lc(h), rtol=0, atol=1e-5)
    with pytest.warns(UserWarning, match="RANDOM"):
        again = from_pretrained(save_pretrained(model, tmp_path / "odd"))
    assert again.config.n_layer == 3
    torch.testing.assert_close(_outputs(again)[0], h, rtol=0, atol=0)


def test_random_presets_are_deterministic_and_perturbed() -> None:
    a = random_model(preset_config("tiny-ph"), seed=7).state_dict()
    b = random_model(preset_config("tiny-ph"), seed=7).state_dict()
    c = random_model(preset_config("tiny-ph"), seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["caduceus.backbone.norm_f.weight"], c["caduceus.backbone.norm_f.weight"])
    assert not torch.equal(a["caduceus.backbone.norm_f.weight"], torch.ones(32))
    assert set(PRESETS) >= {"tiny-ps", "tiny-ph"}
