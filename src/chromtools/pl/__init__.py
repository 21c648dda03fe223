"""Plotting: figures of tracks, temporal modules and mapped embeddings."""

from ._mapping import confusion_matrix, mapping_umap
from ._tracks import tracks
from ._vrnn import vrnn_genes, vrnn_module_timing, vrnn_trajectories, vrnn_umap

__all__ = [
    "confusion_matrix",
    "mapping_umap",
    "tracks",
    "vrnn_genes",
    "vrnn_module_timing",
    "vrnn_trajectories",
    "vrnn_umap",
]
