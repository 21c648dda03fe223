"""Preprocessing: from counts and fragments to the inputs of chromtools tools."""

from ._align import align_features, feature_map
from ._gene_activity import gene_activity, gene_table, gene_windows
from ._lsi import lsi, tfidf_matrix
from ._peak_matrix import peak_matrix, peak_overlaps, peak_table
from ._timecourse import (
    GeneTimeStats,
    TimePoints,
    gene_time_stats,
    select_genes,
    summary_anndata,
    time_column,
    time_points,
    timecourse_matrix,
    timecourse_summary,
)

__all__ = [
    "GeneTimeStats",
    "TimePoints",
    "align_features",
    "feature_map",
    "gene_activity",
    "gene_time_stats",
    "gene_table",
    "gene_windows",
    "lsi",
    "peak_matrix",
    "peak_overlaps",
    "peak_table",
    "select_genes",
    "summary_anndata",
    "tfidf_matrix",
    "time_column",
    "time_points",
    "timecourse_matrix",
    "timecourse_summary",
]
