"""Tools: denoising, temporal clustering and reference mapping on AnnData/MuData."""

from ._label_transfer import transfer_labels
from ._mapping import map_query, train_reference

__all__ = ["map_query", "train_reference", "transfer_labels"]
