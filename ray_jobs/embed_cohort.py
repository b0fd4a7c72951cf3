"""`ray job submit` entrypoint of the cohort embedding job (thin: parse the flags, check, call the library).

  scripts/submit.sh configs/my_cohort.yaml [--dry-run | --overwrite]     (see docs/cluster.md)
which runs, from the repository root:
  ray job submit --working-dir . -- python ray_jobs/embed_cohort.py --config CONFIG --client-dir "$PWD"
Before any work: relative paths that are not in the upload (and output.dir) are taken from --client-dir,
never from Ray's temporary package folder; every local path must be usable on every alive node; the compute
settings must fit the cluster. Re-submitting after a crash or preemption finishes only the missing genes.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--config", required=True, help="cohort job YAML")
    parser.add_argument("--overwrite", action="store_true", help="replace other output")
    parser.add_argument("--dry-run", action="store_true", help="check and report; run nothing")
    parser.add_argument("--client-dir", default=None,
                        help="the submitting machine's folder: base of relative paths not in the upload")
    args = parser.parse_args(argv)

    try:
        import ray

        from neuro_caduceus.cohort import preflight
        from neuro_caduceus.cohort.config import load_config
    except ImportError as err:
        print(f"error: {sys.executable} cannot import the project ({err}); start the Ray head from the "
              "project's environment (source .venv/bin/activate) or install the package in the node image",
              file=sys.stderr)
        return 2

    ray.init(log_to_driver=False)  # under `ray job submit`, RAY_ADDRESS points at the cluster
    package = preflight.ray_package_dir()
    try:
        cfg = preflight.relocate_for_cluster(load_config(args.config), package, args.client_dir)
        return preflight.run_on_cluster(cfg, args.dry_run, args.overwrite)
    except FileNotFoundError as err:
        where = " (not in the uploaded working directory?)" if package and args.config in str(err) else ""
        print(f"error: {err}{where}", file=sys.stderr)
        return 2
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # what was committed and how to resume is already printed
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
