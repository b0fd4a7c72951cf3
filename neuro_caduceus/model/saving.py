"""Writing a model in the Hugging Face hub layout (config.json + model.safetensors).

Why its own module: the `CaduceusForMaskedLM.save_pretrained` method uses it, and the checkpoint loader
builds `CaduceusForMaskedLM`s, so the writer sits below both (no import cycle between modules and checkpoint).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from torch import nn


def save_pretrained(model: nn.Module, out_dir: str | os.PathLike[str]) -> Path:
    """Write config.json + model.safetensors like the hub (tied aliases omitted); files appear atomically."""
    from safetensors.torch import save as save_safetensors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tied = model.tied_keys()
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in tied}
    payload = {
        "config.json": (json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n").encode(),
        "model.safetensors": save_safetensors(tensors, metadata={"format": "pt"}),
    }
    for name, blob in payload.items():
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, out / name)
    return out
