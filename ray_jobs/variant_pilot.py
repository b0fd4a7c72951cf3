"""Ray job: the variant-vs-reference pilot on a cohort config (model work in the cohort job's actor pool).

  ray job submit --working-dir . -- python ray_jobs/variant_pilot.py --config configs/ukb_wes.yaml \
      --out pilot_out/ [--variants candidates.vcf.gz --local-flank 768 --no-strand-check]
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--config", required=True, help="cohort job config YAML")
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default=None, help="VCF of candidate variants")
    parser.add_argument("--local-flank", type=int, default=768)
    parser.add_argument("--no-strand-check", action="store_true")
    args = parser.parse_args(argv)

    import ray

    from neuro_caduceus.analysis.pilot import pilot_summary_line, run_pilot
    from neuro_caduceus.cohort.config import load_config

    ray.init()  # joins the cluster the job was submitted to (RAY_ADDRESS), else starts a local one
    result = run_pilot(load_config(args.config), args.out, args.variants, args.local_flank,
                       not args.no_strand_check)
    print(pilot_summary_line(result), flush=True)


if __name__ == "__main__":
    main()
