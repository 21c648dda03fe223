"""Models built on scvi-tools base classes."""

from ._arches import freeze_for_surgery, frozen_weight_drift, reference_state_dict, surgery_ready_kwargs
from ._reference import PeakVAEModule, check_saved_reference
from ._ssvae import PeakSCANVI
from ._trvae import PeakTRVAE

__all__ = [
    "PeakSCANVI",
    "PeakTRVAE",
    "PeakVAEModule",
    "check_saved_reference",
    "freeze_for_surgery",
    "frozen_weight_drift",
    "reference_state_dict",
    "surgery_ready_kwargs",
]
