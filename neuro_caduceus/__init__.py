"""neuro-caduceus: cohort-scale gene-level Caduceus embeddings."""

__version__ = "0.1.0"
