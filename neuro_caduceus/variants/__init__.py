"""Hail genotypes: VCF import into a MatrixTable, QC, per-gene extraction and the Parquet export.

Exposes no names of its own (Hail starts only when a function needs it): import its modules directly.
"""
