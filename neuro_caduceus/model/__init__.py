"""DNA encoders in pure PyTorch: Caduceus (PS/PH, exact chunked selective scan) and DNABERT-2 (ALiBi BERT).

The names below load their module (and torch) on first use, so importing a light part of the package
(`model.config`, `model.rc`, the CLI's `model.commands`) does not start torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "CaduceusConfig": "config",
    "CaduceusForMaskedLM": "modules",
    "DnaBert2Config": "dnabert2_config",
    "DnaBert2ForMaskedLM": "dnabert2",
    "describe_checkpoint": "families",
    "encoder_class": "families",
    "from_pretrained": "families",
    "load_encoder": "families",
    "load_tokenizer": "families",
    "token_counter": "families",
    "preset_config": "config",
    "save_pretrained": "saving",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
