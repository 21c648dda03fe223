"""Tools: denoising, temporal clustering and reference mapping on AnnData/MuData."""

from ._denoise import DenoiseResult, denoise, denoise_groups
from ._label_transfer import transfer_labels
from ._macs3 import macs3_peaks
from ._mapping import map_query, train_reference
from ._peaks import PeakStream, call_peaks
from ._vrnn import vrnn_cluster, vrnn_export, vrnn_stability

__all__ = [
    "DenoiseResult",
    "PeakStream",
    "call_peaks",
    "denoise",
    "denoise_groups",
    "macs3_peaks",
    "map_query",
    "train_reference",
    "transfer_labels",
    "vrnn_cluster",
    "vrnn_export",
    "vrnn_stability",
]
