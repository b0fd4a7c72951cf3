"""Device and precision choices shared by every encoder (one rule for Caduceus and DNABERT-2)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from neuro_caduceus.tiling import tile

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def check_settings(device: torch.device, dtype: str, batch_size: int, window: int | None,
                   stride: int | None) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    if dtype != "float32" and device.type != "cuda":
        raise ValueError(f"dtype {dtype!r} needs a CUDA device (half precision runs under CUDA autocast)")
    if batch_size < 1 or (window is not None and window < 1) or (stride is not None and stride < 1):
        raise ValueError("batch_size, window and stride must be positive")


def autocast(dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=DTYPES[dtype])


class EncoderRuntime:
    """Where and how an encoder runs (device, precision, batch and window sizes) and how a whole sequence
    is cut into its windows: one rule for every family; an encoder calls `_place` in its constructor and
    provides `pool_windows`."""

    def _place(self, model: torch.nn.Module, device: str, dtype: str, batch_size: int, window: int | None,
               stride: int | None) -> None:
        self.device = pick_device(device)
        check_settings(self.device, dtype, batch_size, window, stride)
        self.model = model.to(self.device).eval()
        self.dtype, self.batch_size, self.window, self.stride = dtype, batch_size, window, stride

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.dtype)

    def pool_windows(self, seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The family's own: per window, the sum of its vectors over bases ([n, dim]) and the count ([n])."""
        raise NotImplementedError

    def embed(self, seq: str) -> np.ndarray:
        """Whole-sequence embedding: windows by window/stride, pooled as sum(sums) / sum(counts)."""
        if not seq:
            raise ValueError("empty sequence: nothing to embed")
        spans = tile(len(seq), self.window, self.stride)
        sums, counts = self.pool_windows([seq[a:b] for a, b in spans])
        return (sums.sum(0) / counts.sum()).astype(np.float32)
