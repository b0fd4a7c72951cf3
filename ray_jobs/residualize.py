"""`ray job submit` entrypoint: OLS residualization of a feature folder on covariates (thin wrapper).

  ray job submit --address http://HEAD:8265 --working-dir . -- \
      python ray_jobs/residualize.py --input out/pca --covariates covariates.tsv --out out/resid \
      [--config mapping.yaml]
Writes OUT/residuals/ (subject_id, features), residualize_model.npz, coefficients.csv, r2.csv, a PNG and
residualize_summary.json.
"""

from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--input", required=True, help="subject_id + features Parquet folder")
    parser.add_argument("--covariates", required=True, help="CSV / TSV / Parquet")
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default=None, help="covariate mapping YAML (CovariateSpec fields)")
    parser.add_argument("--categorical-covariates", default=None,
                        help="comma-separated columns to one-hot code (replaces the mapping's `categorical`)")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per worker batch")
    args = parser.parse_args(argv)

    import ray

    from neuro_caduceus.stats.jobs import run_residualize
    from neuro_caduceus.stats.residualize import CovariateSpec

    spec = CovariateSpec.from_yaml(args.config) if args.config else CovariateSpec()
    if args.categorical_covariates:
        spec = spec.declare_categorical(args.categorical_covariates.split(","))
    ray.init(address="auto" if os.environ.get("RAY_ADDRESS") else None)
    summary = run_residualize(args.input, args.covariates, args.out, spec, args.batch_size)
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
