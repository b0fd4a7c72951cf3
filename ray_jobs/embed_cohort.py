"""`ray job submit` entrypoint of the cohort embedding job (thin: parse --config, call the library).

  ray job submit --address http://HEAD:8265 --working-dir . -- \
      python ray_jobs/embed_cohort.py --config configs/ukb_wes.yaml
Re-submitting the same config after a crash or preemption finishes only the genes not yet written.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--config", required=True, help="cohort job YAML")
    parser.add_argument("--overwrite", action="store_true", help="replace other output")
    args = parser.parse_args(argv)

    import ray

    from neuro_caduceus.cohort.job import run_embed_cohort

    ray.init(log_to_driver=False)  # under `ray job submit`, RAY_ADDRESS points at the cluster
    try:
        run_embed_cohort(args.config, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # what was committed and how to resume is already printed
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
