"""Ray job: leave-one-gene-out ΔAUC (models x folds as Ray tasks on the cluster).

  ray job submit --working-dir . -- python ray_jobs/logo.py --features matrix/ --phenotype pheno.tsv \
      --covariates covariates.tsv --out logo_out/ [--phenotype-column mdd --folds 5 --repeats 5 --k 32 \
      --n-perm 100 --categorical-covariates batch,centre --kinship ukb_rel.dat --seed 0]
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--features", required=True)
    parser.add_argument("--phenotype", default=None)
    parser.add_argument("--covariates", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--phenotype-column", default="mdd")
    parser.add_argument("--covariate-columns", default=None, help="comma-separated")
    parser.add_argument("--categorical-covariates", default=None, help="comma-separated, one-hot coded")
    parser.add_argument("--kinship", default=None, help="UKB relatedness file (ID1 ID2 HetHet IBS0 Kinship)")
    parser.add_argument("--kinship-threshold", type=float, default=0.0442)
    parser.add_argument("--unrelated", action="store_true", help="keep a maximal unrelated set")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--n-perm", type=int, default=100)
    parser.add_argument("--permute", choices=["phenotype", "block"], default="phenotype")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import ray

    from neuro_caduceus.analysis.logo import LogoConfig, logo_from_files

    ray.init()  # joins the cluster the job was submitted to (RAY_ADDRESS), else starts a local one
    cols = args.covariate_columns.split(",") if args.covariate_columns else None
    config = LogoConfig(n_folds=args.folds, inner_folds=args.inner_folds, n_repeats=args.repeats, k=args.k,
                        n_perm=args.n_perm, permute=args.permute, seed=args.seed)
    cats = args.categorical_covariates.split(",") if args.categorical_covariates else None
    r = logo_from_files(args.features, args.phenotype, args.covariates, args.out, args.phenotype_column, cols,
                        config, cats, args.kinship, args.kinship_threshold, args.unrelated)
    print(json.dumps({"n": r.n, "auc_all": r.auc_all, "genes": r.table.to_dicts()}, default=str))


if __name__ == "__main__":
    main()
