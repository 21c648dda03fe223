"""Preprocessing: from counts and fragments to the inputs of chromtools tools."""

from ._align import align_features, feature_map
from ._gene_activity import gene_activity, gene_table, gene_windows
from ._lsi import lsi, tfidf_matrix
from ._pairs import TrainingPair, training_pair
from ._peak_matrix import peak_matrix, peak_overlaps, peak_table
from ._timecourse import timecourse_summary

__all__ = [
    "TrainingPair",
    "align_features",
    "feature_map",
    "gene_activity",
    "gene_table",
    "gene_windows",
    "lsi",
    "peak_matrix",
    "peak_overlaps",
    "peak_table",
    "tfidf_matrix",
    "timecourse_summary",
    "training_pair",
]
