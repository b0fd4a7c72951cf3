"""Reference genome, annotation and personal sequences: gene regions, windows, VCF calls -> haplotypes.

Exposes no names of its own (and never imports torch, Ray or Hail): import its modules directly.
"""
