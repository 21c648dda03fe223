"""Models built on scvi-tools base classes."""

from ._arches import freeze_for_surgery, frozen_weight_drift, reference_state_dict, surgery_ready_kwargs
from ._reference import PeakVAEModule, check_saved_reference
from ._ssvae import PeakSCANVI
from ._track_denoiser import TrackDenoiser
from ._trvae import PeakTRVAE
from ._vrnn import VRNN
from ._vrnn_module import VRNNModule

__all__ = [
    "PeakSCANVI",
    "PeakTRVAE",
    "PeakVAEModule",
    "TrackDenoiser",
    "VRNN",
    "VRNNModule",
    "check_saved_reference",
    "freeze_for_surgery",
    "frozen_weight_drift",
    "reference_state_dict",
    "surgery_ready_kwargs",
]
