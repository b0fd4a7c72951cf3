"""The Caduceus encoder: strand-invariant pooled embeddings, equal-length batching, (sum, count) pooling."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from neuro_caduceus.model import tokenizer
from neuro_caduceus.model.encoder import EncoderLimits, MaskedLM, encoder_identity, pass_disagreement
from neuro_caduceus.model.modules import CaduceusForMaskedLM
from neuro_caduceus.model.runtime import EncoderRuntime

log = logging.getLogger(__name__)

CODE_FILES = ("modules.py", "scan.py", "embedder.py", "tokenizer.py")
_TOKENIZER_SHA256 = hashlib.sha256(json.dumps(tokenizer.VOCAB, sort_keys=True).encode()).hexdigest()


class Embedder(EncoderRuntime):
    """The Caduceus `Encoder`: sequences into its d_model-wide strand-invariant space.

    PS: per position c = (a + flip_C(b)) / 2 (exactly RC-invariant when pooled); PH: the pooled outputs
    of the sequence and of its reverse complement are averaged. There is no attention mask, so windows are
    never padded: only equal-length windows share a batch, which keeps results independent of batching.
    """

    family = "caduceus"
    batching = "equal_lengths"
    special_tokens = 0
    limits = EncoderLimits(None, "a linear-time scan: any window length")
    masked_lm_absent = None

    def __init__(self, model: CaduceusForMaskedLM, device: str = "auto", dtype: str = "float32",
                 batch_size: int = 8, window: int | None = None, stride: int | None = None) -> None:
        self._place(model, device, dtype, batch_size, window, stride)
        self.rcps = model.config.rcps
        self.strand = "built_in" if self.rcps else "averaged"
        self.label = "PS" if self.rcps else "PH"
        log.info("Embedder: tokenizer %s, kmer_size: 1, window %s, stride %s, device %s, dtype %s",
                 tokenizer.NAME, window, stride, self.device, dtype)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

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

    def tokens(self, seq: str) -> int:
        """One token per base (no special tokens in an embedding pass)."""
        return len(seq)

    def per_base(self, seq: str) -> np.ndarray:
        """(L, dim) float64 strand-invariant vector of every base (PH: the RC pass flipped onto the bases)."""
        ids = tokenizer.tokenize(seq)[None]
        if not self.rcps:
            ids = np.concatenate([ids, tokenizer.COMPLEMENT_IDS[ids[:, ::-1]]])
        with torch.inference_mode(), self._autocast():
            h = self.model.hidden_states(torch.from_numpy(np.ascontiguousarray(ids)).to(self.device))
        h = h.double().cpu()
        if self.rcps:
            d = self.dim
            return ((h[0, :, :d] + h[0, :, d:].flip(-1)) / 2).numpy()
        return ((h[0] + h[1].flip(0)) / 2).numpy()

    def pass_disagreement(self, seqs: list[str]) -> list[float] | None:
        """PH: per window, the forward pass alone on s and on rc(s) before averaging; PS: None (built in)."""
        if self.rcps:
            return None
        out = []
        with torch.inference_mode(), self._autocast():
            for s in seqs:
                fwd = tokenizer.tokenize(s)
                ids = np.stack([fwd, tokenizer.reverse_complement_ids(fwd)])
                h = self.model.hidden_states(torch.from_numpy(ids).to(self.device)).float()
                f, r = h.double().mean(1).cpu().numpy()
                out.append(pass_disagreement(f, r))
        return out

    def identity(self) -> dict[str, Any]:
        return encoder_identity(self.family, self.model.checkpoint_sha256, tokenizer.NAME, _TOKENIZER_SHA256,
                                1, self.window, self.stride, self._pooling(), self.dtype, CODE_FILES)

    def _pooling(self) -> str:
        return "mean of (a + flip_C(b))/2" if self.rcps else "mean of fwd and revcomp passes"

    def recipe(self) -> dict[str, Any]:
        """What produced the embeddings (store it next to them); `encoder` holds the contract's identity."""
        return {"tokenizer": tokenizer.NAME, "kmer_size": 1, "window": self.window,
                "stride": self.stride or self.window, "pooling": self._pooling(),
                "rcps": self.rcps, "dtype": self.dtype, "d_model": self.dim,
                "checkpoint_sha256": self.model.checkpoint_sha256,
                "encoder": {**self.identity(), "strand": self.strand, "dim": self.dim,
                            "batching": self.batching}}

    def masked_lm(self) -> MaskedLM:
        return MaskedLM(self.model, tokenizer.tokenize, tokenizer.reverse_complement_ids,
                        tokenizer.COMPLEMENT_IDS, tokenizer.VOCAB["[MASK]"])
