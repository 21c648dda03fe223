"""Plotting: figures of tracks, temporal modules and mapped embeddings."""

from ._mapping import confusion_matrix, mapping_umap
from ._tracks import tracks

__all__ = ["confusion_matrix", "mapping_umap", "tracks"]
