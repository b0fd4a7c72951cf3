"""The Ray Data cohort embedding job: unique haplotypes -> distinct windows -> actors -> Parquet shards.

Exposes `run_embed_cohort` (the job; loads Ray on first call), `CohortConfig` and `load_config`.
"""

from __future__ import annotations

from neuro_caduceus.cohort.config import CohortConfig, load_config

__all__ = ["CohortConfig", "load_config", "run_embed_cohort"]


def run_embed_cohort(config, overwrite: bool = False, quiet: bool = False) -> dict:
    """Run or resume the job for a CohortConfig or a YAML path; returns the manifest (see cohort.job)."""
    from neuro_caduceus.cohort.job import run_embed_cohort as run

    return run(config, overwrite=overwrite, quiet=quiet)
