"""Caduceus (PS/PH) in pure PyTorch: official-compatible checkpoints, exact chunked selective scan."""

from __future__ import annotations

from neuro_caduceus.model.checkpoint import from_pretrained
from neuro_caduceus.model.config import CaduceusConfig, preset_config
from neuro_caduceus.model.modules import CaduceusForMaskedLM
from neuro_caduceus.model.saving import save_pretrained

__all__ = ["CaduceusConfig", "CaduceusForMaskedLM", "from_pretrained", "preset_config", "save_pretrained"]
