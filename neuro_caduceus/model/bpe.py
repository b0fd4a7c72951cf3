"""DNABERT-2's BPE tokenizer read from the checkpoint's `tokenizer.json` with the `tokenizers` library.

Each token's character offsets give the bases it covers, so per-token vectors become per-base vectors. The
tokenizer has no normalizer: sequences are upper-cased first (soft-masked reference bases count as bases,
as for Caduceus). A run of N becomes one `[UNK]` per base (the vocabulary has no N).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from tokenizers import Tokenizer

from neuro_caduceus.io import filesystem


class BpeTokenizer:
    """`encode(seq)` -> official ids; `encode_with_spans(seq)` -> ids and each token's [start, end) bases."""

    name = "dnabert2-bpe"

    def __init__(self, tokenizer_json: bytes) -> None:
        self.sha256 = hashlib.sha256(tokenizer_json).hexdigest()
        self._tok = Tokenizer.from_str(tokenizer_json.decode())
        vocab = self._tok.get_vocab()
        for special in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"):
            if special not in vocab:
                raise ValueError(f"tokenizer.json has no {special} token; not a DNABERT-2 tokenizer")
        self.pad_id, self.mask_id = vocab["[PAD]"], vocab["[MASK]"]

    @classmethod
    def from_folder(cls, path_or_url: str | os.PathLike[str]) -> BpeTokenizer:
        url = os.fspath(path_or_url)
        fs, root = filesystem(url)
        path = f"{root.rstrip('/')}/tokenizer.json"
        if not fs.exists(path):
            raise FileNotFoundError(f"{url}: no tokenizer.json in this DNABERT-2 checkpoint folder")
        with fs.open(path, "rb") as f:
            return cls(f.read())

    def encode(self, seq: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(seq.upper(), add_special_tokens=add_special_tokens).ids

    def encode_with_spans(self, seq: str) -> tuple[np.ndarray, np.ndarray]:
        """ids with [CLS]/[SEP] (int64 [T]) and base spans (int64 [T, 2]); the specials' spans are empty."""
        enc = self._tok.encode(seq.upper(), add_special_tokens=True)
        ids = np.asarray(enc.ids, dtype=np.int64)
        spans = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        special = np.asarray(enc.special_tokens_mask, dtype=bool)
        spans[special] = 0
        return ids, spans
