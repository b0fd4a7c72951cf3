"""The cohort job inside `ray job submit`: config paths moved out of Ray's package folder, every node's view
of them checked, then the dry-run report or the resource check and the job itself.
"""

from __future__ import annotations

from pathlib import Path

from neuro_caduceus.cohort.cluster import SEE_ADVICE, PreflightError, check_paths_on_nodes, local_paths
from neuro_caduceus.cohort.config import CohortConfig
from neuro_caduceus.cohort.preflight import dry_run, format_report
from neuro_caduceus.cohort.resources import check_resources


def ray_package_dir(cwd: Path | None = None) -> Path | None:
    """The folder `ray job submit --working-dir` unpacked the upload into (the job's cwd), if any."""
    cwd = (cwd or Path.cwd()).resolve()
    return next((p for p in (cwd, *cwd.parents) if p.name.startswith("_ray_pkg_")), None)


def relocate_for_cluster(cfg: CohortConfig, package: Path | None, client_dir: str | None) -> CohortConfig:
    """Move relative paths that resolved into Ray's temporary package folder to where they really are.

    Inputs that were uploaded with the working directory stay; the others (ignored by .gitignore, or
    outside the upload) and output.dir are taken relative to `client_dir` (the submitting machine's folder,
    passed by scripts/submit.sh); without it they are an error. Output never lands in the package folder:
    Ray deletes it when the job ends.
    """
    if package is None:
        return cfg
    for dotted, value in local_paths(cfg).items():
        path = Path(value)
        if not path.is_relative_to(package):
            continue
        if dotted != "output.dir" and path.exists():
            continue  # shipped with --working-dir: every node unpacks the same upload
        rel = path.relative_to(package)
        if client_dir is None:
            why = ("would be written into Ray's temporary package folder and lost when the job ends"
                   if dotted == "output.dir" else "was not uploaded with --working-dir (ignored by "
                   ".gitignore or outside the working directory)")
            raise PreflightError(f"{dotted}: {rel} {why}; {SEE_ADVICE}, or submit with scripts/submit.sh")
        cfg = _with_path(cfg, dotted, str(Path(client_dir) / rel))
    return cfg


def _with_path(cfg: CohortConfig, dotted: str, value: str) -> CohortConfig:
    section, key = dotted.split(".")
    part = getattr(cfg, section).model_copy(update={key: value})
    return cfg.model_copy(update={section: part})


def run_on_cluster(cfg: CohortConfig, dry: bool, overwrite: bool) -> int:
    """Inside a submitted job (Ray already joined): paths visible on every node, then either the dry-run
    report (exit code 2 when it found errors) or the resource check and the job itself."""
    from neuro_caduceus.cohort.job import run_embed_cohort

    check_paths_on_nodes(cfg)
    if dry:
        report = dry_run(cfg)
        print(format_report(report), flush=True)
        return 2 if report["errors"] else 0
    check_resources(cfg)
    run_embed_cohort(cfg, overwrite=overwrite)
    return 0
