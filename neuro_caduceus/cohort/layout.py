"""The job folder: every path a cohort job writes under `output.dir`, and which of them the job owns.

Why one place: preparing the folder, `--overwrite`, verifying committed shards and listing what is committed
must agree on the same names; a file the job writes but `--overwrite` does not know of outlives its job
(and is reused by the next one). Layout (a folder or any fsspec URL):

    _job.json                 config hash, checkpoint sha256, config and the units of the job
    _cohort.json              subjects and QC summary (computed once per folder)
    _rc_check.json            the reverse-complement check's record (run once per folder)
    manifest.json             what was embedded, reused, and what it cost
    reference.parquet         per gene, the reference haplotype's embedding (gene_id, gene_name, embedding)
    shards/<unit>.parquet     one committed shard per gene
    units/<unit>.json         its stats, with the shard's row count, size and sha256
    plans/<unit>.parquet      its reassembly plan (+ plans/<unit>.counts.parquet: its genotype counts)
    window_store/             the window store at its default location (not the job's own files)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fsspec

from neuro_caduceus.io import TEMP_GLOB

SUBFOLDERS = ("shards", "units", "plans")
DEFAULT_STORE = "window_store"


UNIT_FILES = {  # per unit: kind -> path under the job folder
    "shard": "shards/{}.parquet", "stats": "units/{}.json", "plan": "plans/{}.parquet",
    "plan_counts": "plans/{}.counts.parquet",
}


@dataclass(frozen=True)
class JobFolder:
    """The job folder at `url`; paths are paths on `fs` (`url` itself is for messages and workers)."""

    url: str
    fs: Any = field(init=False, repr=False, compare=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        fs, root = fsspec.core.url_to_fs(self.url)
        object.__setattr__(self, "fs", fs)
        object.__setattr__(self, "root", root.rstrip("/"))

    def path(self, name: str) -> str:
        """A path under the folder (`_job.json`, `shards`, ...)."""
        return f"{self.root}/{name}"

    job_file = property(lambda self: self.path("_job.json"))
    cohort_file = property(lambda self: self.path("_cohort.json"))
    rc_check = property(lambda self: self.path("_rc_check.json"))
    manifest = property(lambda self: self.path("manifest.json"))
    shards_dir = property(lambda self: self.path("shards"))
    units_dir = property(lambda self: self.path("units"))
    plans_dir = property(lambda self: self.path("plans"))

    reference = property(lambda self: self.path("reference.parquet"))

    def unit_file(self, kind: str, name: str) -> str:
        """The path of one unit's file of a kind of UNIT_FILES."""
        return self.path(UNIT_FILES[kind].format(name))

    def shard(self, name: str) -> str:
        return self.unit_file("shard", name)

    def unit_stats(self, name: str) -> str:
        return self.unit_file("stats", name)

    def plan(self, name: str) -> str:
        return self.unit_file("plan", name)

    def plan_counts(self, name: str) -> str:
        return self.unit_file("plan_counts", name)

    def job_files(self) -> list[str]:
        """The files of the job as a whole (not of one unit)."""
        return [self.job_file, self.cohort_file, self.rc_check, self.manifest, self.reference]

    def unit_files(self, name: str) -> list[str]:
        """The committed files of one unit (its shard and stats: what verification deletes when damaged)."""
        return [self.shard(name), self.unit_stats(name)]

    def owned_files(self, names: list[str]) -> list[str]:
        """Every file the job writes for the listed units and for itself, existing or not: what `--overwrite`
        deletes (with the units' uncommitted temporary shards)."""
        per_unit = [self.unit_file(kind, n) for n in names for kind in UNIT_FILES]
        return [*per_unit, *self.job_files()]

    def temp_shards(self, name: str = "*") -> list[str]:
        """Uncommitted shards of a crashed writer (of one unit, or of every unit)."""
        return self.fs.glob(f"{self.shards_dir}/{TEMP_GLOB.replace('*', f'{name}.parquet', 1)}")

    def committed(self) -> set[str]:
        """Unit names with a committed shard."""
        shards = self.fs.glob(f"{self.shards_dir}/*.parquet")
        return {p.rsplit("/", 1)[-1][: -len(".parquet")] for p in shards}

    def foreign(self, default_store: bool) -> list[str]:
        """Names at the top of an existing folder without a `_job.json` (the default window store aside)."""
        if not self.fs.exists(self.root):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return sorted(n for n in names if not (default_store and n == DEFAULT_STORE))

    def make(self) -> None:
        for sub in ("", *SUBFOLDERS):
            self.fs.makedirs(self.path(sub).rstrip("/"), exist_ok=True)

    def remove(self, names: list[str]) -> None:
        """Delete the job's own files of the listed units and of itself; subfolders only if left empty."""
        for path in [*self.owned_files(names), *(t for n in names for t in self.temp_shards(n))]:
            if self.fs.exists(path):
                self.fs.rm(path)
        for sub in SUBFOLDERS:
            path = self.path(sub)
            if self.fs.exists(path) and not self.fs.ls(path):
                self.fs.rmdir(path)
