"""Models built on scvi-tools base classes."""

from typing import TYPE_CHECKING

from chromtools._lazy import attach

if TYPE_CHECKING:  # names load on first access, so torch and scvi-tools import only when used
    from ._arches import freeze_for_surgery, frozen_weight_drift, reference_state_dict, surgery_ready_kwargs
    from ._backed import Scratch, is_lazy_matrix, rows_as_csr_dataset
    from ._input_checks import check_count_matrix
    from ._peak_reference_model import PeakReferenceModel
    from ._peak_scanvi import PeakSCANVI
    from ._peak_training import ModuleModeCallback, default_max_epochs, trained_epochs
    from ._peak_trvae import PeakTRVAE
    from ._peak_vae import PeakVAEModule
    from ._saved_models import check_saved_reference, set_model_format
    from ._track_data import input_transform
    from ._track_denoiser import TrackDenoiser
    from ._track_peaks import PeakStream, drop_blacklisted, score_peaks
    from ._vrnn import VRNN
    from ._vrnn_module import VRNNModule

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "_arches": ["freeze_for_surgery", "frozen_weight_drift", "reference_state_dict", "surgery_ready_kwargs"],
        "_backed": ["Scratch", "is_lazy_matrix", "rows_as_csr_dataset"],
        "_input_checks": ["check_count_matrix"],
        "_peak_reference_model": ["PeakReferenceModel"],
        "_peak_scanvi": ["PeakSCANVI"],
        "_peak_training": ["ModuleModeCallback", "default_max_epochs", "trained_epochs"],
        "_peak_trvae": ["PeakTRVAE"],
        "_peak_vae": ["PeakVAEModule"],
        "_saved_models": ["check_saved_reference", "set_model_format"],
        "_track_data": ["input_transform"],
        "_track_denoiser": ["TrackDenoiser"],
        "_track_peaks": ["PeakStream", "drop_blacklisted", "score_peaks"],
        "_vrnn": ["VRNN"],
        "_vrnn_module": ["VRNNModule"],
    },
)
