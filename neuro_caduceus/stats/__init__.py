"""Cohort statistics on Ray: the subject matrix from shards, distributed PCA, covariate residualization.

Exposes no names of its own: import its modules (`stats.subject_matrix`, `stats.pca`, `stats.jobs`, ...).
"""
