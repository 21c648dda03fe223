"""Plotting: figures of tracks, temporal modules and mapped embeddings."""

from ._tracks import tracks
from ._vrnn import vrnn_genes, vrnn_trajectories, vrnn_umap

__all__ = ["tracks", "vrnn_genes", "vrnn_trajectories", "vrnn_umap"]
