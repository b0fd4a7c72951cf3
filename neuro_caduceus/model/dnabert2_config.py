"""DNABERT-2 (MosaicBERT) configuration parsed from the hub's `config.json` (only what the math needs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


@dataclass
class DnaBert2Config:
    """Architecture fields of a DNABERT-2 checkpoint; unknown fields stay in `extra` for round trips."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    alibi_starting_size: int = 512
    hidden_act: str = "gelu"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DnaBert2Config:
        d = dict(d)
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"config.json lacks the required DNABERT-2 field(s) {missing}")
        if d["hidden_size"] % d["num_attention_heads"]:
            raise ValueError(f"config.json: hidden_size {d['hidden_size']} is not a multiple of "
                             f"num_attention_heads {d['num_attention_heads']}")
        if d.get("hidden_act", "gelu") != "gelu":
            raise NotImplementedError(f"config.json: hidden_act={d['hidden_act']!r} is not supported "
                                      "(only 'gelu')")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        return cls(**kwargs, extra=d)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update({f: getattr(self, f) for f in self.__dataclass_fields__ if f != "extra"})
        out.setdefault("model_type", "bert")
        out.setdefault("max_position_embeddings", self.alibi_starting_size)
        return out


def tiny_dnabert2_config() -> DnaBert2Config:
    """A small DNABERT-2 shape for tests and dry runs (the real tokenizer's 4,096-token vocabulary)."""
    return DnaBert2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          vocab_size=4096, extra={"_name_or_path": "random-tiny-dnabert2"})
