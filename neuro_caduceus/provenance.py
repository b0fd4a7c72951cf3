"""One provenance schema for every artifact: shards, subject matrix, PCA, residuals, LOGO, CCA and pilot.

Why one module: a number in a report is only as good as the record of what produced it. Every artifact's
recipe (Parquet schema metadata `neuro_caduceus.recipe`, the `recipe` of a summary JSON or of an .npz model)
holds the same keys, PROVENANCE_KEYS:

- `recipe_id` and, under the seed recipe's name, `embedding_strategy_id` (the same value);
- `versions`: neuro-caduceus, torch, ray, hail, read from the installed distributions (no heavy import);
- `created_utc`: when the artifact's stage ran (ISO 8601, UTC);
- `inputs`: the identity of every input the stage read: local files by path, size and sha256; local folders
  by path, file count, total size and a sha256 of their listing (name and size of each file); URLs by
  path, size and the store's etag/md5/crc32c where it gives one;
- `random_init`: true when the checkpoint's config.json carries `neuro_caduceus_random_init: true` (made by
  `make-checkpoint`); reports and plot titles then say RANDOM WEIGHTS;
- `stage`: which stage wrote the artifact; `lineage`: the stage, time and inputs of every earlier stage.

Downstream stages keep the upstream recipe (model, window, regions, gene list, ...) and `stamp` it with their
own stage, time, versions and inputs; the upstream provenance moves into `lineage`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from neuro_caduceus.io import parquet_metadata, recipe_from_metadata
from neuro_caduceus.model.config import RANDOM_INIT_FLAG

PROVENANCE_KEYS = ("recipe_id", "embedding_strategy_id", "versions", "created_utc", "inputs", "random_init",
                   "stage", "lineage")
RANDOM_LABEL = "RANDOM WEIGHTS (no biological signal)"
DISTRIBUTIONS = {"neuro_caduceus": "neuro-caduceus", "torch": "torch", "ray": "ray", "hail": "hail"}
_HASH_CHUNK = 1 << 22
_sha_cache: dict[tuple[str, int, int], str] = {}


ADDITIVE_DEFINITION = (
    "Windows W_1..W_K tile the gene region (window/stride as configured); a sequence's gene embedding is "
    "sum_k S_k / sum_k L_k, S_k = sum over the positions of window k of the strand-invariant hidden state, "
    "L_k = its length. e_ref = the reference's gene embedding. For each distinct variant v, e_v = the gene "
    "embedding of the reference with v alone applied (only the windows v touches change) and "
    "delta_v = e_v - e_ref. Subject s: e_s = e_ref + sum_v g_sv * delta_v, g_sv in {0, 1, 2} = the number "
    "of ALT alleles of v the subject carries (phase ignored; haploid call: 1; missing call: 0, or its "
    "expected dosage under missing: impute, see missing_definition)."
)

MISSING_DEFINITION = {
    "reference": "a missing call (no GT, a missing allele, or set missing by entry QC) carries no ALT: the "
                 "subject is treated as reference at that record",
    "impute": "additive strategy: a subject whose call at variant v's record (POS, REF) is missing gets "
              "g_sv = 2 * p_v, p_v = AC_v / (2 * N_v), AC_v = the ALT alleles of v observed in the cohort's "
              "subjects (after QC), N_v = the subjects called at v's record; e_s = e_ref + sum_v g_sv * "
              "delta_v as for observed calls (a half-missing call keeps its observed allele)",
}


def versions() -> dict[str, str | None]:
    """Installed versions of the project and its heavy dependencies (None when not installed)."""
    out: dict[str, str | None] = {}
    for key, dist in DISTRIBUTIONS.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    return out


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sha256_file(path: Path) -> str:
    """sha256 of a local file, cached per (path, size, mtime) in the process (inputs are re-read often)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        _sha_cache[key] = digest.hexdigest()
    return _sha_cache[key]


def _folder_identity(path: Path) -> dict[str, Any]:
    """A folder (MatrixTable, checkpoint, Parquet dataset): its listing's sha256, not every byte."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    listing = "\n".join(f"{p.relative_to(path).as_posix()}\t{p.stat().st_size}" for p in files)
    return {"path": str(path), "kind": "folder", "files": len(files),
            "size": sum(p.stat().st_size for p in files),
            "listing_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def _url_identity(url: str) -> dict[str, Any]:
    fs, root = fsspec.core.url_to_fs(url)
    info = fs.info(root)
    tag = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "md5", "crc32c") if info.get(k)), None)
    return {"path": url, "kind": info.get("type", "file"), "size": info.get("size"), "etag": tag}


def input_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of one input: local file -> path, size, sha256; folder -> listing hash; URL -> size, etag."""
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        try:
            return _url_identity(text)
        except (OSError, ImportError, ValueError) as err:
            return {"path": text, "kind": "url", "size": None, "etag": None, "error": str(err)}
    local = Path(text.removeprefix("file://"))
    if local.is_dir():
        return _folder_identity(local)
    if local.is_file():
        size = local.stat().st_size
        return {"path": str(local), "kind": "file", "size": size, "sha256": _sha256_file(local)}
    return {"path": str(local), "kind": "missing"}


def input_identities(paths: Iterable[str | os.PathLike[str] | None]) -> list[dict[str, Any]]:
    return [input_identity(p) for p in paths if p is not None]


def checkpoint_random_init(checkpoint: str | os.PathLike[str]) -> bool:
    """True when the checkpoint's config.json carries `neuro_caduceus_random_init: true`."""
    url = os.fspath(checkpoint).rstrip("/")
    try:
        with fsspec.open(f"{url}/config.json", "rt") as f:
            return bool(json.load(f).get(RANDOM_INIT_FLAG))
    except (OSError, json.JSONDecodeError):
        return False


def provenance(recipe_id: str | None, stage: str, inputs: Iterable[str | os.PathLike[str] | None],
               random_init: bool, created_utc: str | None = None,
               lineage: list[dict] | None = None) -> dict[str, Any]:
    """The provenance record of one artifact (every key of PROVENANCE_KEYS)."""
    return {"recipe_id": recipe_id, "embedding_strategy_id": recipe_id, "versions": versions(),
            "created_utc": created_utc or utc_now(), "inputs": input_identities(inputs),
            "random_init": bool(random_init), "stage": stage, "lineage": list(lineage or [])}


def stamp(recipe: dict, stage: str, inputs: Iterable[str | os.PathLike[str] | None]) -> dict[str, Any]:
    """The upstream recipe re-stamped for a downstream stage; upstream provenance moves into `lineage`."""
    upstream = {k: recipe[k] for k in ("stage", "created_utc", "inputs", "versions") if k in recipe}
    lineage = [*recipe.get("lineage", []), upstream] if upstream else list(recipe.get("lineage", []))
    recipe_id = recipe.get("recipe_id") or recipe.get("embedding_strategy_id")
    random_init = bool(recipe.get("random_init"))
    return {**recipe, **provenance(recipe_id, stage, inputs, random_init, lineage=lineage)}


def is_random(recipe: dict | None) -> bool:
    return bool((recipe or {}).get("random_init"))


def title(text: str, recipe: dict | None) -> str:
    """A plot title, prefixed with the RANDOM WEIGHTS label when the recipe's checkpoint is random."""
    return f"[{RANDOM_LABEL}] {text}" if is_random(recipe) else text


def report_lines(recipe: dict | None) -> list[str]:
    """Markdown lines for the top of a report: the random-weights warning (if any) and the provenance."""
    recipe = recipe or {}
    out = []
    if is_random(recipe):
        out += [f"> **{RANDOM_LABEL}**: the checkpoint was made by `make-checkpoint`; these numbers "
                "exercise the pipeline and carry no biology.", ""]
    v = recipe.get("versions") or {}
    shown = ", ".join(f"{k} {v[k]}" for k in DISTRIBUTIONS if v.get(k))
    out += [f"- recipe `{recipe.get('recipe_id')}`, stage `{recipe.get('stage')}`, "
            f"created {recipe.get('created_utc')} (UTC); {shown}", ""]
    return out


def read_recipe(path: str | os.PathLike[str]) -> dict:
    """The recipe of an artifact: Parquet file or folder (schema metadata), summary .json or .npz model."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.parquet") if not f.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"{p}: no Parquet files")
        p = files[0]
    if p.suffix == ".parquet":
        return recipe_from_metadata(parquet_metadata(str(p)), str(p))
    if p.suffix == ".json":
        return json.loads(p.read_text()).get("recipe", {})
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return json.loads(str(z["recipe"])) if "recipe" in z.files else {}
    raise ValueError(f"{p}: no recipe reader for {p.suffix!r} files")


SUBJECT_EMBEDDING = {
    "diploid": "mean of the two haplotype embeddings",
    "consensus": "embedding of the single consensus haplotype (all ALT alleles applied)",
    "reference": "reference embedding for every subject",
    "additive": "reference embedding + sum over distinct variants of dosage x single-variant window effect",
}


def _job_started(out_dir: str) -> str | None:
    """The cohort job's start time: the modification time of its `_job.json` (the same for a resumed run)."""
    try:
        fs, root = fsspec.core.url_to_fs(out_dir)
        info = fs.info(f"{root.rstrip('/')}/_job.json")
    except (OSError, ValueError):
        return None
    stamp_ = info.get("mtime") or info.get("updated") or info.get("LastModified")
    if isinstance(stamp_, int | float):
        return datetime.fromtimestamp(stamp_, UTC).isoformat(timespec="seconds")
    return str(stamp_) if stamp_ else None


def cohort_recipe(cfg: Any, model_recipe: dict, units: list, qc: dict, rc_check: dict | None = None, *,
                  source: str) -> dict:
    """The recipe stored in every shard of a cohort job: what produced the embeddings, and from what.

    `source` is the genotype input the haplotypes were read from (the path of the job's HaplotypeSource).
    The recipe is deterministic for a given output folder (the time is the job's start), so the shards of a
    resumed run carry the same recipe as those written before the interruption.
    """
    inputs = cfg.inputs
    strategy = cfg.haplotype_strategy
    recipe = {
        "gene_list": [u.gene_id for u in units],
        "gene_names": [u.gene_name for u in units],
        "reference_version": inputs.reference_version,
        "annotation": inputs.annotation,
        "regions": cfg.regions.model_dump(mode="json"),
        "tokenization": model_recipe.get("tokenizer"),
        **{k: v for k, v in model_recipe.items() if k != "tokenizer"},
        "haplotype_strategy": strategy,
        "subject_embedding": SUBJECT_EMBEDDING[strategy],
        "missing": cfg.missing,
        "missing_definition": MISSING_DEFINITION[cfg.missing],
        "qc": qc,
        "config_hash": cfg.result_hash(),
        "package_version": versions()["neuro_caduceus"],
        "rc_check": rc_check,
    }
    if strategy == "additive":
        recipe["additive_definition"] = ADDITIVE_DEFINITION
    paths = [source, inputs.reference_fasta, inputs.gtf, inputs.gene_set, cfg.model.checkpoint]
    recipe.update(provenance(cfg.output.recipe_id, "embed_cohort", paths,
                             checkpoint_random_init(cfg.model.checkpoint), _job_started(cfg.output.dir)))
    return recipe


def pilot_recipe(cfg: Any, model_recipe: dict, units: list, qc: dict, variants_vcf: str | None,
                 local_flank: int, *, source: str) -> dict:
    """The pilot's recipe: the cohort recipe's keys with the production window and dtype, its own stage."""
    production = {**model_recipe, "window": cfg.model.window, "stride": cfg.model.effective_stride,
                  "dtype": cfg.model.dtype}
    recipe = cohort_recipe(cfg, production, units, qc, source=source)
    paths = [source, cfg.inputs.reference_fasta, cfg.inputs.gtf, cfg.inputs.gene_set, cfg.model.checkpoint,
             variants_vcf]
    recipe.update(provenance(cfg.output.recipe_id, "variant_pilot", paths, recipe["random_init"]))
    recipe.update(local_flank=local_flank, llr_definition="neuro_caduceus.analysis.variant_scores")
    return recipe
