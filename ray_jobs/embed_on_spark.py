"""The cohort job on Ray on Spark, inside the Spark session Hail uses (the UK Biobank RAP route).

  python ray_jobs/embed_on_spark.py [--max-worker-nodes N] --config CONFIG [--dry-run | --overwrite]
Hail is initialized on the session's Spark (the cluster's, or local[--local-cores] for a laptop or a test);
Ray's head starts on the Spark driver and its worker nodes as Spark tasks (ray.util.spark.setup_ray_cluster);
then `neuro-caduceus embed-cohort` runs on that Ray with the remaining options (its checks, then the job);
Ray on Spark stops at the end, whatever happened. Spark's Python workers and the Ray nodes use this Python
(its folder is put first on PATH, PYSPARK_PYTHON set to it).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt,
                                     epilog="other options: those of `neuro-caduceus embed-cohort`")
    parser.add_argument("--max-worker-nodes", type=int, default=1, help="Ray worker nodes (Spark tasks)")
    parser.add_argument("--head-cpus", type=int, default=1, help="CPUs of the Ray head (Spark driver)")
    parser.add_argument("--local-cores", type=int, default=None,
                        help="start a local Spark with this many cores instead of the cluster's")
    args, command = parser.parse_known_args(argv)

    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from ray.util.spark import setup_ray_cluster, shutdown_ray_cluster

    from neuro_caduceus.cli import app
    from neuro_caduceus.ray_session import ray_session

    _start_hail(args.local_cores)
    address, _ = setup_ray_cluster(max_worker_nodes=args.max_worker_nodes, num_cpus_head_node=args.head_cpus)
    try:
        with ray_session(address):
            app(["embed-cohort", *command], prog_name="neuro-caduceus")
    except SystemExit as done:  # the command line always ends with its exit code
        return int(done.code or 0)
    finally:
        shutdown_ray_cluster()
    return 0


def _start_hail(local_cores: int | None) -> None:
    """Hail on the session's Spark: a local one when asked, else the cluster's (the RAP's Spark defaults)."""
    if local_cores:
        from neuro_caduceus.variants.hail_session import init_hail

        init_hail(cores=local_cores)
        return
    import hail as hl
    from pyspark import SparkContext

    hl.init(sc=SparkContext.getOrCreate(), quiet=True, idempotent=True)


if __name__ == "__main__":
    sys.exit(main())
