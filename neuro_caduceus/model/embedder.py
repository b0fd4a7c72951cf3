"""Strand-invariant pooled embeddings of DNA: windows, equal-length batching, (sum, count) pooling."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from neuro_caduceus.model import tokenizer
from neuro_caduceus.model.modules import CaduceusForMaskedLM
from neuro_caduceus.tiling import tile

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


class Embedder:
    """Embeds sequences with a Caduceus model into its d_model-wide strand-invariant space.

    PS: per position c = (a + flip_C(b)) / 2 (exactly RC-invariant when pooled); PH: the pooled outputs
    of the sequence and of its reverse complement are averaged. There is no attention mask, so windows are
    never padded: only equal-length windows share a batch, which keeps results independent of batching.
    """

    def __init__(self, model: CaduceusForMaskedLM, device: str = "auto", dtype: str = "float32",
                 batch_size: int = 8, window: int | None = None, stride: int | None = None) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
        self.device = _pick_device(device)
        if dtype != "float32" and self.device.type != "cuda":
            raise ValueError(f"dtype {dtype!r} needs a CUDA device (half precision runs under CUDA autocast)")
        if batch_size < 1 or (window is not None and window < 1) or (stride is not None and stride < 1):
            raise ValueError("batch_size, window and stride must be positive")
        self.model = model.to(self.device).eval()
        self.dtype, self.batch_size, self.window, self.stride = dtype, batch_size, window, stride
        self.rcps = model.config.rcps
        log.info("Embedder: tokenizer %s, kmer_size: 1, window %s, stride %s, device %s, dtype %s",
                 tokenizer.NAME, window, stride, self.device, dtype)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=_DTYPES[self.dtype])

    def _position_sums(self, ids: np.ndarray) -> np.ndarray:
        """(b, L) ids of equal length -> (b, dim) float64 sums over positions of the invariant vector."""
        if not self.rcps:  # PH: the reverse complements ride in the same batch (same length)
            ids = np.concatenate([ids, tokenizer.COMPLEMENT_IDS[ids[:, ::-1]]])
        x = torch.from_numpy(np.ascontiguousarray(ids)).to(self.device)
        with self._autocast():
            h = self.model.hidden_states(x).float()
        if self.rcps:
            d = self.dim
            return ((h[..., :d] + h[..., d:].flip(-1)) / 2).double().sum(1).cpu().numpy()
        fwd, rev = h.double().sum(1).chunk(2)
        return ((fwd + rev) / 2).cpu().numpy()

    def pool_windows(self, seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per sequence (one model window each): sum over positions (float64 [n, dim]) and count ([n])."""
        sums = np.zeros((len(seqs), self.dim), dtype=np.float64)
        counts = np.array([len(s) for s in seqs], dtype=np.int64)
        if len(seqs) and counts.min() == 0:
            raise ValueError(f"empty sequence at index {int(np.argmin(counts))}: nothing to embed")
        by_len: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(seqs):
            by_len[len(s)].append(i)
        with torch.inference_mode():
            for idx in by_len.values():
                for k in range(0, len(idx), self.batch_size):
                    part = idx[k:k + self.batch_size]
                    ids = np.stack([tokenizer.tokenize(seqs[i]) for i in part])
                    sums[part] = self._position_sums(ids)
        return sums, counts

    def embed(self, seq: str) -> np.ndarray:
        """Whole-sequence embedding: windows by window/stride, pooled as sum(sums) / sum(counts)."""
        if not seq:
            raise ValueError("empty sequence: nothing to embed")
        spans = tile(len(seq), self.window, self.stride)
        sums, counts = self.pool_windows([seq[a:b] for a, b in spans])
        return (sums.sum(0) / counts.sum()).astype(np.float32)

    def recipe(self) -> dict[str, Any]:
        """What produced the embeddings (store it next to them)."""
        return {"tokenizer": tokenizer.NAME, "kmer_size": 1, "window": self.window,
                "stride": self.stride or self.window,
                "pooling": "mean of (a + flip_C(b))/2" if self.rcps else "mean of fwd and revcomp passes",
                "rcps": self.rcps, "dtype": self.dtype, "d_model": self.dim,
                "checkpoint_sha256": self.model.checkpoint_sha256}
