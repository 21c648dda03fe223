"""Preprocessing: from counts and fragments to the inputs of chromtools tools."""

from ._gene_activity import gene_activity, gene_table, gene_windows
from ._lsi import lsi, tfidf_matrix
from ._pairs import TrainingPair, training_pair
from ._timecourse import timecourse_summary

__all__ = [
    "TrainingPair",
    "gene_activity",
    "gene_table",
    "gene_windows",
    "lsi",
    "tfidf_matrix",
    "timecourse_summary",
    "training_pair",
]
