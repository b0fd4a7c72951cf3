"""Cohort-job output folders read as encoders to compare: features, identity, carriers, cost, agreement.

Why a module of its own: a comparison of two encoders is only like for like when both ran over the same
genes, reference, regions, haplotype strategy and subjects (and so the same haplotypes); this is where
that is checked, field by field, before anything is computed, and where each job's record (recipe,
`_cohort.json`, `_job.json`, plans, manifest) is turned into what the comparison needs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro_caduceus.analysis.features import FeatureMatrix, read_features
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.cohort.manifest import MANIFEST_FORMAT
from neuro_caduceus.cohort.plan import read_plan
from neuro_caduceus.cohort.shards import unit_name
from neuro_caduceus.io import check_format
from neuro_caduceus.provenance import read_recipe

IDENTITY_KEYS = ("family", "checkpoint_sha256", "tokenizer", "tokenizer_sha256", "window", "stride",
                 "pooling", "dtype")
AGREEMENT = (("gene list", "gene_list"), ("reference version", "reference_version"), ("regions", "regions"),
             ("haplotype strategy", "haplotype_strategy"))


@dataclass
class EncoderJob:
    """One cohort job's output, read for the comparison."""

    folder: str
    recipe: dict
    manifest: dict
    config: dict  # the job's config as `_job.json` recorded it
    subjects: list[str]  # the job's subjects in its order (`_cohort.json`)
    identity: dict
    features: FeatureMatrix | None = None  # subjects x (genes x d) from the shards, once the records agree
    label: str = ""

    @property
    def shards(self) -> str:
        return JobFolder(self.folder).shards_dir


def _read_json(path: str, what: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{file.parent}: no {file.name}, so not a finished cohort job folder ({what}); "
                         "run embed-cohort to completion on it first")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from None


def encoder_identity(recipe: dict) -> dict:
    """The encoder's identity from the recipe's `encoder` record, else from the Caduceus recipe fields."""
    enc = dict(recipe.get("encoder") or {})
    family = enc.get("family") or ("caduceus-ps" if recipe.get("rcps") else "caduceus-ph")
    ident = {
        "family": family,
        "checkpoint_sha256": enc.get("checkpoint_sha256") or recipe.get("checkpoint_sha256"),
        "tokenizer": enc.get("tokenizer") or recipe.get("tokenization"),
        "tokenizer_sha256": enc.get("tokenizer_sha256"),
        **{k: enc.get(k, recipe.get(k)) for k in ("window", "stride", "pooling", "dtype")},
        "random_init": bool(recipe.get("random_init")),
    }
    return {**ident, "encoder": enc} if enc else ident


def read_encoder_job(folder: str | Path) -> EncoderJob:
    """A finished cohort job's records: manifest, job config, subjects and the shards' recipe (the features
    are read by `load_features`, once the records of every job agree)."""
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such folder (give the output.dir of a cohort job)")
    jf = JobFolder(str(folder))
    manifest = _read_json(jf.manifest, "the job writes it last")
    check_format(manifest.get("format_version"), MANIFEST_FORMAT, jf.manifest)
    config = _read_json(jf.job_file, "the job's record").get("config") or {}
    subjects = _read_json(jf.cohort_file, "the job's subjects").get("subjects") or []
    if not Path(jf.shards_dir).is_dir():
        raise ValueError(f"{folder}: no shards/ folder; run embed-cohort to completion on it first")
    recipe = read_recipe(jf.shards_dir)
    return EncoderJob(str(folder), recipe, manifest, config, [str(s) for s in subjects],
                      encoder_identity(recipe))


def load_features(jobs: list[EncoderJob]) -> None:
    """Read each job's shards into its subjects x (genes x d) matrix; refuse if the subject rows differ."""
    for job in jobs:
        job.features = read_features(job.shards)
    first = jobs[0]
    for job in jobs[1:]:
        if job.features.subject_ids != first.features.subject_ids:
            _refuse(job, "subjects with embeddings (qc.max_missing exclusions)",
                    _difference(job.features.subject_ids, first.features.subject_ids), first)


def _difference(mine: Any, first: Any) -> str:
    """A short description of how a field differs (lists: sizes and a few members on each side only)."""
    if isinstance(mine, list) and isinstance(first, list):
        mine_keys = {json.dumps(x, sort_keys=True) for x in mine}
        first_keys = {json.dumps(x, sort_keys=True) for x in first}
        only_mine = [x for x in mine if json.dumps(x, sort_keys=True) not in first_keys][:3]
        only_first = [x for x in first if json.dumps(x, sort_keys=True) not in mine_keys][:3]
        if not only_mine and not only_first:
            return f"same {len(mine)} entries in another order"
        return f"{len(mine)} vs {len(first)} entries; only here: {only_mine}, only in the first: {only_first}"
    return f"{json.dumps(mine, sort_keys=True)} vs {json.dumps(first, sort_keys=True)}"


def _refuse(job: EncoderJob, field: str, detail: str, first: EncoderJob) -> None:
    raise ValueError(f"{job.folder}: different {field} from {first.folder} ({detail}); compare-encoders "
                     "needs jobs on the same genes, reference version, regions, haplotype strategy, subjects")


def check_comparable(jobs: list[EncoderJob]) -> None:
    """Refuse (ValueError, one line naming the field and the folder) unless the jobs' records agree on genes,
    reference, regions, haplotype strategy and subjects, and no two are the same encoder."""
    if len(jobs) < 2:
        raise ValueError("compare-encoders needs at least two cohort-job folders")
    first = jobs[0]
    for job in jobs[1:]:
        for field, key in AGREEMENT:
            if job.recipe.get(key) != first.recipe.get(key):
                _refuse(job, field, _difference(job.recipe.get(key), first.recipe.get(key)), first)
        if job.subjects != first.subjects:
            _refuse(job, "subjects", _difference(job.subjects, first.subjects), first)
    seen: dict[tuple, str] = {}
    for job in jobs:
        key = tuple(json.dumps(job.identity.get(k), sort_keys=True) for k in IDENTITY_KEYS)
        if key in seen:
            raise ValueError(f"{job.folder}: the same encoder as {seen[key]} (checkpoint, tokenizer, window, "
                             "stride, pooling and dtype all equal); compare jobs of different encoders")
        seen[key] = job.folder


def label_encoders(jobs: list[EncoderJob]) -> None:
    """A short, file-safe, unique name per job: family and checkpoint sha256 prefix (window when needed)."""
    def name(job: EncoderJob, window: bool) -> str:
        i = job.identity
        text = f"{i['family']}-{str(i['checkpoint_sha256'] or 'unknown')[:8]}" + (f"-w{i['window']}"
                                                                                   if window else "")
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)

    labels = [name(j, False) for j in jobs]
    if len(set(labels)) < len(labels):
        labels = [name(j, True) for j in jobs]
    if len(set(labels)) < len(labels):
        labels = [f"{label}-{k + 1}" for k, label in enumerate(labels)]
    for job, label in zip(jobs, labels, strict=True):
        job.label = label


def carriers(job: EncoderJob) -> dict[str, set[str]]:
    """Per gene (by its name in the features), the subjects with at least one non-reference haplotype: a
    haplotype of the job's plan for the gene, i.e. one that carries a variant that passed QC in the region."""
    ids = [str(g) for g in job.recipe.get("gene_list") or []]
    names = [str(g) for g in job.recipe.get("gene_names") or ids]
    to_name = dict(zip(ids, names, strict=True)) if len(names) == len(ids) else {}
    jf = JobFolder(job.folder)
    out = {}
    for gene_id in ids:
        label = to_name.get(gene_id, gene_id) if to_name.get(gene_id) in job.features.blocks else gene_id
        plan_file = jf.plan(unit_name(gene_id))
        if not Path(plan_file).is_file():
            raise ValueError(f"{job.folder}: no plan for gene {gene_id} ({plan_file} is missing); the job "
                             "folder is incomplete: rerun embed-cohort on it")
        plan = read_plan(jf, unit_name(gene_id))
        out[label] = {subject for hap in plan.carriers for subject, _ in hap}
    return out


def check_same_carriers(jobs: list[EncoderJob], per_job: list[dict[str, set[str]]]) -> None:
    """The jobs' haplotypes must agree too (same QC): a gene's carriers differ -> refuse, naming the gene."""
    for job, mine in zip(jobs[1:], per_job[1:], strict=True):
        for gene, subjects in per_job[0].items():
            if mine.get(gene) != subjects:
                _refuse(job, f"carriers of {gene} (the QC or genotype input differs)",
                        f"{len(mine.get(gene, ()))} vs {len(subjects)} carriers", jobs[0])


def _sum(runs: list[dict], key: str) -> float | None:
    values = [r.get(key) for r in runs]
    return None if any(v is None for v in values) else float(sum(values))


def cost(job: EncoderJob) -> dict:
    """Model tokens, model seconds (GPU- or CPU-seconds) and throughput over the job's runs (manifest).

    Model tokens are the manifest's `model_tokens` where it has them, else its `tokens` (a character-level
    encoder's tokens are its bases).

    `model_seconds` is the time the actors spent in the model (forward and pooling), summed over actors;
    GPU-seconds = model_seconds x GPUs per actor on CUDA actors, CPU-seconds = model_seconds x CPUs per actor
    on CPU actors. None where the manifest predates these records.
    """
    m = job.manifest
    runs = m.get("runs") or []
    tokens_run = _sum(runs, "tokens_embedded")
    model_s = _sum(runs, "model_seconds")
    wall_s = sum(float((r.get("throughput") or {}).get("seconds") or 0) for r in runs)
    devices = sorted({a.get("device") for r in runs for a in (r.get("per_actor") or {}).values()
                      if a.get("device")})
    compute = job.config.get("compute") or {}
    device = ",".join(devices) or (job.config.get("model") or {}).get("device")
    per_actor_gpus = compute.get("gpus_per_actor")
    per_actor_gpus = 1.0 if per_actor_gpus is None else float(per_actor_gpus)
    gpu_s = model_s * per_actor_gpus if model_s is not None and "cuda" in devices else None
    cpu_s = model_s * float(compute.get("cpus_per_actor") or 1) if model_s is not None and "cpu" in devices \
        else None
    planned = m.get("tokens") or {}  # the planner's count: bases of the distinct windows
    model_tokens = m.get("model_tokens") or {}  # the encoder's own tokens, where the manifest has them
    return {
        "encoder": job.label, "family": job.identity["family"], "window": job.identity["window"],
        "device": device, "tokens_embedded": model_tokens.get("embedded", planned.get("embedded")),
        "bases_embedded": model_tokens.get("bases_embedded", planned.get("embedded")),
        "model_seconds": model_s, "gpu_seconds": gpu_s, "cpu_seconds": cpu_s, "wall_seconds": wall_s,
        "tokens_per_model_second": tokens_run / model_s if tokens_run and model_s else None,
        "tokens_per_wall_second": tokens_run / wall_s if tokens_run and wall_s else None,
    }
