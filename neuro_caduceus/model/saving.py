"""Writing a model in the Hugging Face hub layout (config.json + model.safetensors).

Why its own module: the `CaduceusForMaskedLM.save_pretrained` method uses it, and the checkpoint loader
builds `CaduceusForMaskedLM`s, so the writer sits below both (no import cycle between modules and checkpoint).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save as save_safetensors
from torch import nn

from neuro_caduceus.io import write_atomic


def save_pretrained(model: nn.Module, out_dir: str | os.PathLike[str],
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Write config.json + model.safetensors like the hub (tied aliases omitted), plus `extra_files` (e.g. a
    tokenizer) by name; every file appears atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tied = model.tied_keys()
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in tied}
    payload = {
        "config.json": (json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n").encode(),
        "model.safetensors": save_safetensors(tensors, metadata={"format": "pt"}),
        **(extra_files or {}),
    }
    for name, blob in payload.items():
        write_atomic(None, out / name, blob)
    return out
