"""Analyses of embedding features: LOGO gene-block prediction, CCA, relatedness, variant scores, the pilot.

Exposes no names of its own: import the module of the analysis (`analysis.logo`, `analysis.cca`, ...).
"""
