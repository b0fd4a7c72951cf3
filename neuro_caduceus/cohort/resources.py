"""Whether the compute settings fit the cluster: GPU share and device, CPU actors against the CPU stages.

Why: CPU actors that take every CPU leave the planning and writing tasks none, and the job would wait
forever without a word; a job meant to run for hours must fail in seconds, naming the key and the numbers.
"""

from __future__ import annotations

from neuro_caduceus.cohort.cluster import ClusterShape, PreflightError, cluster_shape
from neuro_caduceus.cohort.config import CohortConfig

HALF_DTYPES = ("bfloat16", "float16")


def resource_problems(cfg: CohortConfig, shape: ClusterShape, alive_gpus: float) -> list[str]:
    """Compute settings the cluster cannot run, each with its arithmetic."""
    c, m = cfg.compute, cfg.model
    gpus = cfg.actor_placement(alive_gpus).gpus
    where = "; ".join(shape.described) or "no nodes"
    problems = []
    if gpus > 0:
        if m.device == "cpu":
            problems.append(f"model.device is cpu but compute.gpus_per_actor = {gpus:g}: set one of them")
        if shape.largest("GPU") < gpus:
            problems.append(
                f"compute.gpus_per_actor = {gpus:g} but the largest node has {shape.largest('GPU'):g} GPU(s) "
                f"({where}); lower gpus_per_actor, or add GPU nodes")
        need = c.cpus_per_task
        if shape.largest("CPU") < need:
            problems.append(f"compute.cpus_per_task = {need:g} but the largest node has "
                            f"{shape.largest('CPU'):g} CPU(s) ({where})")
    else:
        if m.device == "cuda":
            problems.append("model.device is cuda but the actors get no GPU (compute.gpus_per_actor is 0, or "
                            f"unset and the cluster has no GPU now: {where}); set compute.gpus_per_actor: 1")
        if m.dtype in HALF_DTYPES:
            problems.append(f"model.dtype {m.dtype} needs CUDA GPUs but the actors would run on CPU "
                            f"({where}); use float32 on CPU, or gpus_per_actor: 1 on GPUs")
        actors = c.actors_min * c.cpus_per_actor
        total, largest = shape.total("CPU"), shape.largest("CPU")
        if largest < c.cpus_per_actor:
            problems.append(f"compute.cpus_per_actor = {c.cpus_per_actor:g} but the largest node has "
                            f"{largest:g} CPU(s) ({where})")
        if actors + c.cpus_per_task > total:
            problems.append(
                f"CPU actors leave the planning/writing stages no CPU: actors_min {c.actors_min} x "
                f"cpus_per_actor {c.cpus_per_actor:g} = {actors:g} CPU + cpus_per_task {c.cpus_per_task:g} = "
                f"{actors + c.cpus_per_task:g} > {total:g} CPU in the cluster ({where}); lower "
                "compute.actors_min, cpus_per_actor or cpus_per_task")
    return problems


def check_resources(cfg: CohortConfig) -> None:
    import ray

    problems = resource_problems(cfg, cluster_shape(), ray.cluster_resources().get("GPU", 0.0))
    if problems:
        raise PreflightError("compute settings cannot run on this cluster:\n  " + "\n  ".join(problems))
