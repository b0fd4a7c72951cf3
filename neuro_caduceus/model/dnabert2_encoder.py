"""The DNABERT-2 `Encoder`: BPE windows, padded batches with a mask, strands averaged base-aligned.

DNABERT-2 is not RC-equivariant and BPE cuts the two strands differently, so the strand-invariant per-base
vector is the mean of the forward pass's and the reverse-complement pass's per-base vectors, base-aligned
(base i of the window and base L-1-i of its reverse complement). A base carries the vector of the token
that covers it; [CLS] and [SEP] cover no base. A window's pooled sum is then sum over tokens of
(vector x bases covered), per strand, averaged. Padded positions change no real token's output, so windows
of any lengths share a forward (sorted by token count to waste little padding).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from neuro_caduceus.model.bpe import BpeTokenizer
from neuro_caduceus.model.dnabert2 import DnaBert2ForMaskedLM
from neuro_caduceus.model.encoder import EncoderLimits, encoder_identity, pass_disagreement
from neuro_caduceus.model.rc import reverse_complement
from neuro_caduceus.model.runtime import EncoderRuntime

log = logging.getLogger(__name__)

CODE_FILES = ("dnabert2.py", "alibi.py", "dnabert2_encoder.py", "bpe.py")
MAX_WINDOW_BASES = 10_000
POOLING = "mean over bases of (fwd + base-aligned revcomp per-base token vectors)/2"


class DnaBert2Encoder(EncoderRuntime):
    """Embeds sequences with a DNABERT-2 model into its hidden_size-wide strand-invariant space."""

    family = "dnabert2"
    label = "DNABERT-2"
    batching = "padded"
    special_tokens = 2  # [CLS] and [SEP] per window
    strand = "averaged"
    limits = EncoderLimits(MAX_WINDOW_BASES, "attention is quadratic in tokens, about 5 bases per token")
    masked_lm_absent = ("not defined for BPE: a token covers several bases, so one base cannot be masked "
                        "alone")

    def __init__(self, model: DnaBert2ForMaskedLM, tokenizer: BpeTokenizer, device: str = "auto",
                 dtype: str = "float32", batch_size: int = 8, window: int | None = None,
                 stride: int | None = None) -> None:
        self.limits.check(window, self.family, "window")
        self._place(model, device, dtype, batch_size, window, stride)
        self.tokenizer = tokenizer
        log.info("DNABERT-2 encoder: tokenizer %s (BPE), window %s, stride %s, device %s, dtype %s",
                 tokenizer.name, window, stride, self.device, dtype)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def tokens(self, seq: str) -> int:
        """Model tokens of one strand's pass, [CLS] and [SEP] included."""
        return len(self.tokenizer.encode(seq))

    def _tokenize(self, seq: str) -> tuple[np.ndarray, np.ndarray]:
        """ids and the number of bases each token covers (0 for the specials); every base covered once."""
        ids, spans = self.tokenizer.encode_with_spans(seq)
        width = spans[:, 1] - spans[:, 0]
        covered = spans[width > 0]
        if int(width.sum()) != len(seq) or (len(covered) and covered[0, 0] != 0) or \
                not (covered[1:, 0] == covered[:-1, 1]).all():
            raise ValueError(f"the tokenizer does not cover every base of a {len(seq)}-base window once "
                             "(whitespace in the sequence?)")
        return ids, width

    def _hidden(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """Token vectors (float64 [T_i, dim]) of every id array, padded batches sorted by length."""
        out: list[np.ndarray] = [np.empty(0)] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        for k in range(0, len(order), self.batch_size):
            part = order[k:k + self.batch_size]
            longest = max(len(items[i]) for i in part)
            ids = np.full((len(part), longest), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((len(part), longest), dtype=np.int64)
            for row, i in enumerate(part):
                ids[row, :len(items[i])], mask[row, :len(items[i])] = items[i], 1
            with self._autocast():
                h = self.model.hidden_states(torch.from_numpy(ids).to(self.device),
                                             torch.from_numpy(mask).to(self.device))
            h = h.double().cpu().numpy()
            for row, i in enumerate(part):
                out[i] = h[row, :len(items[i])]
        return out

    def _strand_sums(self, seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) sums over bases of the forward and of the reverse-complement per-base vectors."""
        toks = [self._tokenize(s) for s in seqs] + [self._tokenize(reverse_complement(s)) for s in seqs]
        with torch.inference_mode():
            hidden = self._hidden([ids for ids, _ in toks])
        sums = np.stack([w @ h for (_, w), h in zip(toks, hidden, strict=True)]) if toks else \
            np.zeros((0, self.dim))
        return sums[:len(seqs)], sums[len(seqs):]

    def pool_windows(self, seqs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per sequence (one model window each): sum over bases (float64 [n, dim]) and count ([n])."""
        counts = np.array([len(s) for s in seqs], dtype=np.int64)
        if len(seqs) and counts.min() == 0:
            raise ValueError(f"empty sequence at index {int(np.argmin(counts))}: nothing to embed")
        if len(seqs) and counts.max() > MAX_WINDOW_BASES:
            raise ValueError(f"a window of {int(counts.max())} bases is longer than DNABERT-2 allows "
                             f"({MAX_WINDOW_BASES} bases: {self.limits.reason}); set a window (--window)")
        fwd, rev = self._strand_sums(seqs)
        return (fwd + rev) / 2 if len(seqs) else np.zeros((0, self.dim)), counts

    def per_base(self, seq: str) -> np.ndarray:
        """(L, dim) float64 strand-invariant vector of every base (both strands. token vectors, aligned)."""
        (ids, width), (rc_ids, rc_width) = self._tokenize(seq), self._tokenize(reverse_complement(seq))
        with torch.inference_mode():
            h, h_rc = self._hidden([ids, rc_ids])
        fwd, rev = np.repeat(h, width, axis=0), np.repeat(h_rc, rc_width, axis=0)[::-1]
        return (fwd + rev) / 2

    def pass_disagreement(self, seqs: list[str]) -> list[float]:
        """Per window: the forward and the reverse-complement passes' mean vectors before averaging."""
        fwd, rev = self._strand_sums(seqs)
        return [pass_disagreement(f, r) for f, r in zip(fwd, rev, strict=True)]

    def identity(self) -> dict[str, Any]:
        return encoder_identity(self.family, self.model.checkpoint_sha256, self.tokenizer.name,
                                self.tokenizer.sha256, "bpe", self.window, self.stride, POOLING, self.dtype,
                                CODE_FILES)

    def recipe(self) -> dict[str, Any]:
        """What produced the embeddings; the top-level keys mirror the Caduceus recipe's."""
        return {"tokenizer": self.tokenizer.name, "kmer_size": "bpe", "window": self.window,
                "stride": self.stride or self.window, "pooling": POOLING, "rcps": False, "dtype": self.dtype,
                "d_model": self.dim, "checkpoint_sha256": self.model.checkpoint_sha256,
                "encoder": {**self.identity(), "strand": self.strand, "dim": self.dim,
                            "batching": self.batching}}

    def masked_lm(self) -> None:
        return None
