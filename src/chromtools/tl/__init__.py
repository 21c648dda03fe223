"""Tools: denoising, temporal clustering and reference mapping on AnnData/MuData."""

from typing import TYPE_CHECKING

from chromtools._lazy import attach

if TYPE_CHECKING:  # names load on first access, so torch and scvi-tools import only when used
    from ._denoise import DenoiseResult, denoise, denoise_groups
    from ._label_transfer import transfer_labels
    from ._macs3 import macs3_peaks
    from ._map_query import map_query
    from ._pairs import TrainingPair, training_pair
    from ._peaks import PeakStream, call_peaks
    from ._reference_models import load_model
    from ._train_reference import train_reference
    from ._vrnn_cluster import vrnn_cluster
    from ._vrnn_export import vrnn_export
    from ._vrnn_stability import vrnn_stability

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "_denoise": ["DenoiseResult", "denoise", "denoise_groups"],
        "_label_transfer": ["transfer_labels"],
        "_macs3": ["macs3_peaks"],
        "_map_query": ["map_query"],
        "_pairs": ["TrainingPair", "training_pair"],
        "_peaks": ["PeakStream", "call_peaks"],
        "_reference_models": ["load_model"],
        "_train_reference": ["train_reference"],
        "_vrnn_cluster": ["vrnn_cluster"],
        "_vrnn_export": ["vrnn_export"],
        "_vrnn_stability": ["vrnn_stability"],
    },
)
