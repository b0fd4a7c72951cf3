"""Ray job: gene-brain CCA with a permutation test (permutation chunks as Ray tasks on the cluster).

  ray job submit --working-dir . -- python ray_jobs/cca.py --genetic residuals/ --brain brain.parquet \
      --out cca_out/ [--n-perm 1000 --folds 5 --reduce-dims 20 --seed 0 --covariates cov.tsv \
      --categorical-covariates batch,centre --kinship ukb_rel.dat]
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--genetic", required=True)
    parser.add_argument("--brain", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--covariates", default=None)
    parser.add_argument("--covariate-columns", default=None, help="comma-separated")
    parser.add_argument("--categorical-covariates", default=None, help="comma-separated, one-hot coded")
    parser.add_argument("--kinship", default=None, help="UKB relatedness file (ID1 ID2 HetHet IBS0 Kinship)")
    parser.add_argument("--kinship-threshold", type=float, default=0.0442)
    parser.add_argument("--unrelated", action="store_true", help="keep a maximal unrelated set")
    parser.add_argument("--gene-matrix", default=None, help="subject matrix with gene blocks")
    parser.add_argument("--n-perm", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--reduce-dims", type=int, default=20)
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import ray

    from neuro_caduceus.analysis.cca import CCAConfig, cca_from_files

    ray.init()  # joins the cluster the job was submitted to (RAY_ADDRESS), else starts a local one
    cols = args.covariate_columns.split(",") if args.covariate_columns else None
    cats = tuple(args.categorical_covariates.split(",")) if args.categorical_covariates else ()
    config = CCAConfig(n_folds=args.folds, reduce_dims=args.reduce_dims, n_components=args.components,
                       n_perm=args.n_perm, seed=args.seed, categorical=cats)
    r = cca_from_files(args.genetic, args.brain, args.out, config, args.covariates, cols, args.gene_matrix,
                       args.kinship, args.kinship_threshold, args.unrelated)
    print(json.dumps({"n": r.n, "components": r.table.to_dicts()}, default=str))


if __name__ == "__main__":
    main()
