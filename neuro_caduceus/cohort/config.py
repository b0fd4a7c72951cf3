"""The cohort embedding job's configuration: one pydantic model per YAML section, unknown keys rejected.

Why a strict model: a misspelled key in a job that runs for hours on a GPU cluster must fail at submit time,
naming the key. Relative local paths resolve against the config file's folder first, then the current
working directory (the first that exists); URLs (gs://, s3://, https://, ...) are kept as written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neuro_caduceus.cohort.layout import DEFAULT_STORE
from neuro_caduceus.genome.strategies import COHORT_STRATEGIES
from neuro_caduceus.variants.qc import QCConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Inputs(_Strict):
    """Where the cohort comes from: exactly one of matrix_table, haplotypes_parquet, vcf."""

    matrix_table: str | None = Field(None, description="Hail MatrixTable (neuro-caduceus import-vcf output)")
    haplotypes_parquet: str | None = Field(None, description="folder written by export-variants")
    vcf: str | None = Field(None, description="bgzipped+indexed VCF (small runs: the pysam oracle path)")
    reference_fasta: str = Field(..., description="reference FASTA (bgzip+fai or plain+fai)")
    gtf: str = Field(..., description="GENCODE-style GTF (.gtf or .gtf.gz)")
    gene_set: str = Field(..., description="gene set YAML (name + genes)")
    reference_version: str = Field("GRCh38", description="recorded in the recipe")
    annotation: str = Field("GENCODE", description="recorded in the recipe, e.g. GENCODE v46")

    @model_validator(mode="after")
    def _one_source(self) -> Inputs:
        given = [k for k in ("matrix_table", "haplotypes_parquet", "vcf") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"inputs: give exactly one of matrix_table, haplotypes_parquet, vcf (got {given or 'none'})"
            )
        return self


class Regions(_Strict):
    mode: Literal["gene_body", "exons", "cds"] = Field(
        "gene_body",
        description="gene_body: the gene's span; exons / cds: the canonical transcript's pieces joined")
    flank: int = Field(
        0, ge=0, description="bases added on both sides of every exon / CDS piece (gene_body: of the gene), "
        "so the splice sites of every internal exon boundary are inside the region")
    orient: Literal["transcript", "reference"] = Field(
        "transcript", description="transcript: minus-strand genes reverse-complemented; reference: + strand")


class ModelSection(_Strict):
    checkpoint: str = Field(..., description="HF-layout checkpoint folder or URL (Caduceus or DNABERT-2: "
                                             "the family is read from its config.json)")
    checkpoint_sha256: str | None = Field(
        None, pattern="^[0-9a-fA-F]{64}$",
        description="sha256 of the weights file; a checkpoint that does not match is refused (the recipe "
                    "records the sha either way)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="bfloat16/float16 run under CUDA autocast (the scan stays fp32); CPU: float32")
    window: int = Field(..., gt=0, description="model window (bases); a gene is tiled into windows; at most "
                                               "the encoder's limit (DNABERT-2: 10000)")
    stride: int | None = Field(None, gt=0, description="window stride; default = window (no overlap)")

    @property
    def effective_stride(self) -> int:
        """The stride windows are tiled with (`stride`, else the window: no overlap)."""
        return self.stride or self.window


class Compute(_Strict):
    """Ray resources. Result-neutral: changing these never changes the embeddings."""

    actors_min: int = Field(1, ge=1, description="embedding actor pool: min size")
    actors_max: int = Field(1, ge=1, description="embedding actor pool: max size (autoscales up to it)")
    gpus_per_actor: float | None = Field(None, ge=0, description="None: 1 if the cluster has GPUs, else 0")
    cpus_per_actor: float = Field(1, gt=0, description="CPU actors (no GPU): cores each")
    genes_per_batch: int = Field(1, ge=1, description="genes per planning task (small genes share batches)")
    tokens_per_batch: int = Field(
        262_144, ge=1,
        description="window batch bound: model tokens of distinct windows handed to an actor at once "
                    "(counted as bases + each window's special tokens: an upper bound)"
    )
    window_batch_size: int = Field(
        8, ge=1, description="windows per model forward (Caduceus: equal lengths; DNABERT-2: padded)")
    cpus_per_task: float = Field(1, gt=0, description="CPU stages (plan, verify, assemble+write)")
    stall_warning_s: float = Field(
        600, gt=0, description="seconds without progress before the driver says what it is waiting for"
    )

    @model_validator(mode="after")
    def _sizes(self) -> Compute:
        if self.actors_max < self.actors_min:
            raise ValueError(f"compute: actors_max ({self.actors_max}) < actors_min ({self.actors_min})")
        return self


class Output(_Strict):
    dir: str = Field(..., description="output folder or URL (shards/, units/, plans/, manifest.json)")
    window_store: str | None = Field(
        None, description="window store folder or URL (default <dir>/window_store); shareable across jobs"
    )
    recipe_id: str = Field("genetics_gene_fm_pca512_v1", description="recorded in the recipe")


class RCCheck(_Strict):
    """The reverse-complement check run before scale-out (neuro_caduceus.cohort.rc_check)."""

    enabled: bool = Field(True, description="run the check once per output folder, before scale-out")
    genes: int = Field(3, ge=1, description="held-out genes (annotation genes outside the gene set)")
    windows: int = Field(1, ge=1, description="reference windows per gene (production window length)")
    tolerance: float = Field(1e-3, gt=0, description="max |e(s) - e(rc(s))| allowed; above it the job stops")


@dataclass(frozen=True)
class ActorPlacement:
    """Where the model runs in the job (embedding actors, the RC check): its GPU share (0: CPU) and device."""

    gpus: float
    device: str

    def resources(self, cpus: float) -> dict[str, float]:
        """Ray resources of one such task or actor: its GPU share, else `cpus` cores."""
        return {"num_gpus": self.gpus} if self.gpus > 0 else {"num_cpus": cpus}


class CohortConfig(_Strict):
    inputs: Inputs = Field(..., description="the cohort's genotypes, reference, annotation and gene set")
    regions: Regions = Field(Regions(), description="which bases of each gene are embedded, and their strand")
    haplotype_strategy: Literal[COHORT_STRATEGIES] = Field(  # type: ignore[valid-type]
        "diploid",
        description="diploid: GT alleles to haplotypes 1/2 in written order, subject = their mean; "
        "consensus: one haplotype with every ALT; reference: the reference for everyone; "
        "additive: reference + sum over distinct variants of ALT dosage x the effect of the variant alone "
        "(phase-free; model work bounded by the gene's distinct variants)")
    missing: Literal["reference", "impute"] = Field(
        "reference",
        description="a missing call: reference (carries no ALT) or impute (additive only: its expected "
        "dosage 2 * p_v, p_v the variant's ALT frequency among the subjects called there)")
    qc: QCConfig = Field(QCConfig(), description="variant, entry and sample QC (every filter off by default)")
    model: ModelSection = Field(..., description="the Caduceus checkpoint and how it runs")
    compute: Compute = Field(Compute(), description="Ray resources (never change the embeddings)")
    output: Output = Field(..., description="where the shards go and the recipe id they carry")
    rc_check: RCCheck = Field(RCCheck(), description="reverse-complement check before scale-out")

    @model_validator(mode="after")
    def _impute_needs_dosages(self) -> CohortConfig:
        if self.missing == "impute" and self.haplotype_strategy != "additive":
            raise ValueError(
                f"missing: impute needs haplotype_strategy: additive (a {self.haplotype_strategy} sequence "
                "carries whole alleles, not an expected dosage); set missing: reference or use additive")
        return self

    @model_validator(mode="after")
    def _qc_needs_hail(self) -> CohortConfig:
        sample_only = {"include_samples", "exclude_samples", "max_missing"}
        used = [k for k, v in self.qc.model_dump(exclude_defaults=True).items() if k not in sample_only and v]
        if self.inputs.vcf and used:
            raise ValueError(
                f"qc keys {used} need inputs.matrix_table (or a Parquet export made with them); "
                "the VCF path applies only include_samples/exclude_samples"
            )
        return self

    @property
    def window_store(self) -> str:
        """Where pooled window results live: output.window_store, or window_store/ under output.dir."""
        return self.output.window_store or f"{self.output.dir.rstrip('/')}/{DEFAULT_STORE}"

    def actor_placement(self, cluster_gpus: float) -> ActorPlacement:
        """compute.gpus_per_actor (unset: 1 when the cluster has GPUs, else 0), and model.device (auto: cuda
        when the actor holds a GPU share)."""
        gpus = self.compute.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if cluster_gpus > 0 else 0.0
        device = self.model.device if self.model.device != "auto" else ("cuda" if gpus > 0 else "cpu")
        return ActorPlacement(gpus, device)

    def result_hash(self) -> str:
        """Hash of every setting that changes the embeddings (compute and output location excluded)."""
        body = self.model_dump(mode="json", exclude={"compute": True, "output": {"dir", "window_store"},
                                                     "rc_check": True})
        body["model"].pop("device", None)
        body["model"].pop("checkpoint_sha256", None)  # a pin, not a setting: the identity holds the sha
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


_PATH_KEYS = {
    "inputs": ("matrix_table", "haplotypes_parquet", "vcf", "reference_fasta", "gtf", "gene_set"),
    "model": ("checkpoint",),
    "output": ("dir", "window_store"),
    "qc": ("include_samples", "exclude_samples"),
}


def _resolve(value: str, base: Path) -> str:
    """URLs as written; absolute paths as written; relative: config folder if it exists there, else cwd."""
    if "://" in value or Path(value).is_absolute():
        return value
    beside = base / value
    if beside.exists():
        return str(beside.resolve())
    return str(Path(value).resolve())


def load_config(path: str | Path) -> CohortConfig:
    """Read and validate a YAML config; errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    base = path.resolve().parent
    for section, keys in _PATH_KEYS.items():
        block = raw.get(section)
        if isinstance(block, dict):
            for key in keys:
                if isinstance(block.get(key), str):
                    block[key] = _resolve(block[key], base)
    try:
        return CohortConfig.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in err.errors()
        ]
        raise ValueError(f"{path}: invalid config\n" + "\n".join(lines)) from None
