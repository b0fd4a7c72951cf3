"""Checkpoint I/O in the Hugging Face hub layout (config.json + model.safetensors | pytorch_model.bin)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import warnings

import fsspec
import torch

from neuro_caduceus.io import filesystem
from neuro_caduceus.model.config import RANDOM_INIT_FLAG, CaduceusConfig
from neuro_caduceus.model.modules import CaduceusForMaskedLM

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_FULL_PREFIX = "caduceus.backbone."
_AUTOMODEL_PREFIX = "backbone."


def _read(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return f.read()


def _unpickler_reason(err: Exception) -> str:
    """torch's reason for refusing a pickle, without its advice to turn the safety check off."""
    for line in str(err).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return "not a plain tensor pickle" if "weights_only" in first else first


def check_sha256(data: bytes, where: str, expected: str | None) -> str:
    """The sha256 of the weight bytes; with `expected` (a pinned checkpoint), a mismatch is refused.

    Why: a damaged or swapped weights file loads and embeds different numbers without any other error.
    """
    sha = hashlib.sha256(data).hexdigest()
    if expected is not None and sha != expected.lower():
        raise ValueError(f"{where}: sha256 {sha} does not match the pinned {expected} "
                         "(model.checkpoint_sha256 or --checkpoint-sha256): the weights changed or are "
                         "damaged; restore the file or update the pin knowingly")
    return sha


def _load_tensors(name: str, data: bytes) -> dict[str, torch.Tensor]:
    """The state dict of a weights file; any load error names the file (`name`)."""
    if name.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except SafetensorError as e:
            raise ValueError(f"{name}: not a readable safetensors file ({e}); the file is damaged or "
                             "truncated: download it again") from e
    # weights_only=True: a pickle that tries to build anything but tensors/containers is refused.
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(
            f"{name}: refused by torch.load(weights_only=True), the file holds more than tensors "
            f"({_unpickler_reason(e)}); convert the checkpoint to safetensors"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{name}: not a readable torch weights file ({reason}); the file is damaged or "
                         "truncated: download it again") from e
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{name}: expected a flat dict of tensors (a state_dict)")
    return obj


def check_finite(stored: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or infinite values (they embed NaN, or numbers with no meaning)."""
    for key, tensor in stored.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{where}: tensor {key!r} holds {bad} NaN or infinite value(s); the "
                             "checkpoint is damaged: download it again")


def _normalise_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept the AutoModel layout (`backbone.*`, no LM head) as well as the masked-LM one."""
    return {(_FULL_PREFIX + k[len(_AUTOMODEL_PREFIX):] if k.startswith(_AUTOMODEL_PREFIX) else k): v
            for k, v in sd.items()}


def _complete_state_dict(model: CaduceusForMaskedLM, stored: dict[str, torch.Tensor],
                         where: str) -> dict[str, torch.Tensor]:
    """Check stored tensors against the model's keys/shapes, re-tie aliases, check complement maps."""
    expected = model.state_dict()
    tied = model.tied_keys()
    buffers = {k for k in expected if k.endswith("complement_map")}
    for k, v in stored.items():
        if k not in expected:
            raise ValueError(f"{where}: unexpected key {k!r} (not a {'PS' if model.config.rcps else 'PH'} "
                             f"Caduceus parameter with d_model={model.config.d_model}, "
                             f"n_layer={model.config.n_layer}); is config.json the right one?")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{where}: key {k!r} has shape {tuple(v.shape)}, config.json implies "
                             f"{tuple(expected[k].shape)}")
    full = dict(stored)
    for k, src in tied.items():
        if k in stored and src in stored and not torch.equal(stored[k], stored[src]):
            raise ValueError(f"{where}: {k!r} must equal its tied weight {src!r} but differs")
        if k not in stored and src in stored:
            full[k] = stored[src]
    for k in buffers:
        from_config = expected[k]
        if k in stored:
            if not torch.equal(stored[k].long(), from_config):
                raise ValueError(f"{where}: stored buffer {k!r} = {stored[k].tolist()} disagrees with "
                                 f"config.json complement_map {from_config.tolist()}; fix config.json")
        else:
            full[k] = from_config
    missing = sorted(k for k in expected if k not in full)
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return full


def read_config(path_or_url: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str, dict]:
    """(filesystem, folder, parsed config.json) of a checkpoint folder (local path or any fsspec URL)."""
    url = os.fspath(path_or_url)
    fs, root = filesystem(url)
    root = root.rstrip("/")
    cfg_path = f"{root}/config.json"
    if not fs.exists(cfg_path):
        raise FileNotFoundError(f"{url}: no config.json in this checkpoint folder")
    try:
        cfg_dict = json.loads(_read(fs, cfg_path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{url}/config.json: not valid JSON ({e})") from e
    if not isinstance(cfg_dict, dict):
        raise ValueError(f"{url}/config.json: expected a JSON object")
    return fs, root, cfg_dict


def read_weights(fs: fsspec.AbstractFileSystem, root: str, url: str,
                 expected_sha256: str | None = None) -> tuple[str, dict[str, torch.Tensor], str]:
    """(where, tensors, sha256 of the file) of the folder's weights (safetensors first, else the pickle);
    a pinned `expected_sha256` that does not match, or a non-finite tensor, is refused."""
    weights = next((n for n in WEIGHT_FILES if fs.exists(f"{root}/{n}")), None)
    if weights is None:
        raise FileNotFoundError(f"{url}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    data = _read(fs, f"{root}/{weights}")
    where = f"{url}/{weights}"
    sha = check_sha256(data, where, expected_sha256)
    tensors = _load_tensors(where, data)
    check_finite(tensors, where)
    return where, tensors, sha


def warn_if_random(url: str, extra: dict) -> None:
    if extra.get(RANDOM_INIT_FLAG):
        warnings.warn(f"{url}: this checkpoint has RANDOM weights (made by make-checkpoint); its embeddings "
                      "carry no biological signal", UserWarning, stacklevel=3)


def from_pretrained(
    path_or_url: str | os.PathLike[str], expected_sha256: str | None = None
) -> CaduceusForMaskedLM:
    """Load a Caduceus checkpoint folder (local path or any fsspec URL) in eval mode on CPU, fp32.

    `expected_sha256`: the pinned sha256 of the weights file; a checkpoint that does not match is refused.
    """
    url = os.fspath(path_or_url)
    fs, root, cfg_dict = read_config(url)
    config = CaduceusConfig.from_dict(cfg_dict)
    where, tensors, sha = read_weights(fs, root, url, expected_sha256)
    stored = _normalise_keys(tensors)
    model = CaduceusForMaskedLM(config)
    model.load_state_dict(_complete_state_dict(model, stored, where), strict=True)
    model.checkpoint_sha256 = sha
    warn_if_random(url, config.extra)
    return model.eval()
