"""Plotting: figures of tracks, temporal modules and mapped embeddings."""

from ._tracks import tracks

__all__ = ["tracks"]
