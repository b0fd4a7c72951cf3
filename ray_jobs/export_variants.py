"""Hail job: export per-gene unique haplotypes from a MatrixTable as Parquet (same rows as the datasource).

Run it where Hail runs (a Spark cluster's driver after `hl.init(...)`, or locally):
  python ray_jobs/export_variants.py --mt cohort.mt --gtf genes.gtf.gz --gene-set geneset.yaml \
      --strategy diploid --qc qc.yaml --out variants_export/
The cohort job then reads the folder with neuro_caduceus.variants.export.read_haplotypes_parquet.
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--mt", required=True, help="MatrixTable (import-vcf output)")
    parser.add_argument("--gtf", required=True, help="GENCODE GTF")
    parser.add_argument("--gene-set", required=True, help="gene set YAML (name + genes)")
    parser.add_argument("--mode", default="gene_body", choices=["gene_body", "exons", "cds"])
    parser.add_argument("--flank", type=int, default=0)
    parser.add_argument("--strategy", default="diploid", choices=["reference", "consensus", "diploid"])
    parser.add_argument("--qc", default=None, help="QC YAML (keys of neuro_caduceus.variants.qc.QCConfig)")
    parser.add_argument("--genes-per-query", type=int, default=50)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    import yaml

    from neuro_caduceus.genome.annotation import read_genes
    from neuro_caduceus.genome.genesets import load_gene_set, resolve_gene_set
    from neuro_caduceus.genome.regions import RegionSpec, build_regions
    from neuro_caduceus.variants.export import export_haplotypes
    from neuro_caduceus.variants.qc import QCConfig

    genes = resolve_gene_set(load_gene_set(args.gene_set), read_genes(args.gtf))
    regions = build_regions(genes, RegionSpec(mode=args.mode, flank=args.flank, orient="reference"))
    qc = QCConfig.model_validate(yaml.safe_load(open(args.qc)) or {}) if args.qc else QCConfig()
    summary = export_haplotypes(args.mt, regions, args.strategy, args.out, qc,
                                genes_per_query=args.genes_per_query, overwrite=args.overwrite)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
