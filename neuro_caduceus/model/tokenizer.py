"""Character tokenizer with the official Caduceus ids (kmer_size 1); vectorised with a byte lookup table."""

from __future__ import annotations

import numpy as np

NAME = "caduceus-char"
VOCAB = {"[CLS]": 0, "[SEP]": 1, "[BOS]": 2, "[MASK]": 3, "[PAD]": 4, "[RESERVED]": 5, "[UNK]": 6,
         "A": 7, "C": 8, "G": 9, "T": 10, "N": 11}
UNK_ID, SEP_ID = VOCAB["[UNK]"], VOCAB["[SEP]"]
COMPLEMENT_IDS = np.array([0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11], dtype=np.int64)

_LUT = np.full(256, UNK_ID, dtype=np.int64)
for _base in "ACGTN":
    _LUT[ord(_base)] = _LUT[ord(_base.lower())] = VOCAB[_base]


def tokenize(seq: str, add_special_tokens: bool = False) -> np.ndarray:
    """ids per character: A/C/G/T/N in either case -> 7..11, anything else -> 6 ([UNK]).

    add_special_tokens=True appends [SEP] (=1) like the official default call; pretraining and the
    official variant-effect scripts use False.
    """
    raw = np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)  # one byte per character
    ids = _LUT[raw]
    return np.append(ids, SEP_ID) if add_special_tokens else ids


def reverse_complement_ids(ids: np.ndarray) -> np.ndarray:
    """Token ids of the reverse complement (specials and [UNK] map to themselves)."""
    return COMPLEMENT_IDS[ids[::-1]]


class CharTokenizer:
    """The Caduceus tokenizer behind the common `encode` interface (see `model.load_tokenizer`)."""

    name = NAME
    sha256 = NAME  # fixed vocabulary in code: its name identifies it

    def encode(self, seq: str, add_special_tokens: bool = True) -> list[int]:
        return tokenize(seq, add_special_tokens=add_special_tokens).tolist()
