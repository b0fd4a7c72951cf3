"""A random tiny DNABERT-2 in the hub layout, with the real BPE tokenizer (for tests, demos and dry runs)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from neuro_caduceus.model.config import RANDOM_INIT_FLAG
from neuro_caduceus.model.dnabert2 import DnaBert2ForMaskedLM
from neuro_caduceus.model.dnabert2_config import DnaBert2Config, tiny_dnabert2_config
from neuro_caduceus.model.saving import save_pretrained

PRESETS = {"tiny-dnabert2": tiny_dnabert2_config}
_DATA = Path(__file__).resolve().parent / "data"
TOKENIZER_FILES = {"tokenizer.json": "dnabert2_tokenizer.json",
                   "tokenizer_config.json": "dnabert2_tokenizer_config.json"}


def random_dnabert2(config: DnaBert2Config, seed: int) -> DnaBert2ForMaskedLM:
    """BERT-style N(0, 0.02) weights, layer norms near 1, every parameter perturbed; flagged random."""
    gen = torch.Generator().manual_seed(seed)
    config.extra[RANDOM_INIT_FLAG] = True
    model = DnaBert2ForMaskedLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "LayerNorm" in name or "layernorm" in name else 0.02 * noise)
    return model.eval()


def save_dnabert2(model: DnaBert2ForMaskedLM, out_dir: str | os.PathLike[str]) -> Path:
    """config.json (the hub's keys), model.safetensors (official names, decoder tie omitted), tokenizer."""
    tokenizer = {name: (_DATA / shipped).read_bytes() for name, shipped in TOKENIZER_FILES.items()}
    return save_pretrained(model, out_dir, tokenizer)
