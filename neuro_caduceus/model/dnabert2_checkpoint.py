"""Loading a DNABERT-2 checkpoint folder as the hub publishes it (zhihan1996/DNABERT-2-117M layout).

The official `BertForMaskedLM` state dict names its tensors `bert.embeddings.*`, `bert.encoder.layer.N.*`
and `cls.predictions.*`; our modules carry the same names, so the mapping is the identity on those keys. A
`BertModel` (AutoModel) dump lacks the `bert.` prefix and the masked-LM head: it is refused, because the
pilot's masked-LM score needs the head. The pooler is not part of the masked-LM model and is dropped.
"""

from __future__ import annotations

import os

import torch

from neuro_caduceus.model.checkpoint import read_config, read_weights, warn_if_random
from neuro_caduceus.model.dnabert2 import DnaBert2ForMaskedLM
from neuro_caduceus.model.dnabert2_config import DnaBert2Config

IGNORED_PREFIXES = ("bert.pooler.",)  # BertModel's pooler: unused by the masked-LM model


def _state_dict(model: DnaBert2ForMaskedLM, stored: dict[str, torch.Tensor],
                where: str) -> dict[str, torch.Tensor]:
    """Check the stored tensors against the model's official names and shapes; re-tie the decoder."""
    shapes = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in stored.items():
        if key.startswith(IGNORED_PREFIXES):
            continue
        if key not in shapes:
            bare = not key.startswith(("bert.", "cls."))
            hint = " (a BertModel dump: save the BertForMaskedLM)" if bare else ""
            raise ValueError(f"{where}: unexpected key {key!r}{hint}; is config.json the right one?")
        if tuple(value.shape) != tuple(shapes[key].shape):
            raise ValueError(f"{where}: key {key!r} has shape {tuple(value.shape)}, config.json implies "
                             f"{tuple(shapes[key].shape)}")
        out[key] = value
    for alias, source in model.tied_keys().items():
        if alias in out and source in out and not torch.equal(out[alias], out[source]):
            raise ValueError(f"{where}: {alias!r} must equal its tied weight {source!r} but differs")
        out.setdefault(alias, out.get(source, shapes[alias]))
    missing = sorted(k for k in shapes if k not in out)
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return out


def load_dnabert2(path_or_url: str | os.PathLike[str],
                  expected_sha256: str | None = None) -> DnaBert2ForMaskedLM:
    """A DNABERT-2 checkpoint folder (local path or fsspec URL) in eval mode on CPU, fp32; a pinned
    `expected_sha256` that the weights file does not match is refused."""
    url = os.fspath(path_or_url)
    fs, root, cfg_dict = read_config(url)
    config = DnaBert2Config.from_dict(cfg_dict)
    where, tensors, sha = read_weights(fs, root, url, expected_sha256)
    model = DnaBert2ForMaskedLM(config)
    model.load_state_dict(_state_dict(model, tensors, where), strict=True)
    model.checkpoint_sha256 = sha
    warn_if_random(url, config.extra)
    return model.eval()
