"""Which model family a checkpoint folder holds (read from its config.json), and its loaders.

The only place that tells the families apart: everything else asks for an encoder (`model.encoder`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from neuro_caduceus.model.bpe import BpeTokenizer
from neuro_caduceus.model.checkpoint import WEIGHT_FILES, read_config
from neuro_caduceus.model.checkpoint import from_pretrained as load_caduceus
from neuro_caduceus.model.config import CaduceusConfig
from neuro_caduceus.model.dnabert2_checkpoint import load_dnabert2
from neuro_caduceus.model.dnabert2_config import DnaBert2Config
from neuro_caduceus.model.dnabert2_encoder import DnaBert2Encoder
from neuro_caduceus.model.embedder import Embedder
from neuro_caduceus.model.encoder import Encoder
from neuro_caduceus.model.tokenizer import CharTokenizer

CADUCEUS, DNABERT2 = "caduceus", "dnabert2"
__all__ = ["WEIGHT_FILES", "describe_checkpoint", "encoder_class", "family_of", "from_pretrained",
           "load_encoder", "load_tokenizer", "token_counter"]


def family_of(cfg: dict[str, Any], where: str = "config.json") -> str:
    """caduceus (Mamba fields d_model/n_layer) or dnabert2 (MosaicBERT: ALiBi, BERT fields)."""
    if cfg.get("model_type") == "caduceus" or "d_model" in cfg:
        return CADUCEUS
    auto_map = " ".join(str(v) for v in (cfg.get("auto_map") or {}).values())
    if "alibi_starting_size" in cfg or "bert_layers" in auto_map or cfg.get("model_type") == "bert":
        return DNABERT2
    raise ValueError(f"{where}: neither a Caduceus (d_model, n_layer) nor a DNABERT-2 (hidden_size, "
                     "alibi_starting_size) config; point model.checkpoint at a supported checkpoint folder")


def checkpoint_family(path_or_url: str | os.PathLike[str]) -> str:
    url = os.fspath(path_or_url)
    return family_of(read_config(url)[2], f"{url}/config.json")


def from_pretrained(path_or_url: str | os.PathLike[str], expected_sha256: str | None = None) -> Any:
    """Load a Caduceus or DNABERT-2 checkpoint folder; `.hidden_states(input_ids, attention_mask=None)`.
    `expected_sha256`: the pinned sha256 of the weights file (a mismatch is refused)."""
    if checkpoint_family(path_or_url) == CADUCEUS:
        return load_caduceus(path_or_url, expected_sha256)
    return load_dnabert2(path_or_url, expected_sha256)


def load_tokenizer(path_or_url: str | os.PathLike[str]) -> Any:
    """The checkpoint's tokenizer: `.encode(seq, add_special_tokens=True)` -> the official ids."""
    if checkpoint_family(path_or_url) == CADUCEUS:
        return CharTokenizer()
    return BpeTokenizer.from_folder(path_or_url)


def load_encoder(path_or_url: str | os.PathLike[str], device: str = "auto", dtype: str = "float32",
                 batch_size: int = 8, window: int | None = None, stride: int | None = None,
                 expected_sha256: str | None = None) -> Encoder:
    """The checkpoint's `Encoder` (window/stride in bases; the window checked against the family's limits;
    `expected_sha256` pins the weights file)."""
    if checkpoint_family(path_or_url) == CADUCEUS:
        return Embedder(load_caduceus(path_or_url, expected_sha256), device=device, dtype=dtype,
                        batch_size=batch_size, window=window, stride=stride)
    return DnaBert2Encoder(load_dnabert2(path_or_url, expected_sha256), BpeTokenizer.from_folder(path_or_url),
                           device=device, dtype=dtype, batch_size=batch_size, window=window, stride=stride)


def encoder_class(path_or_url: str | os.PathLike[str]) -> type:
    """The checkpoint's encoder class, from config.json alone (no weights read): its class attributes
    (`family`, `label`, `limits`, `batching`, `special_tokens`) are what a driver plans with."""
    return Embedder if checkpoint_family(path_or_url) == CADUCEUS else DnaBert2Encoder


def token_counter(path_or_url: str | os.PathLike[str]) -> Callable[[str], int]:
    """Model tokens one strand's pass over a window costs (the tokenizer only, no weights)."""
    if checkpoint_family(path_or_url) == CADUCEUS:
        return len
    tokenizer = BpeTokenizer.from_folder(path_or_url)
    return lambda seq: len(tokenizer.encode(seq))


def describe_checkpoint(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a dry run says about a checkpoint: family, width (`d_model`), layers and a one-line label."""
    if family_of(cfg) == CADUCEUS:
        c = CaduceusConfig.from_dict(cfg)
        return {"family": CADUCEUS, "d_model": c.d_model, "n_layer": c.n_layer, "rcps": c.rcps,
                "label": f"Caduceus {'PS' if c.rcps else 'PH'}, d_model {c.d_model}, {c.n_layer} layers"}
    b = DnaBert2Config.from_dict(cfg)
    return {"family": DNABERT2, "d_model": b.hidden_size, "n_layer": b.num_hidden_layers, "rcps": False,
            "label": f"DNABERT-2, hidden {b.hidden_size}, {b.num_hidden_layers} layers, "
                     f"{b.num_attention_heads} heads"}
