"""The encoder contract: everything the pipeline asks of a DNA language model, and the one way to get one.

The cohort job, the pilot, `embed-fasta`, `verify-rc`, the RC-check stage and the window store see only
this interface, so two models run over the same haplotypes, windows and subjects. What an encoder does:

- load from a checkpoint folder or URL, the family read from its `config.json` (`load_encoder`);
- tokenize a window (`tokens`: model tokens one strand's pass costs, specials included);
- per-base vectors (`per_base`): each base carries the vector of the token that covers it, special tokens
  excluded, in the strand-invariant form: Caduceus PS builds it in (RC-equivariant channels folded);
  Caduceus PH and DNABERT-2 average the forward and the reverse-complement passes, base-aligned;
- pool per window (`pool_windows`): (sum over bases of the per-base vectors, number of bases), so windows
  combine exactly into a gene vector;
- batching rule (`batching`): `equal_lengths` (no mask: only equal-length windows share a forward) or
  `padded` (an attention mask: any lengths share a forward);
- limits (`limits`): the largest window in bases a config may ask for, and why; `special_tokens` per window
  (a window of b bases costs at most b + special_tokens model tokens: the batch bound the planner uses);
- identity (`identity`): what the window store and the recipe record (family, checkpoint sha256, tokenizer
  and its hash, k-mer size or `bpe`, window, stride, pooling, dtype, model code);
- strand check (`pass_disagreement`): for an averaged model, how far its two passes disagree before averaging;
- an optional masked-LM score (`masked_lm`: None, with `masked_lm_absent` saying why, when not defined).

`label` names the model in messages (PS, PH, DNABERT-2). A third model family: a config parser, its
modules and loader, one class implementing `Encoder`, and a branch in `families.py` (the only place
families are told apart).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class EncoderLimits:
    """The window a config may ask for: at most `max_window_bases` (None: no limit), for `reason`."""

    max_window_bases: int | None
    reason: str

    def check(self, window: int | None, family: str, key: str = "model.window") -> None:
        if window is not None and self.max_window_bases is not None and window > self.max_window_bases:
            raise ValueError(f"{key} = {window} bases is longer than {family} allows "
                             f"({self.max_window_bases} bases: {self.reason}); set {key} <= "
                             f"{self.max_window_bases}")


@dataclass(frozen=True)
class MaskedLM:
    """What a single-base masked-LM score needs: one token per base and a complement on the ids."""

    model: Any
    tokenize: Callable[[str], np.ndarray]
    reverse_complement_ids: Callable[[np.ndarray], np.ndarray]
    complement_ids: np.ndarray
    mask_id: int


class Encoder(Protocol):
    family: str
    label: str
    batching: str
    special_tokens: int
    strand: str
    limits: EncoderLimits
    device: Any
    dtype: str
    window: int | None
    stride: int | None
    masked_lm_absent: str | None

    @property
    def dim(self) -> int: ...
    def tokens(self, seq: str) -> int: ...
    def per_base(self, seq: str) -> np.ndarray: ...
    def pool_windows(self, seqs: list[str]) -> tuple[np.ndarray, np.ndarray]: ...
    def embed(self, seq: str) -> np.ndarray: ...
    def pass_disagreement(self, seqs: list[str]) -> list[float] | None: ...
    def identity(self) -> dict[str, Any]: ...
    def recipe(self) -> dict[str, Any]: ...
    def masked_lm(self) -> MaskedLM | None: ...


def code_version(files: tuple[str, ...]) -> str:
    """Hash of a family's source files: any change to its forward pass invalidates stored windows."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in files:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def encoder_identity(family: str, checkpoint_sha256: str | None, tokenizer: str, tokenizer_sha256: str,
                     kmer_size: int | str, window: int | None, stride: int | None, pooling: str,
                     dtype: str, code_files: tuple[str, ...]) -> dict[str, Any]:
    """The identity every encoder reports (the recipe's `encoder` entry, the window store's identity)."""
    return {"family": family, "checkpoint_sha256": checkpoint_sha256, "tokenizer": tokenizer,
            "tokenizer_sha256": tokenizer_sha256, "kmer_size": kmer_size, "window": window,
            "stride": stride or window, "pooling": pooling, "dtype": dtype,
            "model_code": code_version(code_files)}


def recorded_with_dtype(recipe: dict[str, Any], dtype: str) -> dict[str, Any]:
    """A recipe built by a CPU fp32 copy, naming the dtype the actors will run (top level and `encoder`)."""
    return {**recipe, "dtype": dtype, "encoder": {**recipe["encoder"], "dtype": dtype}}


def pass_disagreement(fwd: np.ndarray, rev: np.ndarray) -> float:
    """max |mean_fwd - mean_rev| relative to max |mean_fwd|: how far two strand passes disagree."""
    return float(np.abs(fwd - rev).max() / max(np.abs(fwd).max(), np.finfo(float).tiny))
