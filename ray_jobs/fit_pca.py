"""`ray job submit` entrypoint: exact distributed PCA of a feature folder (thin: parse, call the library).

  ray job submit --address http://HEAD:8265 --working-dir . -- \
      python ray_jobs/fit_pca.py --input out/matrix --n-components 512 --out out/pca [--whiten]
Writes OUT/pca_model.npz, OUT/scores/ (subject_id, features), OUT/pca_scree.png, OUT/pca_summary.json.
"""

from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--input", required=True, help="folder of subject_id + features Parquet")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-components", type=int, default=512)
    parser.add_argument("--whiten", action="store_true")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per worker batch")
    parser.add_argument("--no-statistics", action="store_true",
                        help="leave the d x d statistics out of pca_model.npz (no later partial_fit)")
    args = parser.parse_args(argv)

    import ray

    from neuro_caduceus.stats.jobs import run_pca

    ray.init(address="auto" if os.environ.get("RAY_ADDRESS") else None)
    summary = run_pca(args.input, args.out, args.n_components, args.whiten, args.batch_size,
                      keep_statistics=not args.no_statistics)
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
