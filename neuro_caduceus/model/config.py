"""Caduceus configuration parsed from a Hugging Face `config.json` (only the fields the math needs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

RANDOM_INIT_FLAG = "neuro_caduceus_random_init"

_DEFAULT_COMPLEMENT = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 10, 8: 9, 9: 8, 10: 7, 11: 11}


@dataclass
class CaduceusConfig:
    """Architecture fields of a Caduceus checkpoint; unknown fields stay in `extra` for round trips."""

    d_model: int
    n_layer: int
    rcps: bool
    vocab_size: int = 12
    pad_vocab_size_multiple: int = 8
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    conv_bias: bool = True
    bias: bool = False
    norm_epsilon: float = 1e-5
    residual_in_fp32: bool = False
    fused_add_norm: bool = True
    tie_word_embeddings: bool = True
    complement_map: dict[int, int] = field(default_factory=lambda: dict(_DEFAULT_COMPLEMENT))
    ssm_cfg: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        """`"auto"` means ceil(d_model / 16), as in Mamba-1."""
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def n_vocab_rows(self) -> int:
        """Embedding rows: vocab_size rounded up to pad_vocab_size_multiple."""
        m = self.pad_vocab_size_multiple
        return math.ceil(self.vocab_size / m) * m

    def complement_list(self) -> list[int]:
        """The complement of every embedding row; ids not in the map complement to themselves."""
        comp = list(range(self.n_vocab_rows))
        for k, v in self.complement_map.items():
            if 0 <= k < len(comp):
                comp[k] = v
        return comp

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaduceusConfig:
        """Parse an HF config dict; complement_map keys are parsed with int() (never by insertion order)."""
        d = dict(d)
        for required in ("d_model", "n_layer"):
            if required not in d:
                raise ValueError(f"config.json lacks the required field {required!r}")
        for name, want in (("bidirectional", True), ("bidirectional_strategy", "add"),
                           ("bidirectional_weight_tie", True), ("rms_norm", True)):
            if name in d and d[name] != want:
                raise NotImplementedError(f"config.json: {name}={d[name]!r} is not supported (only {want!r})")
        ssm = dict(d.pop("ssm_cfg", None) or {})
        cmap_raw = d.pop("complement_map", None)
        cmap = (dict(_DEFAULT_COMPLEMENT) if cmap_raw is None
                else {int(k): int(v) for k, v in cmap_raw.items()})
        known = {f for f in cls.__dataclass_fields__ if f not in ("complement_map", "ssm_cfg", "extra")}
        kwargs: dict[str, Any] = {k: d.pop(k) for k in list(d) if k in known}
        for k in ("d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias"):
            if k in ssm:
                kwargs[k] = ssm[k]
        kwargs["rcps"] = bool(kwargs.get("rcps", False))
        return cls(**kwargs, complement_map=cmap, ssm_cfg=ssm, extra=d)

    def to_dict(self) -> dict[str, Any]:
        """The HF config dict (complement_map written in integer order with string keys)."""
        ssm = dict(self.ssm_cfg)
        ssm.update(d_state=self.d_state, d_conv=self.d_conv, expand=self.expand, dt_rank=self.dt_rank,
                   conv_bias=self.conv_bias, bias=self.bias)
        out: dict[str, Any] = dict(self.extra)
        out.update(
            d_model=self.d_model, n_layer=self.n_layer, rcps=self.rcps, vocab_size=self.vocab_size,
            pad_vocab_size_multiple=self.pad_vocab_size_multiple, ssm_cfg=ssm, rms_norm=True,
            norm_epsilon=self.norm_epsilon, residual_in_fp32=self.residual_in_fp32,
            fused_add_norm=self.fused_add_norm, bidirectional=True, bidirectional_strategy="add",
            bidirectional_weight_tie=True, tie_word_embeddings=self.tie_word_embeddings,
            complement_map={str(k): v for k, v in sorted(self.complement_map.items())},
        )
        out.setdefault("model_type", "caduceus")
        out.setdefault("architectures", ["CaduceusForMaskedLM"])
        return out


def _public(d_model: int, n_layer: int, rcps: bool) -> CaduceusConfig:
    ssm = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1,
           "dt_init": "random", "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True, "bias": False,
           "use_fast_path": True}
    return CaduceusConfig.from_dict({"d_model": d_model, "n_layer": n_layer, "rcps": rcps, "vocab_size": 12,
                                     "ssm_cfg": ssm, "model_type": "caduceus"})


PRESETS: dict[str, tuple[int, int, bool]] = {
    "caduceus-ps_seqlen-131k_d_model-256_n_layer-16": (256, 16, True),
    "caduceus-ph_seqlen-131k_d_model-256_n_layer-16": (256, 16, False),
    "caduceus-ps_seqlen-1k_d_model-118_n_layer-4": (118, 4, True),
    "caduceus-ph_seqlen-1k_d_model-118_n_layer-4": (118, 4, False),
    "tiny-ps": (32, 2, True),
    "tiny-ph": (32, 2, False),
}


def preset_config(name: str) -> CaduceusConfig:
    """The config of a named preset (the four public checkpoints' shapes, plus tiny ones for tests)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return _public(*PRESETS[name])
