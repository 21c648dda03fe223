"""Tools: denoising, temporal clustering and reference mapping on AnnData/MuData."""

from ._vrnn import vrnn_cluster, vrnn_export, vrnn_stability

__all__ = ["vrnn_cluster", "vrnn_export", "vrnn_stability"]
