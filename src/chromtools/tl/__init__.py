"""Tools: denoising, temporal clustering and reference mapping on AnnData/MuData."""

from ._denoise import DenoiseResult, denoise, denoise_groups
from ._macs3 import macs3_peaks
from ._peaks import PeakStream, call_peaks
from ._vrnn import vrnn_cluster, vrnn_export, vrnn_stability

__all__ = [
    "DenoiseResult",
    "PeakStream",
    "call_peaks",
    "denoise",
    "denoise_groups",
    "macs3_peaks",
    "vrnn_cluster",
    "vrnn_export",
    "vrnn_stability",
]
